"""One training epoch and one evaluation pass.

Running sums stay on the device; the loop reads them back only when it checks for divergence
(every step on CPU, every `check_every` steps on a GPU) and at the end of the epoch.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from .analysis import GradNorms


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
    # No weight-cast cache: a CUDA graph cannot capture it, and eager steps then match graphed ones.
    if amp and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16, cache_enabled=False)
    return contextlib.nullcontext()


def _to(batch, device: torch.device, channels_last: bool):
    x, y = batch
    x = x.to(device, non_blocking=True, memory_format=torch.channels_last if channels_last else torch.preserve_format)
    return x, y.to(device, non_blocking=True)


class RunningSums:
    """An epoch's sums kept on the device, one per member (a K-member network trains K seeds at
    once, see members.py; a plain run is one member): loss, errors, and the first iteration whose
    loss was not finite (-1: none). Reading them is the only host sync of the loop."""

    def __init__(self, device: torch.device, members: int = 1):
        self.members = members
        self.loss_sum = torch.zeros(members, device=device, dtype=torch.float64)
        self.wrong = torch.zeros(members, device=device, dtype=torch.int64)
        self.first_bad = torch.zeros((), device=device, dtype=torch.int64)
        self.iteration = torch.zeros((), device=device, dtype=torch.int64)

    def reset(self, totals: list[EpochTotals], step: int) -> None:
        """In place, since a captured graph holds these very tensors."""
        self.loss_sum.copy_(torch.tensor([t.loss_sum for t in totals], dtype=torch.float64))
        self.wrong.copy_(torch.tensor([t.wrong for t in totals], dtype=torch.int64))
        self.first_bad.fill_(-1)
        self.iteration.fill_(step)

    def add(self, loss: torch.Tensor, logits: torch.Tensor, y: torch.Tensor) -> None:
        """loss: each member's mean loss; logits (batch, member, class) or (batch, class)."""
        if logits.dim() == 2:
            logits, y = logits[:, None], y[:, None]
        bad = (self.first_bad < 0) & ~torch.isfinite(loss).all()
        self.first_bad.copy_(torch.where(bad, self.iteration, self.first_bad))
        self.iteration.add_(1)
        self.loss_sum.add_(loss.double().reshape(-1) * y.shape[0])
        self.wrong.add_((logits.argmax(-1) != y).sum(0))


class TrainStep:
    """One training step, run eagerly: the reference path."""

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer, *, device: torch.device, amp: bool,
                 members: int = 1):
        self.model, self.optimizer, self.device, self.amp = model, optimizer, device, amp
        self.sums = RunningSums(device, members)

    def _forward_backward(self, x: torch.Tensor, y: torch.Tensor) -> None:
        with _autocast(self.device, self.amp):
            logits = self.model(x)
            if logits.dim() == 3:
                # K members, logits (batch, member, class) and labels (batch, member): the loss is the
                # sum of the members' mean losses, so each member's gradient is its standalone one.
                losses = F.cross_entropy(logits.transpose(1, 2), y, reduction="none").mean(0)
                loss = losses.sum()
            else:
                losses = loss = F.cross_entropy(logits, y)
        loss.backward()
        self.sums.add(losses.detach(), logits.detach(), y)

    def __call__(self, x: torch.Tensor, y: torch.Tensor, observe: Callable[[], None] | None = None) -> None:
        """`observe` runs between backward and the optimizer step (e.g. GradNorms.record)."""
        self.optimizer.zero_grad(set_to_none=True)
        self._forward_backward(x, y)
        if observe is not None:
            observe()
        self.optimizer.step()


class GraphedTrainStep(TrainStep):
    """The forward, loss, backward and running sums of a step captured once in a CUDA graph and
    replayed: thin CIFAR ResNets are bound by kernel launches, and a replay launches them all at
    once. The optimizer steps outside the graph (one fused kernel), so the learning rate and the
    optimizer work unchanged. The first `warmup` steps run eagerly on a side stream, as capture
    requires; a batch of another shape (an epoch's last) runs eagerly. Every step is a real step
    in all cases: the graph records the same kernels that the eager step runs."""

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer, *, device: torch.device, amp: bool,
                 members: int = 1, warmup: int = 3):
        super().__init__(model, optimizer, device=device, amp=amp, members=members)
        self.warmup = warmup
        self.graph: torch.cuda.CUDAGraph | None = None
        self.x = self.y = None
        self.params = [p for group in optimizer.param_groups for p in group["params"]]
        self.grads: list[torch.Tensor | None] = []

    def __call__(self, x: torch.Tensor, y: torch.Tensor, observe: Callable[[], None] | None = None) -> None:
        if self.graph is not None and x.shape == self.x.shape:
            self.x.copy_(x)
            self.y.copy_(y)
            self.graph.replay()
            if observe is not None:
                observe()
            self.optimizer.step()
            return
        if self.graph is not None:  # another batch size: eager, then the graph's gradients back in place
            super().__call__(x, y, observe)
            for p, g in zip(self.params, self.grads, strict=True):
                p.grad = g
            return
        if self.warmup > 0:
            self.warmup -= 1
            side = torch.cuda.Stream(self.device)
            side.wait_stream(torch.cuda.current_stream(self.device))
            with torch.cuda.stream(side):
                super().__call__(x, y, observe)
            torch.cuda.current_stream(self.device).wait_stream(side)
            return
        self.optimizer.zero_grad(set_to_none=True)
        self.x, self.y = x.clone(), y.clone()
        self.graph = torch.cuda.CUDAGraph()
        # thread_local: the DataLoader's pin-memory thread (data.on_gpu=false) calls into CUDA
        # meanwhile, which would invalidate a capture in the default global mode.
        with torch.cuda.graph(self.graph, capture_error_mode="thread_local"):
            self._forward_backward(self.x, self.y)
        self.grads = [p.grad for p in self.params]
        self.graph.replay()
        if observe is not None:
            observe()
        self.optimizer.step()


