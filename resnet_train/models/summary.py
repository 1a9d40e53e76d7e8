"""Model figures for `mode=info`: parameters, multiply-accumulates, stage output shapes."""

from __future__ import annotations

import torch
from torch.utils.flop_counter import FlopCounterMode

from .resnet import ResNet


def count_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@torch.no_grad()
def model_summary(model: ResNet, image_size: int) -> dict:
    """Counts one image's forward pass with PyTorch's FlopCounterMode, which counts 2 FLOPs per
    multiply-accumulate of convs and matmuls (BN, ReLU and pooling are not counted, as in the
    papers' FLOP figures)."""
    was_training = model.training
    model.eval()
    shapes: list[list[int]] = []
    hooks = [stage.register_forward_hook(lambda _m, _i, out: shapes.append(list(out.shape[1:])))
             for stage in model.stages]
    counter = FlopCounterMode(display=False)
    try:
        with counter:
            model(torch.zeros(1, 3, image_size, image_size))
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    return {
        "params": count_params(model),
        "macs": counter.get_total_flops() // 2,
        "stage_shapes": shapes,
        "num_classes": model.fc.out_features,
        "image_size": image_size,
    }
