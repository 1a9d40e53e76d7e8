"""One training epoch and one evaluation pass.

Running sums stay on the device; the loop reads them back only when it checks for divergence
(every step on CPU, every `check_every` steps on a GPU) and at the end of the epoch.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm


class DivergenceError(Exception):
    """The loss became NaN or infinite."""


@dataclass
class EpochTotals:
    """Sums over the batches of one epoch so far; a checkpoint taken mid-epoch stores them."""

    loss_sum: float = 0.0  # sum of per-image losses
    wrong: int = 0
    images: int = 0
    steps: int = 0
    seconds: float = 0.0

    @property
    def loss(self) -> float:
        return self.loss_sum / max(self.images, 1)

    @property
    def err(self) -> float:  # percent
        return 100.0 * self.wrong / max(self.images, 1)


def _autocast(device: torch.device, amp: bool):
    if amp and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _to(batch, device: torch.device, channels_last: bool):
    x, y = batch
    x = x.to(device, non_blocking=True, memory_format=torch.channels_last if channels_last else torch.preserve_format)
    return x, y.to(device, non_blocking=True)


def train_epoch(model: nn.Module, batches: Iterable, optimizer: torch.optim.Optimizer, *,
                lr_fn: Callable[[int], float], step: int, max_steps: int, device: torch.device,
                totals: EpochTotals | None = None, amp: bool = False, channels_last: bool = False,
                progress: bool = False,
                desc: str = "train", check_every: int = 50, stop: Callable[[], bool] = lambda: False
                ) -> tuple[EpochTotals, bool]:
    """Trains over `batches` from global iteration `step` until the batches end, max_steps is
    reached, or stop() turns true after a step. Returns the epoch's totals (continuing `totals`)
    and whether stop() ended it early. The LR is set from lr_fn before each step."""
    model.train()
    totals = totals or EpochTotals()
    loss_sum = torch.tensor(totals.loss_sum, device=device, dtype=torch.float64)
    wrong = torch.tensor(totals.wrong, device=device, dtype=torch.int64)
    first_bad = torch.tensor(-1, device=device)
    images, steps = totals.images, totals.steps
    check_every = 1 if device.type == "cpu" else check_every
    stopped = False
    t0 = time.perf_counter()
    bar = tqdm(batches, total=min(len(batches), max_steps - step), desc=desc, leave=False, disable=not progress,
               dynamic_ncols=True)
    for batch in bar:
        if step >= max_steps:
            break
        for group in optimizer.param_groups:
            group["lr"] = lr_fn(step)
        x, y = _to(batch, device, channels_last)
        with _autocast(device, amp):
            logits = model(x)
            loss = F.cross_entropy(logits, y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        loss = loss.detach()
        first_bad = torch.where((first_bad < 0) & ~torch.isfinite(loss), step, first_bad)
        loss_sum += loss.double() * y.shape[0]
        wrong += (logits.detach().argmax(1) != y).sum()
        images += y.shape[0]
        steps += 1
        step += 1
        if steps % check_every == 0:
            _check_finite(first_bad, lr_fn)
            bar.set_postfix(loss=f"{loss_sum.item() / images:.3f}", lr=f"{lr_fn(step - 1):.3g}", refresh=False)
        if stop():
            stopped = True
            break
    _check_finite(first_bad, lr_fn)
    bar.close()
    out = EpochTotals(loss_sum=loss_sum.item(), wrong=int(wrong.item()), images=images, steps=steps,
                      seconds=totals.seconds + time.perf_counter() - t0)
    return out, stopped


def _check_finite(first_bad: torch.Tensor, lr_fn: Callable[[int], float]) -> None:
    bad = int(first_bad.item())
    if bad >= 0:
        raise DivergenceError(
            f"the training loss became NaN or infinite at iteration {bad} (learning rate {lr_fn(bad):g}); the run "
            f"stops here and last.pt keeps the last finished epoch. Likely causes: a learning rate too high for this "
            f"model and batch size, no warm-up on a very deep net (try sched.warmup=400), or bf16 overflow "
            f"(try train.amp=false)")


@torch.no_grad()
def evaluate(model: nn.Module, batches: Iterable, *, device: torch.device, amp: bool = False,
             channels_last: bool = False, top5: bool = False) -> dict[str, float]:
    model.eval()
    loss_sum = torch.zeros((), device=device, dtype=torch.float64)
    wrong = torch.zeros((), device=device, dtype=torch.int64)
    wrong5 = torch.zeros((), device=device, dtype=torch.int64)
    images = 0
    for batch in batches:
        x, y = _to(batch, device, channels_last)
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
