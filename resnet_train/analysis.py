"""Layer responses (He 2015 Sec. 4.2, Fig. 7) and gradient norms by part of the network.

A layer's response is "the output of each 3x3 layer, after BN and before other nonlinearity
(ReLU/addition)" (He 2015 Sec. 4.2): the BN right after each 3x3 conv. Where no BN follows a 3x3
conv inside its block (a pre-activation unit's last conv, or bn_after_add's, whose BN comes after
the addition), the conv's own output is the response.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .models import ResNet


def response_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """(name, module whose output is the response) for every 3x3 conv, in network order."""
    follower: dict[int, tuple[str, nn.Module]] = {}
    for name, seq in model.named_modules():
        if isinstance(seq, nn.Sequential):
            children = list(seq.named_children())
            for (_, child), (next_name, nxt) in zip(children, children[1:], strict=False):
                if isinstance(nxt, nn.BatchNorm2d):
                    follower[id(child)] = (f"{name}.{next_name}", nxt)
    out = []
    for name, m in model.named_modules():
        if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3):
            out.append(follower.get(id(m), (name, m)))
    return out


@torch.no_grad()
def layer_responses(model: nn.Module, batches: Iterable, device: torch.device) -> list[dict[str, Any]]:
    """The standard deviation of each response layer's output over every value it takes on the
    batches (images, channels and positions together), in eval mode: BN uses its running
    statistics, as at test time. Sums are float64 on the device, read once at the end."""
    model.eval()
    layers = response_layers(model)
    sums = torch.zeros(len(layers), 3, dtype=torch.float64, device=device)  # count, sum, sum of squares

    def hook(index: int):
        def record(_module, _inputs, output):
            # Runs before the in-place ReLU that may follow, so it sees the BN's own output.
            y = output.detach().double()
            sums[index, 0] += y.numel()
            sums[index, 1] += y.sum()
            sums[index, 2] += (y * y).sum()
        return record

    handles = [m.register_forward_hook(hook(i)) for i, (_, m) in enumerate(layers)]
    try:
        for x, _ in batches:
            model(x.to(device, non_blocking=True))
    finally:
        for h in handles:
            h.remove()
    out = []
    for (name, _), (n, s, ss) in zip(layers, sums.tolist(), strict=True):
        mean = s / n
        out.append({"layer": name, "std": math.sqrt(max(ss / n - mean * mean, 0.0))})
    return out


def plot_responses(curves: dict[str, list[float]], path: Path, title: str = "Layer responses") -> None:
    """He 2015 Fig. 7: each curve's std per layer in network order (top) and sorted in
    descending order (bottom)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (top, bottom) = plt.subplots(2, 1, figsize=(7, 7))
    for label, stds in curves.items():
        style = "--" if label.startswith("plain") else "-"
        layers = range(1, len(stds) + 1)
        top.plot(layers, stds, style, label=label)
        bottom.plot(layers, sorted(stds, reverse=True), style, label=label)
    top.set(xlabel="layer index (original)", ylabel="std", title=title)
    bottom.set(xlabel="layer index (sorted by magnitude)", ylabel="std")
    for ax in (top, bottom):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)


def write_responses(path: Path, record: dict[str, Any]) -> Path | None:
    """`record` as JSON at `path`, and its plot beside it (same name, .png), returned; None where
    matplotlib is missing, as on the GPU machine, which runs the source tree with no install: the
    JSON is the result, and resnet-train-report plots it later."""
    path.write_text(json.dumps(record, indent=2) + "\n")
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return None
    png = path.with_suffix(".png")
    plot_responses({record["model"]: [r["std"] for r in record["layers"]]}, png,
                   f"Layer responses, {record['model']} ({record['ckpt']})")
    return png


def gradient_groups(model: ResNet, by: str) -> dict[str, list[nn.Parameter]]:
    """The network's parameters grouped for gradient-norm logging: by "stage" (stem, stage1..N,
    head) or by "unit" (stem, stage1.unit1, ..., head)."""
    groups: dict[str, list[nn.Parameter]] = {"stem": list(model.stem.parameters())}
    for i, stage in enumerate(model.stages, 1):
        if by == "stage":
            groups[f"stage{i}"] = list(stage.parameters())
        else:
            for j, unit in enumerate(stage, 1):
                groups[f"stage{i}.unit{j}"] = list(unit.parameters())
    groups["head"] = [*model.final_act.parameters(), *model.fc.parameters()]
    return {name: params for name, params in groups.items() if params}


class GradNorms:
    """Every `every` iterations, the L2 norm of each group's gradients and of all of them
    ("total"), computed on the device between backward and the optimizer step; `drain()` reads
    them back (one host sync) as (iteration, {group: norm}) pairs. Reading gradients changes
    nothing in the run."""

    def __init__(self, groups: dict[str, list[nn.Parameter]], every: int):
        self.names = [*groups, "total"]
        self.groups = list(groups.values())
        self.every = every
        self.pending: list[tuple[int, torch.Tensor]] = []

    def due(self, step: int) -> bool:
        return step % self.every == 0

    def record(self, step: int) -> None:
        norms = []
        for params in self.groups:
            grads = [p.grad for p in params if p.grad is not None]
            norms.append(torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads))) if grads
                         else torch.zeros((), device=params[0].device))
        norms.append(torch.linalg.vector_norm(torch.stack(norms)))
        self.pending.append((step, torch.stack(norms).float()))

    def drain(self) -> list[tuple[int, dict[str, float]]]:
        if not self.pending:
            return []
        steps = [s for s, _ in self.pending]
        values = torch.stack([v for _, v in self.pending]).tolist()
        self.pending = []
        return [(s, dict(zip(self.names, row, strict=True))) for s, row in zip(steps, values, strict=True)]
