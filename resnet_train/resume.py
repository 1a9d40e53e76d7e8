"""The resume policy: which checkpoint a run continues from, which config changes a resume
allows, and when a run folder already holds the finished run."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

from . import checkpoint as ckpt_io
from .checkpoint import CheckpointError
from .config import Config

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


def check_resume_config(saved: dict, current: dict) -> None:
    changed = []
    for key in RESUME_LOCKED:
        section, _, leaf = key.partition(".")
        old, new = saved.get(section), current.get(section)
        if leaf:
            old, new = (old or {}).get(leaf), (new or {}).get(leaf)
        changed += _diff(old, new, f"{key}.")
    if changed:
        raise CheckpointError("cannot resume: the config differs from the checkpoint's in " + "; ".join(changed))


def checkpoint_to_resume(resume: str | None, run_dir: Path) -> Path | None:
    """The checkpoint that `resume` names: None to start fresh."""
    if not resume:
        return None
    if resume == RESUME_AUTO:
        path = run_dir / "last.pt"
        return path if path.exists() else None
    path = Path(resume).expanduser()
    if not path.is_file():
        raise CheckpointError(f"resume={resume}: no such checkpoint (use resume=auto to start fresh when none exists)")
    return path


def finished_summary(cfg: Config, run_dir: Path) -> dict[str, Any] | None:
    """With resume=auto, a run folder that already holds this run, finished, is not run again;
    that lets a sweep be re-run to complete only what is missing."""
    summary_path = run_dir / "summary.json"
    if cfg.resume != RESUME_AUTO or not summary_path.is_file() or not (run_dir / "last.pt").is_file():
        return None
    summary = json.loads(summary_path.read_text())
    state = ckpt_io.load_checkpoint(run_dir / "last.pt")
    check_resume_config(state["config"], asdict(cfg))
    t = cfg.train
    wanted = t.epochs if t.epochs is not None else t.iterations
    reached = summary["epochs"] if t.epochs is not None else summary["steps"]
    return summary if summary.get("status") == "completed" and reached >= wanted else None


def resume_command(overrides: list[str], path: Path) -> str:
    """The command line that continues an interrupted run."""
    kept = [o for o in overrides if not o.startswith("resume=")]
    return " ".join(["resnet-train", *kept, f"resume={path}"])
