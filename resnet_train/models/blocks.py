"""Residual units: the branch shapes (basic, bottleneck), shortcuts, and the post- and
pre-activation units that combine them.

Unit variants follow "Identity Mappings in Deep Residual Networks" (He et al. 2016,
arXiv 1603.05027), Fig. 4 and Table 2:
  (a) original          x -> conv-BN-ReLU-conv-BN -> add -> ReLU
  (b) bn_after_add      x -> conv-BN-ReLU-conv    -> add -> BN -> ReLU
  (c) relu_before_add   x -> conv-BN-ReLU-conv-BN-ReLU -> add
  (d) relu_only_preact  x -> ReLU-conv-BN-ReLU-conv-BN -> add
  (e) full_preact       x -> BN-ReLU-conv-BN-ReLU-conv -> add
The Torch blog ("Training and investigating Residual Nets", 2016) adds one switch on top of
(a) and (b): the ReLU after the addition on or off.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

POST_ACTIVATION_UNITS = ("original", "bn_after_add", "relu_before_add")
PRE_ACTIVATION_UNITS = ("relu_only_preact", "full_preact")
UNITS = POST_ACTIVATION_UNITS + PRE_ACTIVATION_UNITS
SHORTCUTS = ("A", "B", "C")
BOTTLENECK_STRIDES = ("3x3", "1x1")
# How a pre-activation unit activates its input (fb.resnet.torch models/preresnet.lua@985e569:59-71):
# "branch" inside the residual branch, so the shortcut sees the raw input (every unit but a stage's
# first); "both" once before the split, so branch and shortcut see BN-ReLU(x) (a stage's first unit,
# 'both_preact'); "none" where the stem has just applied BN-ReLU (ImageNet stage 1, 'no_preact').
PREACT_ENTRIES = ("branch", "both", "none")


def conv3x3(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)


def conv1x1(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False)


class BasicShape:
    """Two 3x3 convs (He 2015, Fig. 5 left). `stride_on` concerns bottlenecks only."""

    name = "basic"
    expansion = 1

    @staticmethod
    def convs(in_channels: int, width: int, stride: int, stride_on: str = "3x3") -> list[nn.Conv2d]:
        return [conv3x3(in_channels, width, stride), conv3x3(width, width)]


class BottleneckShape:
    """1x1 reduce, 3x3, 1x1 expand by 4 (He 2015, Fig. 5 right). `stride_on="3x3"` strides the
    3x3 conv (fb.resnet.torch, torchvision); "1x1" the first 1x1 conv, as He's code for the
    Identity Mappings nets does (KaimingHe/resnet-1k-layers resnet-pre-act.lua@fde7ee9:43,70)."""

    name = "bottleneck"
    expansion = 4

    @staticmethod
    def convs(in_channels: int, width: int, stride: int, stride_on: str = "3x3") -> list[nn.Conv2d]:
        first, middle = (stride, 1) if stride_on == "1x1" else (1, stride)
        out_channels = width * BottleneckShape.expansion
        return [conv1x1(in_channels, width, first), conv3x3(width, width, middle), conv1x1(width, out_channels)]


BLOCK_SHAPES = {"basic": BasicShape, "bottleneck": BottleneckShape}


class PadShortcut(nn.Module):
    """Option A of He 2015 (Sec. 4.2): identity with strided subsampling and zero-padded extra
    channels, so it adds no parameters."""

    def __init__(self, in_channels: int, out_channels: int, stride: int):
        super().__init__()
        self.stride = stride
        self.extra_channels = out_channels - in_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride > 1:
            x = x[:, :, :: self.stride, :: self.stride]
        # F.pad pads the last dims first: (W, W, H, H, C, C).
        return F.pad(x, (0, 0, 0, 0, 0, self.extra_channels))


def make_shortcut(kind: str, in_channels: int, out_channels: int, stride: int, with_bn: bool) -> nn.Module:
    """Shortcut types of He 2015, Sec. 3.3 and Table 3: A pads, B projects only where the shape
    changes, C projects everywhere."""
    if kind not in SHORTCUTS:
        raise ValueError(f"unknown shortcut {kind!r}; choose one of {', '.join(SHORTCUTS)}")
    reshapes = stride != 1 or in_channels != out_channels
    if kind == "A":
        if in_channels > out_channels:
            raise ValueError("shortcut A cannot reduce channels; use shortcut B or C")
        return PadShortcut(in_channels, out_channels, stride) if reshapes else nn.Identity()
    if kind == "B" and not reshapes:
        return nn.Identity()
    conv = conv1x1(in_channels, out_channels, stride)
    return nn.Sequential(conv, nn.BatchNorm2d(out_channels)) if with_bn else conv


def _branch_convs(shape, in_channels: int, width: int, stride: int, dropout: float,
                  stride_on: str) -> list[nn.Conv2d]:
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout must lie in [0, 1), got {dropout}")
    return shape.convs(in_channels, width, stride, stride_on)


def branch_output_scale(unit: nn.Module) -> nn.Module:
    """The last layer that scales a residual branch's output: its last BN where the branch ends
    in one, else its last conv (as timm's zero_init_last). Zeroing its weight makes the unit
    start as the identity (Goyal et al. 2017) while the layer still gets a gradient. A branch
    that ends in a ReLU (relu_before_add) has none; check_model_args refuses that combination."""
    return unit.branch[-1]


class PostActUnit(nn.Module):
    """Post-activation unit of He 2015: convs with BN and ReLU after each, then the addition.

    `unit` picks (a) original, (b) bn_after_add or (c) relu_before_add of Identity Mappings
    Table 2; `relu_after_add=False` removes the ReLU after the addition (Torch blog)."""

    def __init__(self, shape, in_channels: int, width: int, stride: int = 1, *, shortcut: str = "B",
                 unit: str = "original", relu_after_add: bool = True, dropout: float = 0.0,
                 stride_on: str = "3x3"):
        super().__init__()
        if unit not in POST_ACTIVATION_UNITS:
            raise ValueError(f"{unit!r} is not a post-activation unit; "
                             f"choose one of {', '.join(POST_ACTIVATION_UNITS)}")
        if unit == "relu_before_add" and relu_after_add:
            raise ValueError("unit relu_before_add has no ReLU after the addition; set relu_after_add=false")
        convs = _branch_convs(shape, in_channels, width, stride, dropout, stride_on)
        out_channels = convs[-1].out_channels
        layers: list[nn.Module] = []
        for i, conv in enumerate(convs):
            last = i == len(convs) - 1
            if last and dropout > 0:
                layers.append(nn.Dropout(dropout))
            layers.append(conv)
            if not (last and unit == "bn_after_add"):
                layers.append(nn.BatchNorm2d(conv.out_channels))
            if not last or unit == "relu_before_add":
                layers.append(nn.ReLU(inplace=True))
        self.branch = nn.Sequential(*layers)
        self.shortcut = make_shortcut(shortcut, in_channels, out_channels, stride, with_bn=True)
        after: list[nn.Module] = []
        if unit == "bn_after_add":
            after.append(nn.BatchNorm2d(out_channels))
        if relu_after_add:
            after.append(nn.ReLU(inplace=True))
        self.after_add = nn.Sequential(*after)
        self.out_channels = out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.after_add(self.branch(x) + self.shortcut(x))


class PreActUnit(nn.Module):
    """Pre-activation unit of He 2016: BN and ReLU before each conv, nothing after the addition.

    `unit` picks (e) full_preact or (d) relu_only_preact of Identity Mappings Table 2. `entry`
    (see PREACT_ENTRIES) says where the first activation sits: a stage's first unit applies it
    before the split, so its shortcut, whatever its kind, takes the activated input (fb.resnet.torch
    preresnet.lua 'both_preact'; He's resnet-pre-act.lua:62-66); the other units apply it inside
    the branch and add the raw input. A projection has no BN of its own."""

    def __init__(self, shape, in_channels: int, width: int, stride: int = 1, *, shortcut: str = "B",
                 unit: str = "full_preact", dropout: float = 0.0, entry: str = "branch", stride_on: str = "3x3"):
        super().__init__()
        if unit not in PRE_ACTIVATION_UNITS:
            raise ValueError(f"{unit!r} is not a pre-activation unit; "
                             f"choose one of {', '.join(PRE_ACTIVATION_UNITS)}")
        if entry not in PREACT_ENTRIES:
            raise ValueError(f"unknown pre-activation entry {entry!r}; choose one of {', '.join(PREACT_ENTRIES)}")
        convs = _branch_convs(shape, in_channels, width, stride, dropout, stride_on)
        out_channels = convs[-1].out_channels
        full = unit == "full_preact"
        pre: list[nn.Module] = []
        if entry != "none":
            pre = [nn.BatchNorm2d(in_channels), nn.ReLU(inplace=True)] if full else [nn.ReLU()]
        self.preact = nn.Sequential(*pre)
        self.shortcut_sees_preact = entry == "both"
        layers: list[nn.Module] = []
        for i, conv in enumerate(convs):
            if i > 0:
                if full:
                    layers.append(nn.BatchNorm2d(convs[i - 1].out_channels))
                layers.append(nn.ReLU(inplace=True))
                if i == len(convs) - 1 and dropout > 0:
                    layers.append(nn.Dropout(dropout))
            layers.append(conv)
            if not full:
                layers.append(nn.BatchNorm2d(conv.out_channels))
        self.branch = nn.Sequential(*layers)
        self.shortcut = make_shortcut(shortcut, in_channels, out_channels, stride, with_bn=False)
        self.out_channels = out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.preact(x)
        return self.branch(y) + self.shortcut(y if self.shortcut_sees_preact else x)