def train_epoch(step_fn: TrainStep, batches: Iterable, *,
                lr_fn: Callable[[int], float], step: int, max_steps: int,
                totals: EpochTotals | list[EpochTotals] | None = None, channels_last: bool = False,
                progress: bool = False, desc: str = "train", check_every: int = 50,
                stop: Callable[[], bool] = lambda: False, reset_at: Callable[[int], bool] = lambda step: False,
                grad_norms: GradNorms | None = None) -> tuple[EpochTotals | list[EpochTotals], bool]:
    """Trains with `step_fn` over `batches` from global iteration `step` until the batches end,
    max_steps is reached, or stop() turns true after a step. Returns the epoch's totals
    (continuing `totals`; a list of them, one per member, where `totals` is a list or step_fn
    trains several members) and whether stop() ended it early. The LR is set from lr_fn before each
    step; where reset_at(step) holds, the optimizer's state is cleared first. `grad_norms`
    records the gradients' norms at the iterations it is due."""
    step_fn.model.train()
    device = step_fn.device
    sums = step_fn.sums
    parts = [totals] if isinstance(totals, EpochTotals) else totals or [EpochTotals() for _ in range(sums.members)]
    sums.reset(parts, step)
    images, steps = parts[0].images, parts[0].steps
    check_every = 1 if device.type == "cpu" else check_every
    stopped = False
    t0 = time.perf_counter()
    bar = tqdm(batches, total=min(len(batches), max_steps - step), desc=desc, leave=False, disable=not progress,
               dynamic_ncols=True)
    for batch in bar:
        if step >= max_steps:
            break
        if reset_at(step):
            step_fn.optimizer.state.clear()
        for group in step_fn.optimizer.param_groups:
            group["lr"] = lr_fn(step)
        x, y = _to(batch, device, channels_last)
        due = grad_norms is not None and grad_norms.due(step)
        step_fn(x, y, partial(grad_norms.record, step) if due else None)
        images += y.shape[0]
        steps += 1
        step += 1
        if steps % check_every == 0:
            _check_finite(sums.first_bad, lr_fn)
            if progress:  # the string costs a host sync; build it only where a bar shows it
                bar.set_postfix(loss=f"{sums.loss_sum.mean().item() / images:.3f}", lr=f"{lr_fn(step - 1):.3g}",
                                refresh=False)
        if stop():
            stopped = True
            break
    _check_finite(sums.first_bad, lr_fn)
    bar.close()
    seconds = parts[0].seconds + time.perf_counter() - t0
    out = [EpochTotals(loss_sum=loss, wrong=int(wrong), images=images, steps=steps, seconds=seconds)
           for loss, wrong in zip(sums.loss_sum.tolist(), sums.wrong.tolist(), strict=True)]
    return (out if isinstance(totals, list) or sums.members > 1 else out[0]), stopped


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
             channels_last: bool = False, top5: bool = False, members: int = 1) -> dict[str, float] | list[dict]:
    """Mean loss and error (percent; err5 with top5) over `batches` in eval mode. With members=K,
    `model` is a K-member network fed MemberBatches (labels (batch, K)), and the result is a
    list: member k's results, each as its own network would give them on its own batches."""
    model.eval()
    loss_sum = torch.zeros(members, device=device, dtype=torch.float64)
    wrong = torch.zeros(members, device=device, dtype=torch.int64)
    wrong5 = torch.zeros(members, device=device, dtype=torch.int64)
    images = 0
    for batch in batches:
        x, y = _to(batch, device, channels_last)
        with _autocast(device, amp):
            logits = model(x)
        if logits.dim() == 2:
            logits, y = logits[:, None], y[:, None]
        loss_sum += F.cross_entropy(logits.float().transpose(1, 2), y, reduction="none").double().sum(0)
        wrong += (logits.argmax(-1) != y).sum(0)
        if top5:
            wrong5 += (logits.topk(5, dim=-1).indices != y[..., None]).all(-1).sum(0)
        images += y.shape[0]
    out = []
    for loss, w, w5 in zip(loss_sum.tolist(), wrong.tolist(), wrong5.tolist(), strict=True):
        out.append({"loss": loss / images, "err": 100.0 * w / images} | ({"err5": 100.0 * w5 / images} if top5 else {}))
    return out if members > 1 else out[0]
