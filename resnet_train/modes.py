"""The modes besides training: `mode=info` (describe), `mode=eval` (evaluate_checkpoint) and
`mode=analyze` (analyze_checkpoint), each of the latter two over one checkpoint or every run of a
folder (checkpoints)."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from . import checkpoint as ckpt_io
from .analysis import layer_responses, write_responses
from .checkpoint import CheckpointError
from .config import Config, DataConfig, ModelConfig, override_keys
from .data import build_datasets, make_loader, wants_top5
from .distributed import configure_cuda, resolve_device
from .engine import evaluate
from .models import ModelSpec, build_model
from .models.summary import model_summary

log = logging.getLogger(__name__)


def describe(cfg: Config) -> dict[str, Any]:
    """`mode=info`: prints the model's figures; the last line is one JSON object."""
    m = cfg.model
    info = model_summary(build_model(m, cfg.data.num_classes), cfg.data.image_size)
    info = {"family": m.family, "depth": m.depth, "block": m.block, "unit": m.resolved_unit, "shortcut": m.shortcut,
            "widen_factor": m.widen_factor, **info}
    log.info(f"model       {m.label} ({m.layout_text}, widen x{m.widen_factor}, dropout {m.dropout})")
    log.info(f"params      {info['params']:,} ({info['params'] / 1e6:.2f}M)")
    log.info(f"MACs/image  {info['macs']:,} ({info['macs'] / 1e6:.1f}M at {cfg.data.image_size} px)")
    for i, shape in enumerate(info["stage_shapes"], 1):
        log.info(f"stage {i}     output {' x '.join(map(str, shape))}")
    log.info(json.dumps(info))
    return info


# How the network's inputs were normalised: part of what it learnt, so evaluating it on other data
# (data=NAME) keeps the checkpoint's unless the command line sets them.
INPUT_CONVENTION = ("normalize", "mean", "std")


def _eval_data(cfg: Config, saved: dict[str, Any], overrides: list[str]) -> DataConfig:
    """The checkpoint's own data settings, with the command line's data.* values on top; a
    data=NAME on the command line replaces them, all but the checkpoint's INPUT_CONVENTION."""
    keys = override_keys(overrides)
    if "data" in keys:
        used = INPUT_CONVENTION if saved.get("normalize") == "channel" else ("normalize",)  # else computed
        kept = {k: saved[k] for k in used
                if k in saved and f"data.{k}" not in keys and saved[k] != getattr(cfg.data, k)}
        if kept:
            log.info(f"note: data={keys['data']} evaluated with the checkpoint's input normalisation "
                     f"({', '.join(f'data.{k}={v}' for k, v in kept.items())}), which its network was trained on; "
                     f"set data.normalize (data.mean, data.std) to change it")
        return replace(cfg.data, **kept)
    data = DataConfig(**saved)
    for key in keys:
        if key.startswith("data."):
            leaf = key[len("data."):]
            setattr(data, leaf, getattr(cfg.data, leaf))
    return data


@dataclass
class Loaded:
    """A checkpoint's model, ready on the device, and the data to run it on."""

    spec: ModelSpec
    model: nn.Module
    data_cfg: DataConfig
    state: dict[str, Any]
    device: torch.device

    def test_loader(self, cfg: Config):
        data = build_datasets(self.data_cfg, cfg.seed)
        log.info(f"data        {self.data_cfg.name} test split, {len(data.evals['test'])} images")
        return make_loader(data.evals["test"], cfg.train.eval_batch_size, num_workers=self.data_cfg.num_workers,
                           pin_memory=self.device.type == "cuda")


def load_for_testing(cfg: Config, overrides: list[str]) -> Loaded:
    """The model comes from the checkpoint's config, and so does the data unless the command
    line overrides it (`overrides`: the command line's, as Hydra passes them)."""
    device = resolve_device(cfg.device)
    if device.type == "cuda":
        configure_cuda()
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
    log.info(f"model       {spec.label} ({spec.layout_text}), from {cfg.ckpt}, epoch {state['epoch']}")
    saved_data = state["config"]["data"]["name"]
    if saved_data != data_cfg.name:
        log.info(f"note: the checkpoint was trained on {saved_data}; evaluating on {data_cfg.name}")
    return Loaded(spec, model.to(device), data_cfg, state, device)


def checkpoints(ckpt: str) -> list[Path]:
    """`ckpt=` names a checkpoint, or a folder of runs (a sweep, a seeds=K run): then every last.pt
    under it, in path order."""
    path = Path(ckpt)
    if not path.is_dir():
        return [path]
    found = sorted(path.rglob("last.pt"))
    if not found:
        raise CheckpointError(f"ckpt={path} is a folder with no last.pt under it: point ckpt= at a checkpoint, or "
                              f"at a folder that holds finished runs")
    log.info(f"{len(found)} checkpoint{'s' * (len(found) != 1)} under {path}")
    return found


def for_each_checkpoint(mode, cfg: Config, overrides: list[str]) -> list[dict[str, Any]]:
    """`mode` (evaluate_checkpoint or analyze_checkpoint) for each of `checkpoints(cfg.ckpt)`."""
    return [mode(replace(cfg, ckpt=str(path)), overrides) for path in checkpoints(cfg.ckpt)]


def evaluate_checkpoint(cfg: Config, overrides: list[str] | None = None) -> dict[str, float]:
    """`mode=eval`: a checkpoint's test error (load_for_testing says which model and data)."""
    run = load_for_testing(cfg, list(overrides or []))
    res = evaluate(run.model, run.test_loader(cfg), device=run.device, amp=cfg.train.amp and run.device.type == "cuda",
                   top5=wants_top5(run.data_cfg))
    log.info(f"test loss {res['loss']:.4f}, test err {res['err']:.2f}%")
    log.info(json.dumps({"ckpt": str(cfg.ckpt), "model": run.spec.label, "epoch": run.state["epoch"],
                         **{f"test_{k}": v for k, v in res.items()}}))
    return res


def analyze_checkpoint(cfg: Config, overrides: list[str] | None = None) -> dict[str, Any]:
    """`mode=analyze`: the layer responses of He 2015 Fig. 7 over the test set, written beside the
    checkpoint as NAME_responses.json and .png (fp32, whatever train.amp says)."""
    run = load_for_testing(cfg, list(overrides or []))
    layers = layer_responses(run.model, run.test_loader(cfg), run.device)
    ckpt = Path(cfg.ckpt)
    record = {"ckpt": ckpt.name, "model": run.spec.label, "experiment": run.state["config"].get("experiment"),
              "seed": run.state["config"].get("seed"), "epoch": run.state["epoch"], "step": run.state["step"],
              "data": run.data_cfg.name, "layers": layers}
    path = ckpt.parent / f"{ckpt.stem}_responses.json"
    try:
        png = write_responses(path, record)
    except OSError as exc:
        raise OSError(f"cannot write the analysis beside {ckpt}: {exc.strerror}; copy the checkpoint to a writable "
                      f"folder and pass that ckpt=") from None
    stds = [r["std"] for r in layers]
    log.info(f"layer responses: {len(stds)} 3x3 layers, std mean {sum(stds) / len(stds):.3f}, "
             f"max {max(stds):.3f} ({layers[stds.index(max(stds))]['layer']})")
    log.info(f"wrote {path} and {png}" if png else
             f"wrote {path}; no plot, as matplotlib is not installed (resnet-train-report plots these files)")
    return record
