"""The two modes besides training: `mode=info` (describe) and `mode=eval` (evaluate_checkpoint)."""

from __future__ import annotations

import json
import logging
from typing import Any

from . import checkpoint as ckpt_io
from .checkpoint import CheckpointError
from .config import Config, DataConfig, ModelConfig, override_keys
from .data import build_datasets, make_loader, wants_top5
from .distributed import resolve_device
from .engine import evaluate
from .models import build_model
from .models.summary import model_summary

log = logging.getLogger(__name__)


def describe(cfg: Config) -> dict[str, Any]:
    """`mode=info`: prints the model's figures; the last line is one JSON object."""
    m = cfg.model
    info = model_summary(build_model(m, cfg.data.num_classes), cfg.data.image_size)
    unit = m.resolved_unit
    info = {"family": m.family, "depth": m.depth, "block": m.block, "unit": unit, "shortcut": m.shortcut,
            "widen_factor": m.widen_factor, **info}
    log.info(f"model       {m.label} ({m.block} blocks, {unit} unit, shortcut {m.shortcut}, "
             f"widen x{m.widen_factor}, dropout {m.dropout})")
    log.info(f"params      {info['params']:,} ({info['params'] / 1e6:.2f}M)")
    log.info(f"MACs/image  {info['macs']:,} ({info['macs'] / 1e6:.1f}M at {cfg.data.image_size} px)")
    for i, shape in enumerate(info["stage_shapes"], 1):
        log.info(f"stage {i}     output {' x '.join(map(str, shape))}")
    log.info(json.dumps(info))
    return info


def _eval_data(cfg: Config, saved: dict[str, Any], overrides: list[str]) -> DataConfig:
    """The checkpoint's own data settings, with the command line's data.* values on top; a
    data=NAME on the command line replaces them all."""
    keys = override_keys(overrides)
    if "data" in keys:
        return cfg.data
    data = DataConfig(**saved)
    for key in keys:
        if key.startswith("data."):
            leaf = key[len("data."):]
            setattr(data, leaf, getattr(cfg.data, leaf))
    return data


def evaluate_checkpoint(cfg: Config, overrides: list[str] | None = None) -> dict[str, float]:
    """`mode=eval`: the model comes from the checkpoint's config, and so does the data unless
    the command line overrides it (`overrides`: the command line's, as Hydra passes them)."""
    overrides = list(overrides or [])
    device = resolve_device(cfg.device)
    state = ckpt_io.load_checkpoint(cfg.ckpt)
    spec = ModelConfig(**state["config"]["model"])
    ignored = [o for o in overrides if o.lstrip("+~").startswith(("model=", "model."))]
    if ignored:
        log.info(f"note: {' '.join(ignored)} ignored: the model is the checkpoint's own")
    data_cfg = _eval_data(cfg, state["config"]["data"], overrides)
    model = build_model(spec, data_cfg.num_classes)
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as exc:
        raise CheckpointError(f"{cfg.ckpt} does not fit its model config ({str(exc).splitlines()[0]})") from exc
    model.to(device)
    log.info(f"model       {spec.label} ({spec.block} blocks, {spec.resolved_unit} unit, shortcut {spec.shortcut}), "
             f"from {cfg.ckpt}, epoch {state['epoch']}")
    data = build_datasets(data_cfg, cfg.seed)
    loader = make_loader(data.evals["test"], cfg.train.eval_batch_size, num_workers=data_cfg.num_workers,
                         pin_memory=device.type == "cuda")
    res = evaluate(model, loader, device=device, amp=cfg.train.amp and device.type == "cuda",
                   top5=wants_top5(data_cfg))
    saved_data = state["config"]["data"]["name"]
    if saved_data != data_cfg.name:
        log.info(f"note: the checkpoint was trained on {saved_data}; evaluating on {data_cfg.name}")
    log.info(f"data        {data_cfg.name} test split, {len(data.evals['test'])} images")
    log.info(f"test loss {res['loss']:.4f}, test err {res['err']:.2f}%")
    log.info(json.dumps({"ckpt": str(cfg.ckpt), "model": spec.label, "epoch": state["epoch"],
                         **{f"test_{k}": v for k, v in res.items()}}))
    return res
