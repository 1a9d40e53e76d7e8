"""One training epoch and one evaluation pass.

Running sums stay on the device: the loop reads them back only at a progress refresh and at
the end of the epoch, so a GPU never waits on the host inside the refresh interval.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from typing import Callable, Iterable

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm


class DivergenceError(Exception):
    """The loss became NaN or infinite."""


@dataclass
class EpochResult:
    loss: float
    err: float  # percent
    images: int
    steps: int
    seconds: float


def _autocast(device: torch.device, amp: bool):
    if amp and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _to(batch, device: torch.device):
    x, y = batch
    return x.to(device, non_blocking=True), y.to(device, non_blocking=True)


def train_epoch(model: nn.Module, batches: Iterable, optimizer: torch.optim.Optimizer, *,
                lr_fn: Callable[[int], float], start_step: int, max_steps: int, device: torch.device,
                amp: bool = False, progress: bool = False, desc: str = "train", refresh_every: int = 50
                ) -> EpochResult:
    """Trains over `batches` from iteration start_step until the batches end or max_steps is
    reached. The LR is set from lr_fn before each step."""
    model.train()
    loss_sum = torch.zeros((), device=device, dtype=torch.float64)
    wrong = torch.zeros((), device=device, dtype=torch.int64)
    images = 0
    step = start_step
    t0 = time.perf_counter()
    total = getattr(batches, "__len__", None) and min(len(batches), max_steps - start_step)
    bar = tqdm(batches, total=total, desc=desc, leave=False, disable=not progress, dynamic_ncols=True)
    for batch in bar:
        if step >= max_steps:
            break
        lr = lr_fn(step)
        for group in optimizer.param_groups:
            group["lr"] = lr
        x, y = _to(batch, device)
        with _autocast(device, amp):
            logits = model(x)
            loss = F.cross_entropy(logits, y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        n = y.shape[0]
        loss_sum += loss.detach().double() * n
        wrong += (logits.detach().argmax(1) != y).sum()
        images += n
        step += 1
        if step % refresh_every == 0:
            _check_finite(loss_sum, step, lr)
            bar.set_postfix(loss=f"{loss_sum.item() / images:.3f}", lr=f"{lr:.3g}", refresh=False)
    if images:
        _check_finite(loss_sum, step, optimizer.param_groups[0]["lr"])
    seconds = time.perf_counter() - t0
    bar.close()
    return EpochResult(loss=loss_sum.item() / max(images, 1), err=100.0 * wrong.item() / max(images, 1),
                       images=images, steps=step - start_step, seconds=seconds)


def _check_finite(loss_sum: torch.Tensor, step: int, lr: float) -> None:
    if not torch.isfinite(loss_sum):
        raise DivergenceError(
            f"the training loss became NaN or infinite by iteration {step} (learning rate {lr:g}). Likely causes: a "
            f"learning rate too high for this model and batch size, no warm-up on a deep net (try sched.warmup=400), "
            f"or bf16 overflow (try train.amp=false)")


@torch.no_grad()
def evaluate(model: nn.Module, batches: Iterable, *, device: torch.device, amp: bool = False,
             top5: bool = False) -> dict[str, float]:
    model.eval()
    loss_sum = torch.zeros((), device=device, dtype=torch.float64)
    wrong = torch.zeros((), device=device, dtype=torch.int64)
    wrong5 = torch.zeros((), device=device, dtype=torch.int64)
    images = 0
    for batch in batches:
        x, y = _to(batch, device)
        with _autocast(device, amp):
            logits = model(x)
        loss_sum += F.cross_entropy(logits.float(), y, reduction="sum").double()
        wrong += (logits.argmax(1) != y).sum()
        if top5:
            wrong5 += (logits.topk(5, dim=1).indices != y[:, None]).all(1).sum()
        images += y.shape[0]
    out = {"loss": loss_sum.item() / images, "err": 100.0 * wrong.item() / images}
    if top5:
        out["err5"] = 100.0 * wrong5.item() / images
    return out
