"""Residual units: the branch shapes (basic, bottleneck), the shortcuts, and the one unit class
whose layer order comes from a table of "Identity Mappings in Deep Residual Networks" (He et al.
2016, arXiv 1603.05027) Fig. 4.

Models are built from a checked `ModelSpec` (spec.py); the classes here do not re-check it.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class UnitLayout:
    """One unit of Fig. 4. All five put BN-ReLU between two convs (and WRN's dropout before the
    last conv); they differ only in what comes before the first conv, after the last, and after
    the addition."""

    before: tuple[str, ...]  # on the input, before the first conv
    after_last: tuple[str, ...]  # after the last conv, inside the branch
    after_add: tuple[str, ...]  # after the addition

    @property
    def preact(self) -> bool:
        """A pre-activation unit: its projection shortcut has no BN of its own, and the network
        ends in BN-ReLU before pooling (He 2016 Sec. 4; fb.resnet.torch preresnet.lua)."""
        return bool(self.before)


# Fig. 4:            before            after the last conv   after the addition
UNIT_LAYOUTS = {
    "original": UnitLayout((), ("bn",), ("relu",)),  # (a)
    "bn_after_add": UnitLayout((), (), ("bn", "relu")),  # (b)
    "relu_before_add": UnitLayout((), ("bn", "relu"), ()),  # (c)
    "relu_only_preact": UnitLayout(("relu",), ("bn",), ()),  # (d)
    "full_preact": UnitLayout(("bn", "relu"), (), ()),  # (e)
}
UNITS = tuple(UNIT_LAYOUTS)
# "none": no shortcut at all, He 2015's plain baseline (Sec. 4.2, Fig. 3 middle).
SHORTCUTS = ("A", "B", "C", "none")
BOTTLENECK_STRIDES = ("3x3", "1x1")
# Where a pre-activation unit applies its `before` layers (fb.resnet.torch models/preresnet.lua@985e569:59-71):
# "branch" inside the residual branch, so the shortcut sees the raw input (every unit but a stage's
# first); "both" once before the split, so branch and shortcut see the activated input (a stage's
# first unit, 'both_preact'); "none" where the stem has just applied BN-ReLU (ImageNet stage 1, 'no_preact').
PREACT_ENTRIES = ("branch", "both", "none")


def layout_for(unit: str, relu_after_add: bool | None = None) -> UnitLayout:
    """The unit's row, with the Torch blog's switch applied: relu_after_add=False drops the ReLU
    after the addition of (a) and (b); None keeps the unit's own definition."""
    layout = UNIT_LAYOUTS[unit]
    if relu_after_add is False:
        layout = replace(layout, after_add=tuple(x for x in layout.after_add if x != "relu"))
    return layout


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
BlockShape = type[BasicShape] | type[BottleneckShape]


class PadShortcut(nn.Module):
    """Option A of He 2015 (Sec. 4.2): identity with strided subsampling and zero-padded extra
    channels, so it adds no parameters."""

    def __init__(self, in_channels: int, out_channels: int, stride: int):
        super().__init__()
        self.stride = stride
        self.extra_channels = out_channels - in_channels
        self.members = 1  # a K-member network (members.py) pads each member's block of channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride > 1:
            x = x[:, :, :: self.stride, :: self.stride]
        # F.pad pads the last dims first: (W, W, H, H, C, C).
        pad = (0, 0, 0, 0, 0, self.extra_channels)
        if self.members == 1:
            return F.pad(x, pad)
        return F.pad(x.unflatten(1, (self.members, -1)), pad).flatten(1, 2)


def make_shortcut(kind: str, in_channels: int, out_channels: int, stride: int, with_bn: bool) -> nn.Module | None:
    """Shortcut types of He 2015, Sec. 3.3 and Table 3: A pads, B projects only where the shape
    changes, C projects everywhere; "none" has no shortcut (the plain nets of Sec. 4.2)."""
    if kind == "none":
        return None
    reshapes = stride != 1 or in_channels != out_channels
    if kind == "A":
        if in_channels > out_channels:
            raise ValueError("shortcut A cannot reduce channels; use shortcut B or C")
        return PadShortcut(in_channels, out_channels, stride) if reshapes else nn.Identity()
    if kind == "B" and not reshapes:
        return nn.Identity()
    conv = conv1x1(in_channels, out_channels, stride)
    return nn.Sequential(conv, nn.BatchNorm2d(out_channels)) if with_bn else conv




def _layers(names: tuple[str, ...], channels: int, inplace: bool = True) -> list[nn.Module]:
    make = {"bn": lambda: nn.BatchNorm2d(channels), "relu": lambda: nn.ReLU(inplace=inplace)}
    return [make[name]() for name in names]


def first_branch_bn(unit: ResidualUnit) -> nn.BatchNorm2d:
    """The BN after the branch's first conv: every unit of Fig. 4 puts BN-ReLU between its convs."""
    return unit.branch[1]


def branch_output_scale(unit: ResidualUnit) -> nn.Module:
    """The last layer that scales a residual branch's output: its last BN where the branch ends
    in one, else its last conv (as timm's zero_init_last). Zeroing its weight makes the unit
    start as the identity (Goyal et al. 2017) while the layer still gets a gradient. A branch
    that ends in a ReLU (relu_before_add) has none; ModelSpec.check refuses that combination."""
    return unit.branch[-1]


class ResidualUnit(nn.Module):
    """branch(x) + shortcut(x), laid out by the unit's row of UNIT_LAYOUTS; with shortcut="none",
    branch(x) alone, which makes the plain nets of He 2015 Sec. 4.2 from the same layers.

    `entry` (PREACT_ENTRIES) says where a pre-activation unit applies its `before` layers: a
    stage's first unit applies them before the split, so its shortcut, whatever its kind, takes
    the activated input (fb.resnet.torch preresnet.lua 'both_preact'; He's resnet-pre-act.lua:62-66);
    the other units apply them inside the branch and add the raw input."""

    def __init__(self, shape: BlockShape, in_channels: int, width: int, stride: int = 1, *, unit: str = "original",
                 relu_after_add: bool | None = None, shortcut: str = "B", dropout: float = 0.0,
                 entry: str = "branch", stride_on: str = "3x3", projection_bn: bool | None = None):
        super().__init__()
        self.layout = layout = layout_for(unit, relu_after_add)
        convs = shape.convs(in_channels, width, stride, stride_on)
        out_channels = convs[-1].out_channels
        # Not in place when the shortcut still needs the input (relu_only_preact's bare ReLU).
        before = layout.before if entry != "none" else ()
        self.preact = nn.Sequential(*_layers(before, in_channels, inplace=before[:1] != ("relu",)))
        self.shortcut_sees_preact = entry == "both"
        layers: list[nn.Module] = [convs[0]]
        for i, conv in enumerate(convs[1:], 1):
            layers += _layers(("bn", "relu"), convs[i - 1].out_channels)
            if i == len(convs) - 1 and dropout > 0:
                layers.append(nn.Dropout(dropout))
            layers.append(conv)
        self.branch = nn.Sequential(*layers, *_layers(layout.after_last, out_channels))
        with_bn = not layout.preact if projection_bn is None else projection_bn
        self.shortcut = make_shortcut(shortcut, in_channels, out_channels, stride, with_bn=with_bn)
        self.after_add = nn.Sequential(*_layers(layout.after_add, out_channels))
        self.out_channels = out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.preact(x)
        out = self.branch(y)
        if self.shortcut is not None:
            out = out + self.shortcut(y if self.shortcut_sees_preact else x)
        return self.after_add(out)
