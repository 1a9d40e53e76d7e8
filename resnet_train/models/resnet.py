"""The one network skeleton and the builders that fill it with stage data.

A network is a stem, a list of stages (depth, width, stride), and a head. The residual
unit class and the branch shape are arguments, as in torchvision's resnet.py; every named
network in the papers is a choice of those data, made by `build_model`.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Callable

import torch
from torch import nn

from .blocks import (
    BLOCK_SHAPES,
    BOTTLENECK_STRIDES,
    PRE_ACTIVATION_UNITS,
    SHORTCUTS,
    UNITS,
    PostActUnit,
    PreActUnit,
    branch_output_scale,
)

FAMILIES = ("resnet", "preresnet", "wrn")
STEMS = ("cifar", "imagenet")

# He 2015 Table 1 and He 2016 (ResNet-200): depth -> (shape, units per stage).
IMAGENET_DEPTHS = {
    18: ("basic", (2, 2, 2, 2)),
    34: ("basic", (3, 4, 6, 3)),
    50: ("bottleneck", (3, 4, 6, 3)),
    101: ("bottleneck", (3, 4, 23, 3)),
    152: ("bottleneck", (3, 8, 36, 3)),
    200: ("bottleneck", (3, 24, 36, 3)),
}


@dataclass(frozen=True)
class Stage:
    depth: int  # residual units
    width: int  # channels inside the unit; the unit outputs width * expansion
    stride: int
    entry: str = "both"  # how the stage's first pre-activation unit activates (blocks.PREACT_ENTRIES)


class Stem(nn.Sequential):
    pass


def cifar_stem(out_channels: int, activate: bool) -> Stem:
    """3x3 conv with 16 channels (He 2015 Sec. 4.2). A pre-activation network leaves BN-ReLU to
    its first unit."""
    layers: list[nn.Module] = [nn.Conv2d(3, out_channels, 3, padding=1, bias=False)]
    if activate:
        layers += [nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True)]
    return Stem(*layers)


def imagenet_stem(out_channels: int) -> Stem:
    """7x7 stride-2 conv, BN, ReLU, 3x3 stride-2 max-pool (He 2015 Table 1)."""
    return Stem(nn.Conv2d(3, out_channels, 7, stride=2, padding=3, bias=False), nn.BatchNorm2d(out_channels),
                nn.ReLU(inplace=True), nn.MaxPool2d(3, stride=2, padding=1))


class ResNet(nn.Module):
    """Stem, residual stages, optional final BN-ReLU (pre-activation nets), global pool, linear."""

    def __init__(self, stem: Stem, stem_channels: int, stages: list[Stage], make_unit: Callable[..., nn.Module],
                 num_classes: int, final_bn_relu: bool):
        super().__init__()
        self.stem = stem
        channels = stem_channels
        self.stages = nn.ModuleList()
        for stage in stages:
            units = []
            for i in range(stage.depth):
                first = i == 0
                unit = make_unit(channels, stage.width, stage.stride if first else 1,
                                 entry=stage.entry if first else "branch")
                channels = unit.out_channels
                units.append(unit)
            self.stages.append(nn.Sequential(*units))
        head: list[nn.Module] = [nn.BatchNorm2d(channels), nn.ReLU(inplace=True)] if final_bn_relu else []
        self.final_act = nn.Sequential(*head)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(channels, num_classes)
        self.out_channels = channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for stage in self.stages:
            x = stage(x)
        x = self.pool(self.final_act(x))
        return self.fc(torch.flatten(x, 1))


def init_weights(model: nn.Module, zero_init_residual: bool = False) -> None:
    """As fb.resnet.torch (models/preresnet.lua@985e569:197-223): convs N(0, sqrt(2 / (k*k*C_out))),
    He et al. 2015's fan-out normal; BN weight 1, bias 0; the classifier's bias 0 (its weight
    keeps PyTorch's default, Torch7's U(+-1/sqrt(fan_in))). Optionally zero the layer that scales
    each residual branch's output so every unit starts as the identity (Goyal et al. 2017)."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.zeros_(m.bias)
    if zero_init_residual:
        for m in model.modules():
            if isinstance(m, (PostActUnit, PreActUnit)):
                nn.init.zeros_(branch_output_scale(m).weight)


