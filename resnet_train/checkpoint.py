"""Checkpoints: atomic writes, complete training state, loading with weights_only=True.

A checkpoint holds only tensors and plain Python data (no pickled objects), so it loads with
torch.load(..., weights_only=True).
"""

from __future__ import annotations

import os
import pickle
import random
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .engine import EpochTotals

FORMAT = "resnet-train/1"


class CheckpointError(Exception):
    """A checkpoint that is missing, unreadable or does not fit the run."""


@dataclass
class TrainState:
    """The loop's progress: everything a checkpoint holds besides weights, optimizer state, RNG
    states and the config. It writes itself into a checkpoint and reads itself back."""

    epoch: int = 0  # epochs completed
    step: int = 0  # iterations completed
    partial: EpochTotals = field(default_factory=EpochTotals)  # sums of the epoch in progress
    best: dict[str, Any] = field(default_factory=lambda: {"err": None, "epoch": None})
    history: list[dict[str, Any]] = field(default_factory=list)  # one record per epoch, evaluated or not
    train_seconds: float = 0.0
    train_images: int = 0
    # [start, end] of each earlier process's leg of the run (a resumed run has several), Unix
    # seconds: the report unites them across runs into the device time a packed batch took.
    legs: list[list[float]] = field(default_factory=list)
    leg_started: float | None = field(default=None, compare=False)  # this process's leg; saved closed

    def start_leg(self) -> None:
        self.leg_started = time.time()

    def all_legs(self) -> list[list[float]]:
        """Every leg so far, this process's up to now."""
        return self.legs + ([[self.leg_started, time.time()]] if self.leg_started is not None else [])

    def to_checkpoint(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer, rngs: list[dict],
                      config: dict[str, Any]) -> dict[str, Any]:
        """`rngs`: each rank's RNG state (rng_state), so a resumed DDP run continues each rank's
        dropout stream; rank 0's also under "rng" for single-process readers."""
        return {"format": FORMAT, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "epoch": self.epoch, "step": self.step, "epoch_totals": asdict(self.partial), "best": self.best,
                "history": self.history, "rng": rngs[0], "rng_ranks": rngs, "train_seconds": self.train_seconds,
                "train_images": self.train_images, "legs": self.all_legs(), "config": config}

    @classmethod
    def from_checkpoint(cls, ckpt: dict[str, Any]) -> TrainState:
        return cls(epoch=ckpt["epoch"], step=ckpt["step"], partial=EpochTotals(**ckpt["epoch_totals"]),
                   best=ckpt["best"], history=ckpt["history"], train_seconds=ckpt["train_seconds"],
                   train_images=ckpt["train_images"], legs=ckpt.get("legs", []))

    @staticmethod
    def rng_for_rank(ckpt: dict[str, Any], rank: int, world: int) -> dict[str, Any]:
        rngs = ckpt.get("rng_ranks") or [ckpt["rng"]]
        return rngs[rank] if len(rngs) == world else ckpt["rng"]


def save_checkpoint(state: dict[str, Any], path: str | Path) -> None:
    """Writes to a temporary file in the same folder, fsyncs it, then renames it over `path`,
    so a crash or a full disk at any moment leaves the previous file intact."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        kept = f"; the previous {path.name} is intact" if path.exists() else ""
        raise CheckpointError(f"could not write {path} ({exc.strerror or exc}){kept}. Free space or choose "
                              f"another folder with hydra.run.dir=..., then resume") from exc
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    try:  # make the rename itself durable
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError:
        pass


def remove_stale_temporaries(folder: Path) -> None:
    """Deletes temporary files left by a writer that was killed (SIGKILL, power loss)."""
    for tmp in Path(folder).glob(".*.pt.*.tmp"):
        tmp.unlink(missing_ok=True)


def keep_recent(folder: Path, keep: int) -> None:
    """Keeps the `keep` newest epoch_NNNN.pt files in folder."""
    for old in sorted(Path(folder).glob("epoch_*.pt"))[:-keep or None]:
        old.unlink()


def _unreadable_because(exc: Exception) -> str:
    """Why torch.load failed, in words; torch's own text would suggest weights_only=False, which
    would run whatever code a foreign file holds."""
    text = str(exc)
    if isinstance(exc, EOFError) or "failed finding central directory" in text or "PytorchStreamReader" in text:
        return "it is truncated or corrupted (its archive cannot be read)"
    if isinstance(exc, pickle.UnpicklingError) or "Weights only load failed" in text:
        return "it is not a file written by torch.save with tensors and plain data only"
    return f"torch.load failed with {type(exc).__name__}"


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001  (any failure of a foreign or damaged file)
        raise CheckpointError(f"{path} is not a readable checkpoint: {_unreadable_because(exc)}") from exc
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a resnet-train checkpoint (no '{FORMAT}' format tag)")
    return state


def rng_state(device: torch.device | None = None) -> dict[str, Any]:
    """Plain lists and numbers only, so the state also passes through all_gather_object. Of the
    GPUs, only the training device's generator: a resume may see fewer GPUs, or another index."""
    py = random.getstate()
    np_state = np.random.get_state()
    cuda = device is not None and device.type == "cuda"
    return {
        "python": [py[0], list(py[1]), py[2]],
        "numpy": [np_state[0], np_state[1].tolist(), *np_state[2:]],
        "torch": torch.get_rng_state().tolist(),
        "cuda": [torch.cuda.get_rng_state(device).tolist()] if cuda else [],
    }


def set_rng_state(state: dict[str, Any], device: torch.device | None = None) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, *rest = state["numpy"]
    np.random.set_state((kind, np.array(keys, dtype=np.uint32), *rest))
    torch.set_rng_state(torch.tensor(state["torch"], dtype=torch.uint8))
    if state["cuda"] and device is not None and device.type == "cuda":
        # One state since this format; older checkpoints hold one per visible GPU.
        saved = state["cuda"][min(device.index or 0, len(state["cuda"]) - 1)]
        torch.cuda.set_rng_state(torch.tensor(saved, dtype=torch.uint8), device)
