"""The published figures this project is held against, in one place. The report's tables, the
experiment files' checks and the model tests read them from here; the experiment files name the
table they come from, not the number.

Errors are percent: test error on CIFAR-10, CIFAR-100 or SVHN, or ImageNet single-crop top-1 error. Each
arm's figures are keyed by the data= option of the runs they can stand beside.
"""

from __future__ import annotations

from dataclasses import dataclass

HE2015 = "He et al. 2015 (arXiv 1512.03385)"
HE2016 = "He et al. 2016 (arXiv 1603.05027)"
WRN = "Zagoruyko & Komodakis 2016 (arXiv 1605.07146)"
# The blog's CIFAR tables are gcr/torch-residual-networks' README tables (docs/fidelity.md).
BLOG = "Torch blog (gcr/torch-residual-networks, 2016)"
FB = "fb.resnet.torch (Torch blog, 2016)"

# (experiment arm, model label) -> CIFAR-10 test error, percent.
CIFAR10: dict[tuple[str, str], float] = {
    # He 2015 Table 6.
    ("he2015/resnet20", "resnet-20"): 8.75,
    ("he2015/resnet32", "resnet-32"): 7.51,
    ("he2015/resnet44", "resnet-44"): 7.17,
    ("he2015/resnet56", "resnet-56"): 6.97,
    ("he2015/resnet110", "resnet-110"): 6.43,
    ("he2015/resnet1202", "resnet-1202"): 7.93,
    # Torch blog, BN and ReLU around the addition (gcr README; ResNet-20 with the code at fec67c0).
    ("blog/original", "resnet-110"): 6.97,
    ("blog/no_relu_after_add", "resnet-110"): 6.32,
    ("blog/bn_after_add", "resnet-110"): 13.56,
    ("blog/bn_after_add_no_relu", "resnet-110"): 12.30,
    ("blog/resnet20/original", "resnet-20"): 8.29,
    ("blog/resnet20/no_relu_after_add", "resnet-20"): 8.62,
    ("blog/resnet20/bn_after_add", "resnet-20"): 8.34,
    ("blog/resnet20/bn_after_add_no_relu", "resnet-20"): 8.23,
    # Torch blog, solvers at each base LR (gcr README@f0d0a17:246-254 for ResNet-110, 214-221 for
    # ResNet-20; the reference arm is SGD with Nesterov, blog/original).
    ("blog/rmsprop_lr1e-4", "resnet-110"): 14.82,
    ("blog/rmsprop_lr1e-3", "resnet-110"): 8.21,
    ("blog/rmsprop", "resnet-110"): 7.68,
    ("blog/rmsprop_lr1e-1", "resnet-110"): 10.98,
    ("blog/adadelta", "resnet-110"): 8.88,
    ("blog/adagrad_lr1e-3", "resnet-110"): 30.22,
    ("blog/adagrad_lr1e-2", "resnet-110"): 13.21,
    ("blog/adagrad", "resnet-110"): 11.45,
    ("blog/resnet20/rmsprop_lr1e-4", "resnet-20"): 16.77,
    ("blog/resnet20/rmsprop_lr1e-3", "resnet-20"): 10.55,
    ("blog/resnet20/rmsprop", "resnet-20"): 9.45,
    ("blog/resnet20/adadelta", "resnet-20"): 10.93,
    ("blog/resnet20/adagrad_lr1e-3", "resnet-20"): 35.36,
    ("blog/resnet20/adagrad_lr1e-2", "resnet-20"): 16.03,
    ("blog/resnet20/adagrad", "resnet-20"): 12.55,
    # Torch blog, BN momentum (ResNet-20; gcr README@f0d0a17:286-289; reference: momentum 0.1).
    ("blog/resnet20/bn_momentum_1", "resnet-20"): 8.63,
    ("blog/resnet20/bn_momentum_1e-2", "resnet-20"): 8.35,
    ("blog/resnet20/bn_momentum_dynamic", "resnet-20"): 8.22,
    # Identity Mappings Table 2 (units, ResNet-110 and ResNet-164) and Table 3 (ResNet-1001, batch 128).
    ("identity_mappings/original", "resnet-110"): 6.61,
    ("identity_mappings/bn_after_add", "resnet-110"): 8.17,
    ("identity_mappings/relu_before_add", "resnet-110"): 7.84,
    ("identity_mappings/relu_only_preact", "resnet-110"): 6.71,
    ("identity_mappings/full_preact", "resnet-110"): 6.37,
    ("identity_mappings/original", "resnet-164"): 5.93,
    ("identity_mappings/bn_after_add", "resnet-164"): 6.50,
    ("identity_mappings/relu_before_add", "resnet-164"): 6.14,
    ("identity_mappings/relu_only_preact", "resnet-164"): 5.91,
    ("identity_mappings/full_preact", "resnet-164"): 5.46,
    ("identity_mappings/preresnet1001", "preresnet-1001"): 4.92,
    # WRN Table 4 (CIFAR-10; dropout 0.3 for the dropout arm).
    ("wrn/wrn_28_10", "wrn-28-10"): 4.00,
    ("wrn/wrn_28_10_dropout", "wrn-28-10"): 3.89,
    ("wrn/wrn_16_8", "wrn-16-8"): 4.27,
    ("wrn/wrn_40_4", "wrn-40-4"): 4.53,
    # The WRN code's README, one run (szagoruyko/wide-residual-networks@ae6d0d0:README.md:46-51).
    ("wrn/wrn_40_10_dropout", "wrn-40-10"): 3.8,
}

