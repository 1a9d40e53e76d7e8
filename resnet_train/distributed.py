"""torch.distributed under torchrun (or SLURM's srun): process group, rank roles, SyncBN.

`train.batch_size` is the global batch: each of N processes takes batch_size / N images of every
global batch, so one recipe gives the same optimisation on 1 or N GPUs.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world > 1


SINGLE = Dist()


def resolve_device(name: str, job_index: int | None = None) -> torch.device:
    """auto: CUDA when present; in a sweep, job i takes GPU i mod the GPU count, so a launcher
    that runs several jobs at once (hydra/launcher=joblib) packs them over all GPUs."""
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if name.startswith("cuda") and not gpus:
        raise ValueError(f"device={name} but no CUDA GPU is visible to PyTorch; use device=auto or device=cpu")
    if name.startswith("cuda:") and int(name[5:]) >= gpus:
        raise ValueError(f"device={name} but only {gpus} GPU(s) are visible")
    if name == "auto":
        name = "cpu" if not gpus else f"cuda:{(job_index or 0) % gpus}"
    elif name == "cuda":  # torch.cuda.set_device and the graph capture need an index
        name = f"cuda:{torch.cuda.current_device()}"
    return torch.device(name)


def configure_cuda() -> None:
    """For a CUDA run or evaluation: cuDNN picks the fastest algorithms for the run's fixed shapes,
    and fp32 convolutions stay IEEE fp32. By default cuDNN runs them as TF32 (a 10-bit mantissa) on
    Ampere and later GPUs, which would make the plain reference path (train.amp=false) and
    mode=analyze's fp32 measurements something less; bf16 autocast is unaffected, and fp32 matmuls
    are IEEE by default. The legacy flag, not torch>=2.9's fp32_precision: once the new API is
    used, reading the legacy flag raises, and torch.compile's autotuner still reads it."""
    torch.backends.cudnn.benchmark = True
    torch.backends.cudnn.allow_tf32 = False


def from_env(env: dict[str, str] | None = None) -> Dist:
    """torchrun sets RANK, WORLD_SIZE and LOCAL_RANK; under `srun` without torchrun, SLURM's
    SLURM_PROCID, SLURM_NTASKS and SLURM_LOCALID stand in (MASTER_ADDR and MASTER_PORT must be
    exported by the batch script)."""
    env = os.environ if env is None else env
    if "WORLD_SIZE" in env and "RANK" in env:
        return Dist(int(env["RANK"]), int(env["WORLD_SIZE"]), int(env.get("LOCAL_RANK", 0)))
    if "SLURM_NTASKS" in env and "SLURM_PROCID" in env and int(env["SLURM_NTASKS"]) > 1:
        return Dist(int(env["SLURM_PROCID"]), int(env["SLURM_NTASKS"]), int(env.get("SLURM_LOCALID", 0)))
    return Dist()


def init(d: Dist, use_cuda: bool) -> None:
    if d.active and "MASTER_ADDR" not in os.environ and "SLURM_JOB_ID" in os.environ:
        # Under hydra-submitit-launcher: submitit knows the first node's address and a port.
        from submitit.helpers import TorchDistributedEnvironment

        TorchDistributedEnvironment().export()
    if d.active and not dist.is_initialized():
        if use_cuda:
            torch.cuda.set_device(d.local_rank)
        dist.init_process_group("nccl" if use_cuda else "gloo", rank=d.rank, world_size=d.world)


def broadcast(obj, d: Dist):
    """Rank 0's value of a picklable object, on every rank."""
    if not d.active:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gather(obj, d: Dist) -> list:
    """Every rank's value of a picklable object, in rank order (on every rank)."""
    if not d.active:
        return [obj]
    out = [None] * d.world
    dist.all_gather_object(out, obj)
    return out


def any_rank(flag: bool, d: Dist, device: torch.device) -> bool:
    if not d.active:
        return flag
    t = torch.tensor(int(flag), device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def sum_over_ranks(values: list[float], d: Dist, device: torch.device) -> list[float]:
    if not d.active:
        return values
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.tolist()


class _AllGather(torch.autograd.Function):
    """Every rank's tensor, stacked (world, ...). Every rank computes the same function of the
    stack, so the gradient of a rank's input is the sum over ranks of its row's gradient."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        out = [torch.empty_like(x) for _ in range(dist.get_world_size())]
        dist.all_gather(out, x.contiguous())
        return torch.stack(out)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.contiguous()
        dist.all_reduce(grad)
        return grad[dist.get_rank()]


def combine_moments(stats: torch.Tensor, channels: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Global count, mean and biased variance from each rank's (count, mean, M2) rows, by Chan et
    al.'s pairwise formula: no E[x^2] - E[x]^2, which cancels in fp32 when the mean is large."""
    counts, means, m2 = stats[:, :1], stats[:, 1:1 + channels], stats[:, 1 + channels:]
    n = counts.sum()
    mean = (counts * means).sum(0) / n
    var = (m2.sum(0) + (counts * (means - mean) ** 2).sum(0)) / n
    return n, mean, var


class SyncBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm over the global batch of all processes, on any backend (torch's SyncBatchNorm
    needs GPU tensors). Each rank's count, mean and sum of squared deviations stay on the device
    and travel in one packed, differentiable all-gather per layer."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
            return super().forward(x)
        xf = x.float()
        c = x.shape[1]
        local_n = xf.numel() // c
        var, mean = torch.var_mean(xf, dim=(0, 2, 3), correction=0)
        local = torch.cat([xf.new_full((1,), float(local_n)), mean, var * local_n])
        n, mean, var = combine_moments(_AllGather.apply(local), c)
        with torch.no_grad():
            self.num_batches_tracked += 1
            self.running_mean.lerp_(mean.detach(), self.momentum)
            self.running_var.lerp_(var.detach() * n / (n - 1), self.momentum)
        shape = (1, -1, 1, 1)
        y = (xf - mean.view(shape)) * torch.rsqrt(var.view(shape) + self.eps)
        return (y * self.weight.view(shape) + self.bias.view(shape)).to(x.dtype)


def convert_sync_bn(module: nn.Module) -> nn.Module:
    """Replaces every BatchNorm2d by SyncBatchNorm2d, keeping parameters and buffers."""
    for name, child in module.named_children():
        if type(child) is nn.BatchNorm2d:
            sync = SyncBatchNorm2d(child.num_features, child.eps, child.momentum)
            sync.load_state_dict(child.state_dict())
            setattr(module, name, sync.to(child.weight.device))
        else:
            convert_sync_bn(child)
    return module


class AgreedStop:
    """Whether to stop, the same answer on every rank. Single-process: the local flag. Under DDP
    the ranks agree through an all-reduce, a host sync, so only at every `every`-th reading: every
    rank stops at the same step, at most `every` steps after the signal."""

    def __init__(self, local, d: Dist, device: torch.device, every: int = 20):
        self.local, self.d, self.device, self.every = local, d, device, every
        self.readings = 0

    def __call__(self) -> bool:
        if not self.d.active:
            return self.local()
        self.readings += 1
        return self.readings % self.every == 0 and any_rank(self.local(), self.d, self.device)
