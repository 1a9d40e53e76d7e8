"""The resume policy: which checkpoint a run continues from, which config changes a resume
allows, and when a run folder already holds the finished run."""

from __future__ import annotations

import json
import logging
import shlex
from dataclasses import asdict
from pathlib import Path
from typing import Any

from . import checkpoint as ckpt_io
from .checkpoint import CheckpointError
from .config import Config

log = logging.getLogger(__name__)

RESUME_AUTO = "auto"  # resume=auto: continue from the run folder's last.pt, start fresh without one
# Keys that change what is trained or on what; a resume that changes one would silently make a
# different run. train.epochs/iterations may grow (to extend a run), the rest may not.
RESUME_LOCKED = ("model", "data", "optim", "sched", "seed", "train.batch_size")
RESUME_FREE = ("data.root", "data.download", "data.num_workers")  # where and how, not what


def _diff(old: Any, new: Any, prefix: str = "") -> list[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for key in sorted(set(old) | set(new)):
            out += _diff(old.get(key), new.get(key), f"{prefix}{key}.")
        return out
    key = prefix[:-1]
    return [] if old == new or key in RESUME_FREE else [f"{key} ({old!r} -> {new!r})"]


def _with_defaults(saved: Any, defaults: Any) -> Any:
    """A checkpoint's config with the keys added to the schema since it was written at their
    defaults: a new key defaults to what the code did before it existed (model.bn_momentum 0.1)."""
    if not isinstance(saved, dict) or not isinstance(defaults, dict):
        return saved
    return {**defaults, **{k: _with_defaults(v, defaults.get(k)) for k, v in saved.items()}}


def check_resume_config(saved: dict, current: dict) -> None:
    saved = _with_defaults(saved, asdict(Config()))
    changed = []
    for key in RESUME_LOCKED:
        section, _, leaf = key.partition(".")
        old, new = saved.get(section), current.get(section)
        if leaf:
            old, new = (old or {}).get(leaf), (new or {}).get(leaf)
        changed += _diff(old, new, f"{key}.")
    if changed:
        raise CheckpointError("cannot resume: the config differs from the checkpoint's in " + "; ".join(changed))


def _fallbacks(run_dir: Path) -> list[tuple[int, Path, dict]]:
    """The readable epoch_NNNN.pt and best.pt beside last.pt, as (iteration, path, checkpoint)."""
    found = []
    for path in [run_dir / "best.pt", *sorted(run_dir.glob("epoch_*.pt"))]:
        try:
            ckpt = ckpt_io.load_checkpoint(path)
        except CheckpointError:
            continue
        found.append((ckpt["step"], path, ckpt))
    return sorted(found, key=lambda f: f[0])  # stable: on a tie the epoch file, named by its epoch, wins


def checkpoint_to_resume(resume: str | None, run_dir: Path) -> tuple[Path, dict] | None:
    """(path, checkpoint) that `resume` names, None to start fresh. With resume=auto, a last.pt
    that cannot be read gives way to the newest readable checkpoint beside it."""
    if not resume:
        return None
    if resume != RESUME_AUTO:
        path = Path(resume).expanduser()
        if not path.is_file():
            raise CheckpointError(f"resume={resume}: no such checkpoint (use resume=auto to start fresh when none "
                                  f"exists)")
        return path, ckpt_io.load_checkpoint(path)
    last = run_dir / "last.pt"
    if not last.exists():
        return None
    try:
        return last, ckpt_io.load_checkpoint(last)
    except CheckpointError as exc:
        found = _fallbacks(run_dir)
        if not found:
            raise CheckpointError(f"{exc}, and no readable epoch_NNNN.pt or best.pt lies beside it; move it aside "
                                  f"to start this run afresh") from exc
        step, path, ckpt = found[-1]
        log.warning(f"{exc}; resuming from {path.name} instead, the newest readable checkpoint (iteration {step})")
        return path, ckpt


def finished_summary(cfg: Config, run_dir: Path) -> dict[str, Any] | None:
    """With resume=auto, a run folder that already holds this run, finished, is not run again;
    that lets a sweep be re-run to complete only what is missing."""
    summary_path = run_dir / "summary.json"
    if cfg.resume != RESUME_AUTO or not summary_path.is_file() or not (run_dir / "last.pt").is_file():
        return None
    summary = json.loads(summary_path.read_text())
    try:
        state = ckpt_io.load_checkpoint(run_dir / "last.pt")
    except CheckpointError:
        return None  # resuming decides what to do with it
    check_resume_config(state["config"], asdict(cfg))
    t = cfg.train
    wanted = t.epochs if t.epochs is not None else t.iterations
    reached = summary["epochs"] if t.epochs is not None else summary["steps"]
    return summary if summary.get("status") == "completed" and reached >= wanted else None


def resume_command(overrides: list[str], run_dir: Path) -> str:
    """The command line that continues an interrupted run in its own folder."""
    kept = [shlex.quote(o) for o in overrides if not o.startswith(("resume=", "hydra.run.dir="))]
    return " ".join(["resnet-train", *kept, shlex.quote(f"hydra.run.dir={run_dir}"), f"resume={RESUME_AUTO}"])
