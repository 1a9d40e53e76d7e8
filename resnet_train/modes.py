"""The two modes besides training: `mode=info` (describe) and `mode=eval` (evaluate_checkpoint)."""

from __future__ import annotations

import json
from typing import Any

from . import checkpoint as ckpt_io
from .checkpoint import CheckpointError
from .config import Config, ModelConfig
from .data import build_datasets, make_loader, wants_top5
from .distributed import resolve_device
from .engine import evaluate
from .models import build_model
from .models.summary import model_summary


def describe(cfg: Config) -> dict[str, Any]:
    """`mode=info`: prints the model's figures; the last line is one JSON object."""
    m = cfg.model
    info = model_summary(build_model(m, cfg.data.num_classes), cfg.data.image_size)
    unit = m.resolved_unit
    info = {"family": m.family, "depth": m.depth, "block": m.block, "unit": unit, "shortcut": m.shortcut,
            "widen_factor": m.widen_factor, **info}
    print(f"model       {m.label} ({m.block} blocks, {unit} unit, shortcut {m.shortcut}, "
          f"widen x{m.widen_factor}, dropout {m.dropout})")
    print(f"params      {info['params']:,} ({info['params'] / 1e6:.2f}M)")
    print(f"MACs/image  {info['macs']:,} ({info['macs'] / 1e6:.1f}M at {cfg.data.image_size} px)")
    for i, shape in enumerate(info["stage_shapes"], 1):
        print(f"stage {i}     output {' x '.join(map(str, shape))}")
    print(json.dumps(info))
    return info


def evaluate_checkpoint(cfg: Config) -> dict[str, float]:
    """`mode=eval`: the model comes from the checkpoint's own config; the data from cfg."""
    device = resolve_device(cfg.device)
    state = ckpt_io.load_checkpoint(cfg.ckpt)
    model = build_model(ModelConfig(**state["config"]["model"]), cfg.data.num_classes)
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as exc:
        raise CheckpointError(f"{cfg.ckpt} does not fit its model config ({str(exc).splitlines()[0]})") from exc
    model.to(device)
    data = build_datasets(cfg.data, cfg.seed)
    loader = make_loader(data.evals["test"], cfg.train.eval_batch_size, num_workers=cfg.data.num_workers,
                         pin_memory=device.type == "cuda")
    res = evaluate(model, loader, device=device, amp=cfg.train.amp and device.type == "cuda",
                   top5=wants_top5(cfg.data))
    saved_data = state["config"]["data"]["name"]
    if saved_data != cfg.data.name:
        print(f"note: the checkpoint was trained on {saved_data}; evaluating on {cfg.data.name}")
    print(f"{cfg.ckpt}: epoch {state['epoch']}, test loss {res['loss']:.4f}, test err {res['err']:.2f}%")
    print(json.dumps({"ckpt": str(cfg.ckpt), "epoch": state["epoch"], **{f"test_{k}": v for k, v in res.items()}}))
    return res