# The same arms on CIFAR-100, where a reference's README gives the figure: the WRN code's tables
# (szagoruyko/wide-residual-networks@ae6d0d0:README.md:37-44, which quotes the pre-activation rows
# from Identity Mappings Table 3, and 46-51). The other CIFAR-100 figures are in the papers' tables only.
CIFAR100: dict[tuple[str, str], float] = {
    ("identity_mappings/full_preact", "resnet-164"): 24.33,
    ("identity_mappings/preresnet1001", "preresnet-1001"): 22.71,
    ("wrn/wrn_28_10", "wrn-28-10"): 19.25,
    ("wrn/wrn_28_10_dropout", "wrn-28-10"): 18.85,
    ("wrn/wrn_40_10_dropout", "wrn-40-10"): 18.3,  # README.md:46-51, one run
}

# SVHN (train and extra), the WRN code's README table (szagoruyko/wide-residual-networks@5e7ed6c:README.md:52).
SVHN: dict[tuple[str, str], float] = {
    ("wrn/svhn_wrn_16_8_dropout", "wrn-16-8"): 1.54,
}

# fb.resnet.torch README, single-crop top-1 error, percent.
IMAGENET: dict[tuple[str, str], float] = {
    ("imagenet/resnet18", "resnet-18"): 30.43,
    ("imagenet/resnet34", "resnet-34"): 26.73,
    ("imagenet/resnet50", "resnet-50"): 24.01,
    ("imagenet/resnet101", "resnet-101"): 22.44,
    ("imagenet/resnet152", "resnet-152"): 22.16,
    ("imagenet/preresnet200", "preresnet-200"): 21.66,
}

# data= option -> (experiment arm, model label) -> published error on that data.
ERRORS: dict[str, dict[tuple[str, str], float]] = {"cifar10": CIFAR10, "cifar100": CIFAR100, "svhn": SVHN,
                                                   "imagefolder": IMAGENET}


@dataclass(frozen=True)
class Statistic:
    """What a published error is, where its source says it is more than one run's figure."""

    kind: str  # best | median: of `runs` runs
    runs: int
    source: str
    mean: float | None = None  # the source's mean and std of those runs, where it gives them
    std: float | None = None

    def __str__(self) -> str:
        return f"{self.kind} of {self.runs}"


# (experiment arm, model label, data= option) -> the statistic; a figure not listed is one run's, or
# its source does not say. The report's published deltas use `comparable`.
_WRN_README = Statistic("median", 5, "szagoruyko/wide-residual-networks README")
STATISTICS: dict[tuple[str, str, str], Statistic] = {
    # He 2015 Table 6 caption: "For ResNet-110, we run it 5 times and show 'best (mean±std)'"; gcr's
    # README footnote 2 says the same (gcr/torch-residual-networks@f0d0a17:README.md:82-83).
    ("he2015/resnet110", "resnet-110", "cifar10"): Statistic("best", 5, "He 2015 Table 6", 6.61, 0.16),
    # KaimingHe/resnet-1k-layers@fde7ee9:README.md:48-50, "median (mean+/-std)", batch 128.
    ("identity_mappings/preresnet1001", "preresnet-1001", "cifar10"):
        Statistic("median", 5, "KaimingHe/resnet-1k-layers README", 4.89, 0.14),
    # szagoruyko/wide-residual-networks@ae6d0d0:README.md:37, "meanstd normalization, median of 5 runs",
    # for both columns of its table.
    **{(arm, "wrn-28-10", data): _WRN_README
       for arm in ("wrn/wrn_28_10", "wrn/wrn_28_10_dropout") for data in ("cifar10", "cifar100")},
}

# Model preset (conf/model) -> parameters on CIFAR-10 (He 2015 Table 6, He 2016 Table 3, WRN Table 4).
PARAMS: dict[str, float] = {
    "resnet20": 0.27e6, "resnet32": 0.46e6, "resnet44": 0.66e6, "resnet56": 0.85e6, "resnet110": 1.7e6,
    "resnet1202": 19.4e6, "preresnet164": 1.7e6, "preresnet1001": 10.2e6,
    "wrn_16_4": 2.7e6, "wrn_16_8": 11.0e6, "wrn_28_10": 36.5e6, "wrn_40_4": 8.9e6,
}

# (model preset, image size in pixels) -> multiply-accumulates per image. ResNet-50: torchvision's
# model card (4.09 GMACs; He 2015 Table 1 says 3.8e9 multiply-adds). The CIFAR nets: no paper table
# gives them; these are the figures usually quoted for the architectures, a check on the counter.
MACS: dict[tuple[str, int], float] = {
    ("resnet20", 32): 41e6, ("resnet110", 32): 253e6, ("wrn_28_10", 32): 5.25e9, ("resnet50", 224): 4.1e9,
}


def dataset(experiment: str) -> str:
    """The data= option of the arm's own recipe, whose published figures the report's orderings
    use: the first table of ERRORS that holds the arm (CIFAR-10 for an arm also published on
    CIFAR-100), CIFAR-10 for an arm with no published figure."""
    return next((data for data, table in ERRORS.items() if any(arm == experiment for arm, _ in table)), "cifar10")


def error(experiment: str, model: str, data: str | None = None) -> float | None:
    """The published error of an arm on `data` (default: its recipe's, `dataset`); None where no
    source read here gives one, e.g. on the shipped sample."""
    return ERRORS.get(data or dataset(experiment), {}).get((experiment, model))


def statistic(experiment: str, model: str, data: str | None = None) -> Statistic | None:
    return STATISTICS.get((experiment, model, data or dataset(experiment)))


def comparable(experiment: str, model: str, data: str | None = None) -> float | None:
    """The published figure to set beside a mean over seeds: the source's mean where it gives one
    (He 2015's ResNet-110: 6.61, not the best run's 6.43), else the published error."""
    stat = statistic(experiment, model, data)
    return stat.mean if stat and stat.mean is not None else error(experiment, model, data)
