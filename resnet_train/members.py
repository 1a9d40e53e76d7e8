"""K seeds of one arm trained as one network (`seeds=K`): the K-member form of a model, its
weights and optimizer state packed and unpacked, and the members' batches side by side.

Member k is the standalone run `seed=seed+k`: built and initialised by that run's own setup, fed
that run's data order and augmentation, and trained by a loss whose gradient with respect to its
weights is that run's gradient. Its channels never mix with another member's:

- a convolution with C_in -> C_out channels becomes one with K*C_in -> K*C_out channels in K
  groups (its groups times K), member k owning channels k*C .. (k+1)*C - 1 of every layer;
- BN over K*C channels keeps per-channel, so per-member, batch statistics;
- ReLU and dropout are elementwise, pooling is per channel;
- the zero-padding shortcut pads each member's block of channels (PadShortcut.members);
- the classifier is K classifiers applied to their own members' features (MemberLinear).

Evaluation is one pass of the K-member network over the members' own eval batches side by side
(train.evaluate_runs): in eval mode each member's BN uses its own running statistics.

Every tensor of the K-member state_dict is the members' tensors concatenated along dim 0 (scalars,
BN's num_batches_tracked, are shared), and so is the optimizer state: every optimizer here is
elementwise, so one optimizer over the K-member parameters is K optimizers.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

from .models.blocks import PadShortcut


class MemberLinear(nn.Module):
    """K linear classifiers: input (batch, K*in) with member k's features in block k, output
    (batch, K, out). weight (K*out, in) and bias (K*out) hold member k's nn.Linear in rows
    k*out .. (k+1)*out - 1."""

    def __init__(self, members: int, in_features: int, out_features: int):
        super().__init__()
        self.members, self.in_features, self.out_features = members, in_features, out_features
        self.weight = nn.Parameter(torch.empty(members * out_features, in_features))
        self.bias = nn.Parameter(torch.empty(members * out_features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k, o = self.members, self.out_features
        x = x.unflatten(1, (k, self.in_features))
        return torch.einsum("bki,koi->bko", x, self.weight.view(k, o, self.in_features)) + self.bias.view(k, o)


def _wide(module: nn.Module, k: int) -> nn.Module:
    if isinstance(module, nn.Conv2d):
        return nn.Conv2d(k * module.in_channels, k * module.out_channels, module.kernel_size, module.stride,
                         module.padding, module.dilation, groups=k * module.groups, bias=module.bias is not None,
                         padding_mode=module.padding_mode)
    if isinstance(module, nn.BatchNorm2d):
        return nn.BatchNorm2d(k * module.num_features, module.eps, module.momentum, module.affine,
                              module.track_running_stats)
    if isinstance(module, nn.Linear):
        return MemberLinear(k, module.in_features, module.out_features)
    if isinstance(module, PadShortcut):
        module.members = k
        return module
    if any(True for _ in module.parameters(recurse=False)) or any(True for _ in module.buffers(recurse=False)):
        raise ValueError(f"seeds: no K-member form of {type(module).__name__} is defined")
    return module


def widen(model: nn.Module, members: int) -> nn.Module:
    """The K-member form of `model` (on its device, in its dtype), its weights uninitialised:
    combine() fills them. The new layers' default initialisation would draw from the global RNG;
    it is restored, so a resumed run's dropout masks continue where they stopped."""
    wide = copy.deepcopy(model)
    with torch.random.fork_rng(devices=[]):
        for parent in list(wide.modules()):
            for name, child in list(parent.named_children()):
                setattr(parent, name, _wide(child, members))
    first = next(model.parameters())
    return wide.to(first.device, first.dtype)


def combine(models: list[nn.Module]) -> nn.Module:
    """The K-member network of K standalone networks of one architecture, their weights and
    buffers packed in (member k = models[k])."""
    wide = widen(models[0], len(models))
    wide.load_state_dict(pack_state([m.state_dict() for m in models]))
    return wide


def _pack(tensors: list[Any]) -> Any:
    first = tensors[0]
    if not isinstance(first, torch.Tensor) or first.dim() == 0:
        return first  # shared: num_batches_tracked, Adam's step (equal in every member), None
    return torch.cat(tensors, 0)


def _member(value: Any, k: int, members: int) -> Any:
    if not isinstance(value, torch.Tensor) or value.dim() == 0:
        return value
    size = value.shape[0] // members
    return value[k * size:(k + 1) * size].clone()


def pack_state(states: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """The K-member state_dict of the members' standalone state_dicts."""
    return {key: _pack([s[key] for s in states]) for key in states[0]}


def member_state(state: dict[str, torch.Tensor], k: int, members: int) -> dict[str, torch.Tensor]:
    """Member k's standalone state_dict, out of the K-member one."""
    return {key: _member(value, k, members) for key, value in state.items()}


def pack_optimizer(states: list[dict[str, Any]]) -> dict[str, Any]:
    """The K-member optimizer state_dict of the members' (parameters in the same order)."""
    packed = {i: {key: _pack([s["state"][i][key] for s in states]) for key in entry}
              for i, entry in states[0]["state"].items()}
    return {"state": packed, "param_groups": copy.deepcopy(states[0]["param_groups"])}


def member_optimizer(state: dict[str, Any], k: int, members: int) -> dict[str, Any]:
    """Member k's standalone optimizer state_dict, out of the K-member one."""
    return {"state": {i: {key: _member(v, k, members) for key, v in entry.items()}
                      for i, entry in state["state"].items()},
            "param_groups": copy.deepcopy(state["param_groups"])}


class MemberBatches:
    """The members' loaders side by side: each batch is member k's own batch in block k, images
    concatenated along channels (batch, K*C, H, W), labels stacked (batch, K)."""

    def __init__(self, loaders: list):
        self.loaders = loaders

    def __len__(self) -> int:
        return len(self.loaders[0])

    def __iter__(self):
        for batches in zip(*self.loaders, strict=True):
            images, labels = zip(*batches, strict=True)
            yield torch.cat(images, 1), torch.stack(labels, 1)