def _nearest(depth: int, valid: list[int]) -> str:
    below = [d for d in valid if d < depth]
    above = [d for d in valid if d > depth]
    near = ([below[-1]] if below else []) + ([above[0]] if above else [])
    return " or ".join(str(d) for d in near)


def _units_per_stage(family: str, stem: str, block: str, depth: int) -> tuple[int, ...]:
    if stem == "imagenet":
        if family == "wrn":
            raise ValueError("wrn is a CIFAR family; use stem=cifar")
        if depth not in IMAGENET_DEPTHS:
            valid = sorted(IMAGENET_DEPTHS)
            raise ValueError(f"ImageNet ResNet depth must be one of {valid}; got {depth} "
                             f"(nearest valid: {_nearest(depth, valid)})")
        shape, units = IMAGENET_DEPTHS[depth]
        if shape != block:
            same = [d for d, (s, _) in sorted(IMAGENET_DEPTHS.items()) if s == block]
            raise ValueError(f"ImageNet depth {depth} uses {shape} blocks; {block} depths are {same}")
        return units
    # CIFAR nets (He 2015 Sec. 4.2): 3 stages of n units, 2 or 3 convs each, plus stem conv and fc.
    if family == "wrn":
        if block != "basic":
            raise ValueError("wrn uses basic blocks; set block=basic")
        # Zagoruyko & Komodakis 2016 count the projection convs too: depth = 6n + 4.
        step, offset, rule = 6, 4, "6n+4"
    else:
        step, offset, rule = (6, 2, "6n+2") if block == "basic" else (9, 2, "9n+2")
    n, rest = divmod(depth - offset, step)
    if rest or n < 1:
        valid = [step * k + offset for k in range(1, depth // step + 2)]
        raise ValueError(f"{family} depth with {block} blocks on CIFAR must be {rule} (n >= 1); "
                         f"got {depth} (nearest valid: {_nearest(depth, valid)})")
    return (n, n, n)


def default_unit(family: str) -> str:
    return "original" if family == "resnet" else "full_preact"


def check_model_args(family: str, depth: int, *, num_classes: int, block: str, stem: str, unit: str | None,
                     relu_after_add: bool | None, shortcut: str, widen_factor: int, dropout: float,
                     bottleneck_stride: str = "3x3", zero_init_residual: bool = False) -> tuple[int, ...]:
    """Rejects every invalid combination with a ValueError that names the rule, without building
    anything; returns the units per stage."""
    if family not in FAMILIES:
        raise ValueError(f"unknown model family {family!r}; choose one of {', '.join(FAMILIES)}")
    if stem not in STEMS:
        raise ValueError(f"unknown stem {stem!r}; choose one of {', '.join(STEMS)}")
    if block not in BLOCK_SHAPES:
        raise ValueError(f"unknown block {block!r}; choose one of {', '.join(BLOCK_SHAPES)}")
    if shortcut not in SHORTCUTS:
        raise ValueError(f"unknown shortcut {shortcut!r}; choose one of {', '.join(SHORTCUTS)}")
    if not isinstance(widen_factor, int) or isinstance(widen_factor, bool) or widen_factor <= 0:
        raise ValueError(f"widen_factor must be a positive integer, got {widen_factor!r}")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout must lie in [0, 1), got {dropout}")
    if not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive integer, got {num_classes!r}")
    if unit is not None and unit not in UNITS:
        raise ValueError(f"unknown unit {unit!r}; choose one of {', '.join(UNITS)}")
    unit = unit or default_unit(family)
    if relu_after_add and unit not in ("original", "bn_after_add"):
        raise ValueError(f"unit {unit} has no ReLU after the addition; leave relu_after_add unset")
    if bottleneck_stride not in BOTTLENECK_STRIDES:
        raise ValueError(f"unknown bottleneck_stride {bottleneck_stride!r}; choose one of "
                         f"{', '.join(BOTTLENECK_STRIDES)}")
    if zero_init_residual and unit == "relu_before_add":
        raise ValueError("zero_init_residual cannot zero a branch that ends in a ReLU (unit relu_before_add): "
                         "it would output 0 and never get a gradient; leave zero_init_residual false")
    return _units_per_stage(family, stem, block, depth)


def build_model(family: str = "resnet", depth: int = 20, *, num_classes: int = 10, block: str = "basic",
                stem: str = "cifar", unit: str | None = None, relu_after_add: bool | None = None,
                shortcut: str = "A", widen_factor: int = 1, dropout: float = 0.0,
                zero_init_residual: bool = False, bottleneck_stride: str = "3x3") -> ResNet:
    """Build any network of the model space.

    family: resnet (He 2015), preresnet (He 2016) or wrn (Zagoruyko & Komodakis 2016). The
        family sets the depth rule and the default unit: original for resnet, full_preact for
        preresnet and wrn. wrn widens the CIFAR stages to 16k, 32k, 64k.
    unit: one of Identity Mappings Table 2's units (see blocks.py); None takes the family's.
    relu_after_add: the Torch blog's switch; None means the unit's own definition (on for
        original and bn_after_add, absent in the others).
    shortcut: A (pad), B (project where the shape changes) or C (project everywhere).
    bottleneck_stride: the conv of a bottleneck that strides, 3x3 (torchvision, fb.resnet.torch)
        or 1x1 (He's Identity Mappings code); basic blocks ignore it.
    """
    units = check_model_args(family, depth, num_classes=num_classes, block=block, stem=stem, unit=unit,
                             relu_after_add=relu_after_add, shortcut=shortcut, widen_factor=widen_factor,
                             dropout=dropout, bottleneck_stride=bottleneck_stride,
                             zero_init_residual=zero_init_residual)
    unit = unit or default_unit(family)
    shape = BLOCK_SHAPES[block]
    if stem == "cifar":
        stem_channels, base_widths = 16, (16, 32, 64)
    else:
        stem_channels, base_widths = 64, (64, 128, 256, 512)
    strides = (1,) + (2,) * (len(units) - 1)
    preact = unit in PRE_ACTIVATION_UNITS
    # Every stage's first pre-activation unit activates before the split, but on ImageNet the
    # stem ends in BN-ReLU and max-pool, so stage 1's first unit does not (fb.resnet.torch
    # preresnet.lua@985e569:114-125,150: 'first' -> 'no_preact').
    entries = ["none" if stem == "imagenet" and i == 0 else "both" for i in range(len(units))]
    stages = [Stage(d, w * widen_factor, s, e)
              for d, w, s, e in zip(units, base_widths[:len(units)], strides, entries, strict=True)]

    if preact:
        make_unit = partial(PreActUnit, shape, shortcut=shortcut, unit=unit, dropout=dropout,
                            stride_on=bottleneck_stride)
        stem_module = imagenet_stem(stem_channels) if stem == "imagenet" else cifar_stem(stem_channels, False)
    else:
        if relu_after_add is None:
            relu_after_add = unit != "relu_before_add"

        def make_unit(in_channels: int, width: int, stride: int, entry: str) -> PostActUnit:
            return PostActUnit(shape, in_channels, width, stride, shortcut=shortcut, unit=unit,
                               relu_after_add=relu_after_add, dropout=dropout, stride_on=bottleneck_stride)

        stem_module = imagenet_stem(stem_channels) if stem == "imagenet" else cifar_stem(stem_channels, True)
    model = ResNet(stem_module, stem_channels, stages, make_unit, num_classes, final_bn_relu=preact)
    init_weights(model, zero_init_residual)
    return model
