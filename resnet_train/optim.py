"""Optimizer, weight-decay groups and the learning-rate schedule.

The schedule is a pure function of the iteration, so resuming needs nothing but the
iteration count, and tests can check it against hand-computed values.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .config import OptimConfig, SchedConfig


def param_groups(model: nn.Module, weight_decay: float, decay_bn_and_bias: bool) -> list[dict]:
    """fb.resnet.torch decays every parameter; with decay_bn_and_bias=False, 1-D parameters
    (BN weights and biases, linear biases) get no weight decay."""
    if decay_bn_and_bias:
        return [{"params": list(model.parameters()), "weight_decay": weight_decay}]
    decay = [p for p in model.parameters() if p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.ndim <= 1]
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def build_optimizer(model: nn.Module, cfg: OptimConfig) -> torch.optim.Optimizer:
    """On CUDA, SGD and Adam use their fused kernels (one launch per step); the others the
    multi-tensor foreach ones, PyTorch's CUDA default."""
    groups = param_groups(model, cfg.weight_decay, cfg.decay_bn_and_bias)
    fused = True if next(model.parameters()).is_cuda else None
    if cfg.name == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov, fused=fused)
    if cfg.name == "adam":
        return torch.optim.Adam(groups, lr=cfg.lr, betas=tuple(cfg.betas), eps=cfg.eps, fused=fused)
    if cfg.name == "rmsprop":
        return torch.optim.RMSprop(groups, lr=cfg.lr, alpha=cfg.alpha, eps=cfg.eps, momentum=cfg.momentum)
    if cfg.name == "adagrad":
        return torch.optim.Adagrad(groups, lr=cfg.lr, eps=cfg.eps)
    if cfg.name == "adadelta":
        return torch.optim.Adadelta(groups, lr=cfg.lr, rho=cfg.rho, eps=cfg.eps)
    raise ValueError(f"unknown optimizer {cfg.name!r}")


def _per_unit(sched: SchedConfig, steps_per_epoch: int) -> int:
    """Iterations in one unit of milestones and step_size (sched.unit)."""
    return steps_per_epoch if sched.unit == "epochs" else 1


def drops_at(step: int, *, sched: SchedConfig, steps_per_epoch: int) -> bool:
    """Whether iteration `step` (0-based) is the first at a multistep or step schedule's lower LR."""
    per_unit = _per_unit(sched, steps_per_epoch)
    if sched.name == "multistep":  # a milestone part-way through an epoch takes effect at the next iteration
        return any(step == math.ceil(m * per_unit) for m in sched.milestones if m > 0)
    if sched.name == "step":
        period = sched.step_size * per_unit
        return step > 0 and step // period != (step - 1) // period
    return False


def _unit(value: float) -> str:
    """A milestone or step_size as written: "80", "0.9" (a screened epoch recipe's)."""
    return f"{value:.6g}" if value % 1 else f"{value:.0f}"


def _units(values: list[float]) -> str:
    return "[" + ", ".join(map(_unit, values)) + "]"


def describe_schedule(sched: SchedConfig) -> str:
    """The schedule in words, for the run's log: "multistep at [32000, 48000] iterations, the
    first 400 iterations at lr 0.01"."""
    text = sched.name
    if sched.name == "multistep" and not sched.milestones:
        text += " with no milestones (a constant lr)"
    elif sched.name == "multistep":
        text += f" at {_units(sched.milestones)} {sched.unit}"
    elif sched.name == "step":
        text += f" every {_unit(sched.step_size)} {sched.unit}"
    if (sched.name == "step" or sched.name == "multistep" and sched.milestones) and sched.gamma != 0.1:
        text += f" (x{sched.gamma:g} each)"
    if sched.warmup and sched.warmup_mode == "constant":
        text += f", the first {sched.warmup:,} iterations at lr {sched.warmup_lr:g}"
    elif sched.warmup:
        text += f", rising linearly from lr {sched.warmup_lr:g} over the first {sched.warmup:,} iterations"
    return text


def unreached(sched: SchedConfig, *, steps_per_epoch: int, total_steps: int) -> list[str]:
    """The parts of the schedule that the run ends before reaching, in words: a run shortened with
    train.epochs or train.iterations alone keeps the recipe's milestones, and its LR would silently
    never drop. (train.screening scales them with the run.)"""
    per_unit = _per_unit(sched, steps_per_epoch)
    end = f"the run stops after {total_steps:,} iterations"
    out = []
    if sched.warmup >= total_steps:
        out.append(f"sched.warmup={sched.warmup:,} iterations: {end}, inside the warm-up")
    if sched.name == "multistep":
        late = [m for m in sched.milestones if m * per_unit >= total_steps]
        if late:
            out.append(f"sched.milestones: {end}, before milestone(s) {_units(late)} ({sched.unit}), so the LR never "
                       f"drops there; set sched.milestones to fit the run")
    if sched.name == "step" and sched.step_size * per_unit >= total_steps:
        out.append(f"sched.step_size={_unit(sched.step_size)} {sched.unit}: {end}, before the first step; the LR never "
                   f"drops")
    return out


def lr_at(step: int, *, base_lr: float, sched: SchedConfig, steps_per_epoch: int, total_steps: int) -> float:
    """Learning rate for iteration `step` (0-based). Milestones and step_size are in
    sched.unit (epochs or iterations); the warm-up is in iterations."""
    if step < sched.warmup:
        if sched.warmup_mode == "constant":
            return sched.warmup_lr
        return sched.warmup_lr + (base_lr - sched.warmup_lr) * step / sched.warmup
    per_unit = _per_unit(sched, steps_per_epoch)
    if sched.name == "multistep":
        return base_lr * sched.gamma ** sum(step >= m * per_unit for m in sched.milestones)
    if sched.name == "step":
        return base_lr * sched.gamma ** (step // (sched.step_size * per_unit))
    if sched.name == "cosine":
        span = max(1, total_steps - sched.warmup)
        progress = min(1.0, (step - sched.warmup) / span)
        return sched.min_lr + (base_lr - sched.min_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))
    if sched.name == "constant":
        return base_lr
    raise ValueError(f"unknown schedule {sched.name!r}")
