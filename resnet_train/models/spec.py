"""What a network is, as data: `ModelSpec`, the families' depth rules, and every rule a model
must obey. This module is the one home of those rules; the config schema uses `ModelSpec` as its
`model` section, and its errors name the key they concern."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

from .blocks import BLOCK_SHAPES, BOTTLENECK_STRIDES, PREACT_ENTRIES, SHORTCUTS, UNIT_LAYOUTS, UNITS, layout_for
from .init import INIT_SCHEMES

STEMS = ("cifar", "imagenet")

# He 2015 Table 1 and He 2016 (ResNet-200): ImageNet depth -> (block, units per stage).
IMAGENET_DEPTHS = {
    18: ("basic", (2, 2, 2, 2)),
    34: ("basic", (3, 4, 6, 3)),
    50: ("bottleneck", (3, 4, 6, 3)),
    101: ("bottleneck", (3, 4, 23, 3)),
    152: ("bottleneck", (3, 8, 36, 3)),
    200: ("bottleneck", (3, 24, 36, 3)),
}


@dataclass(frozen=True)
class Family:
    """A family fixes how depth is counted and which unit is the default; the unit alone decides
    the layer order. So `family=preresnet` is `family=resnet unit=full_preact`, and a family with
    an explicit `unit` differs from the other only in its depth rule."""

    default_unit: str
    cifar_offset: int  # CIFAR depth = 6n + offset with basic blocks, 9n + offset with bottlenecks
    imagenet: bool  # the ImageNet stem and depths of IMAGENET_DEPTHS apply


FAMILIES = {
    "resnet": Family("original", cifar_offset=2, imagenet=True),  # He 2015 Sec. 4.2
    "preresnet": Family("full_preact", cifar_offset=2, imagenet=True),  # He 2016
    # Zagoruyko & Komodakis 2016 count the projection convs too: depth = 6n + 4, basic blocks.
    "wrn": Family("full_preact", cifar_offset=4, imagenet=False),
}


class ModelError(ValueError):
    """An invalid model setting. `key` is the ModelSpec field at fault; `describe(prefix)` writes
    the message under the name the user typed (e.g. prefix "model." for the config)."""

    def __init__(self, key: str, value: Any, problem: str):
        self.key, self.value, self.problem = key, value, problem
        super().__init__(self.describe())

    def describe(self, prefix: str = "") -> str:
        return f"{prefix}{self.key}={self.value!r} {self.problem}"


def _choice(key: str, value: Any, choices) -> None:
    if value not in choices:
        raise ModelError(key, value, f"is not valid; choose one of {', '.join(choices)}")


def _nearest(value: int, valid: list[int]) -> str:
    below = [d for d in valid if d < value]
    above = [d for d in valid if d > value]
    return " or ".join(str(d) for d in ([below[-1]] if below else []) + ([above[0]] if above else []))


@dataclass
class ModelSpec:
    """A network of the model space. Each preset in conf/model sets these fields."""

    family: str = "resnet"  # resnet | preresnet | wrn (FAMILIES)
    depth: int = 20  # layers with weights, counted as each paper counts them
    block: str = "basic"  # basic | bottleneck
    stem: str = "cifar"  # cifar (32 px) | imagenet (224 px)
    unit: Optional[str] = None  # Identity Mappings Fig. 4 unit (UNIT_LAYOUTS); null: the family's own
    relu_after_add: Optional[bool] = None  # Torch blog switch; null: the unit's own definition
    shortcut: str = "A"  # A | B | C (He 2015 Sec. 3.3) | none (the plain nets of Sec. 4.2)
    widen_factor: int = 1
    dropout: float = 0.0  # probability, before the last conv of each unit
    zero_init_residual: bool = False
    init: str = "fb"  # fb | gcr | gcr_fec67c0 | wrn: as that reference code initialised (init.INIT_SCHEMES)
    bottleneck_stride: str = "3x3"  # 3x3 (torchvision, fb.resnet.torch) | 1x1 (He 2016's code)
    # Every BN's running statistics: new = (1 - m) * old + m * batch (Torch7's and PyTorch's rule,
    # 0.1 by default in both). null: the average of the epoch's batches so far, restarted at each
    # epoch: gcr's "dynamic" momentum 1 / (1 + n) (the Torch blog's BN momentum table).
    bn_momentum: Optional[float] = 0.1
    # A projection shortcut (B, C) is conv-BN in post-activation units, a bare conv in
    # pre-activation ones (fb.resnet.torch models/resnet.lua and preresnet.lua@985e569:33-36);
    # true/false forces either (fb.resnet.torch's released ResNet-18/34/50 have no BN there).
    projection_bn: Optional[bool] = None
    # Where the first unit of each stage of a pre-activation net applies BN-ReLU: null: before the
    # split ("both"; ImageNet stage 1: "none", the stem ends in BN-ReLU), as fb.resnet.torch@985e569
    # and He's code; "branch": inside the branch like every other unit, the shortcut taking the raw
    # input, as fb.resnet.torch@c530106 (its released ResNet-200); "both"/"none" force those.
    stage_entry: Optional[str] = None

    @property
    def resolved_unit(self) -> str:
        return self.unit or FAMILIES[self.family].default_unit

    @property
    def label(self) -> str:
        """resnet-110, preresnet-1001, wrn-28-10, plain-56: the names the papers use."""
        widen = f"-{self.widen_factor}" if self.family == "wrn" else ""
        return f"{'plain' if self.plain else self.family}-{self.depth}{widen}"

    @property
    def layout_text(self) -> str:
        """'basic blocks, original unit, shortcut A', and the structural keys set away from null."""
        shortcut = f"shortcut {self.shortcut}"
        if self.projection_bn is not None:
            shortcut += " with BN" if self.projection_bn else " without BN"
        entry = f", stage entry {self.stage_entry}" if self.stage_entry else ""
        return f"{self.block} blocks, {self.resolved_unit} unit, {shortcut}{entry}"

    @property
    def plain(self) -> bool:
        return self.shortcut == "none"

    def check(self, num_classes: int = 10) -> tuple[int, ...]:
        """Raises ModelError for the first rule broken, without building anything; returns the
        units per stage."""
        _choice("family", self.family, FAMILIES)
        _choice("stem", self.stem, STEMS)
        _choice("block", self.block, BLOCK_SHAPES)
        _choice("shortcut", self.shortcut, SHORTCUTS)
        _choice("bottleneck_stride", self.bottleneck_stride, BOTTLENECK_STRIDES)
        _choice("init", self.init, INIT_SCHEMES)
        if self.unit is not None:
            _choice("unit", self.unit, UNITS)
        if self.stage_entry is not None:
            _choice("stage_entry", self.stage_entry, PREACT_ENTRIES)
        if not isinstance(self.widen_factor, int) or isinstance(self.widen_factor, bool) or self.widen_factor <= 0:
            raise ModelError("widen_factor", self.widen_factor, "must be a positive integer")
        if not 0.0 <= self.dropout < 1.0:
            raise ModelError("dropout", self.dropout, "must lie in [0, 1)")
        if self.bn_momentum is not None and not 0.0 < self.bn_momentum <= 1.0:
            raise ModelError("bn_momentum", self.bn_momentum, "must lie in (0, 1] (each batch's weight in BN's running "
                                                              "statistics; 0 would never update them), or be null for "
                                                              "the average over each epoch")
        if not isinstance(num_classes, int) or num_classes < 1:
            raise ModelError("num_classes", num_classes, "must be a positive integer")
        layout = UNIT_LAYOUTS[self.resolved_unit]
        if self.relu_after_add and "relu" not in layout.after_add:
            raise ModelError("relu_after_add", True, f"but unit {self.resolved_unit} has no ReLU after the "
                                                     f"addition; leave relu_after_add unset")
        if self.zero_init_residual and layout.after_last[-1:] == ("relu",):
            raise ModelError("zero_init_residual", True, f"cannot zero a branch that ends in a ReLU (unit "
                                                         f"{self.resolved_unit}): it would output 0 and never get a "
                                                         f"gradient; leave zero_init_residual false")
        if self.projection_bn is not None and self.shortcut not in ("B", "C"):
            raise ModelError("projection_bn", self.projection_bn, f"but shortcut {self.shortcut} has no projection; "
                                                                  f"use shortcut B or C, or leave projection_bn unset")
        if self.stage_entry is not None and not layout.preact:
            raise ModelError("stage_entry", self.stage_entry, f"but unit {self.resolved_unit} has no pre-activation "
                                                              f"to place; leave stage_entry unset")
        if self.plain:
            self._check_plain()
        return self._units_per_stage()

    def _check_plain(self) -> None:
        """He 2015 defines the plain net (Sec. 4.2, Fig. 3 middle) with the original unit's layers:
        conv-BN-ReLU throughout. Without the addition, the other units of Identity Mappings Fig. 4
        give that same stack with its first or last layer moved, so they are refused as undefined."""
        if self.resolved_unit != "original":
            raise ModelError("shortcut", "none", f"(a plain net, He 2015 Sec. 4.2) is defined with unit=original only, "
                                                 f"not {self.resolved_unit}: without the addition the units of "
                                                 f"Identity Mappings Fig. 4 are one conv-BN-ReLU stack; use "
                                                 f"family=resnet and leave unit unset")
        if "relu" not in layout_for(self.resolved_unit, self.relu_after_add).after_add:
            raise ModelError("relu_after_add", False, "with shortcut=none leaves no nonlinearity between two "
                                                      "units' convs; leave relu_after_add unset")
        if self.zero_init_residual:
            raise ModelError("zero_init_residual", True, "with shortcut=none zeroes every unit's output, and the "
                                                         "net would output a constant; leave zero_init_residual false")

    def _units_per_stage(self) -> tuple[int, ...]:
        family = FAMILIES[self.family]
        if self.stem == "imagenet":
            if not family.imagenet:
                raise ModelError("family", self.family, "is a CIFAR family; use stem=cifar")
            if self.depth not in IMAGENET_DEPTHS:
                valid = sorted(IMAGENET_DEPTHS)
                raise ModelError("depth", self.depth, f"is not an ImageNet ResNet depth; choose one of {valid} "
                                                      f"(nearest valid: {_nearest(self.depth, valid)})")
            block, units = IMAGENET_DEPTHS[self.depth]
            if block != self.block:
                same = [d for d, (b, _) in sorted(IMAGENET_DEPTHS.items()) if b == self.block]
                raise ModelError("block", self.block, f"does not fit ImageNet depth {self.depth}, which uses {block} "
                                                      f"blocks; {self.block} depths are {same}")
            return units
        # CIFAR nets (He 2015 Sec. 4.2): 3 stages of n units of 2 or 3 convs, plus the stem conv and fc.
        if self.family == "wrn" and self.block != "basic":
            raise ModelError("block", self.block, "does not fit wrn, which uses basic blocks; set block=basic")
        step = 6 if self.block == "basic" else 9
        offset = family.cifar_offset
        n, rest = divmod(self.depth - offset, step)
        if rest or n < 1:
            valid = [step * k + offset for k in range(1, max(self.depth // step, 0) + 2)]
            raise ModelError("depth", self.depth, f"does not fit {self.family} with {self.block} blocks on CIFAR, "
                                                  f"whose depth is {step}n+{offset} (n >= 1); nearest valid: "
                                                  f"{_nearest(self.depth, valid)}")
        return (n, n, n)
