"""The one network skeleton and the builders that fill it with stage data.

A network is a stem, a list of stages (depth, width, stride), and a head. The residual
unit class and the branch shape are arguments, as in torchvision's resnet.py; every named
network in the papers is a choice of those data, made by `build_model`.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Callable

import torch
from torch import nn

from .blocks import BLOCK_SHAPES, UNIT_LAYOUTS, ResidualUnit
from .init import init_weights
from .spec import ModelSpec


@dataclass(frozen=True)
class Stage:
    depth: int  # residual units
    width: int  # channels inside the unit; the unit outputs width * expansion
    stride: int
    entry: str = "both"  # how the stage's first pre-activation unit activates (blocks.PREACT_ENTRIES)


# Stem channels and stage widths before widening (He 2015 Sec. 4.2 and Table 1).
WIDTHS = {"cifar": (16, (16, 32, 64)), "imagenet": (64, (64, 128, 256, 512))}


def cifar_stem(out_channels: int, activate: bool) -> nn.Sequential:
    """3x3 conv with 16 channels (He 2015 Sec. 4.2). A pre-activation network leaves BN-ReLU to
    its first unit."""
    layers: list[nn.Module] = [nn.Conv2d(3, out_channels, 3, padding=1, bias=False)]
    if activate:
        layers += [nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True)]
    return nn.Sequential(*layers)


def imagenet_stem(out_channels: int) -> nn.Sequential:
    """7x7 stride-2 conv, BN, ReLU, 3x3 stride-2 max-pool (He 2015 Table 1)."""
    return nn.Sequential(nn.Conv2d(3, out_channels, 7, stride=2, padding=3, bias=False),
                         nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True), nn.MaxPool2d(3, stride=2, padding=1))


class ResNet(nn.Module):
    """Stem, residual stages, optional final BN-ReLU (pre-activation nets), global pool, linear."""

    def __init__(self, stem: nn.Module, stem_channels: int, stages: list[Stage], make_unit: Callable[..., nn.Module],
                 num_classes: int, final_bn_relu: bool):
        super().__init__()
        self.stem = stem
        channels = stem_channels
        self.stages = nn.ModuleList()
        for stage in stages:
            units = []
            for i in range(stage.depth):
                first = i == 0
                unit = make_unit(channels, stage.width, stage.stride if first else 1,
                                 entry=stage.entry if first else "branch")
                channels = unit.out_channels
                units.append(unit)
            self.stages.append(nn.Sequential(*units))
        head: list[nn.Module] = [nn.BatchNorm2d(channels), nn.ReLU(inplace=True)] if final_bn_relu else []
        self.final_act = nn.Sequential(*head)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(channels, num_classes)
        self.out_channels = channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for stage in self.stages:
            x = stage(x)
        x = self.pool(self.final_act(x))
        return self.fc(torch.flatten(x, 1))


def build_model(spec: ModelSpec, num_classes: int = 10) -> ResNet:
    """Any network of the model space: the spec's rules checked, its stages laid out as data."""
    units = spec.check(num_classes)
    block = BLOCK_SHAPES[spec.block]
    stem_channels, base_widths = WIDTHS[spec.stem]
    strides = (1,) + (2,) * (len(units) - 1)
    # Every stage's first pre-activation unit activates before the split, but on ImageNet the
    # stem ends in BN-ReLU and max-pool, so stage 1's first unit does not (fb.resnet.torch
    # preresnet.lua@985e569:114-125,150: 'first' -> 'no_preact').
    entries = [spec.stage_entry or ("none" if spec.stem == "imagenet" and i == 0 else "both")
               for i in range(len(units))]
    stages = [Stage(d, w * spec.widen_factor, s, e)
              for d, w, s, e in zip(units, base_widths[:len(units)], strides, entries, strict=True)]
    make_unit = partial(ResidualUnit, block, unit=spec.resolved_unit, relu_after_add=spec.relu_after_add,
                        shortcut=spec.shortcut, dropout=spec.dropout, stride_on=spec.bottleneck_stride,
                        projection_bn=spec.projection_bn)
    preact = UNIT_LAYOUTS[spec.resolved_unit].preact
    stem = imagenet_stem(stem_channels) if spec.stem == "imagenet" else cifar_stem(stem_channels, not preact)
    model = ResNet(stem, stem_channels, stages, make_unit, num_classes, final_bn_relu=preact)
    init_weights(model, spec.init, spec.zero_init_residual)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.momentum = spec.bn_momentum  # None: PyTorch's cumulative average since num_batches_tracked was 0
    return model


def restart_bn_averages(model: nn.Module) -> None:
    """With model.bn_momentum=null, starts each BN's running statistics afresh from the next batch.
    gcr's momentum 1 / (1 + n) and its count zeroed after each epoch's evaluation average that
    epoch's batches (gcr/torch-residual-networks@5549988:train-cifar.lua:173-183,222-228; commented
    out in the repository, switched on for the BN momentum runs)."""
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d) and m.momentum is None:
            m.num_batches_tracked.zero_()
