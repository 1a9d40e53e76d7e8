"""Our errors beside the published ones, per ablation arm (`resnet-train-report DIR...`).

Reads run folders (summary.json, metrics.jsonl, and last_responses.json where mode=analyze ran)
anywhere below the given folders, groups them by (experiment, model) over seeds, and writes a
Markdown table per published ablation, the checks of the expected orderings, and one PNG per
table of test error against epoch (He 2015 Fig. 6 and Fig. 7 for the plain-net analyses).
"""

from __future__ import annotations

import argparse
import functools
import itertools
import json
import math
import shutil
import statistics
from dataclasses import asdict, dataclass, field
from pathlib import Path

from . import published
from .metrics import flatten


@dataclass(frozen=True)
class Arm:
    experiment: str
    model: str  # model label written by train(): resnet-110, preresnet-1001, wrn-28-10

    @property
    def home(self) -> str:
        """The data= option of the arm's recipe (published.dataset)."""
        return published.dataset(self.experiment)

    def published(self, data: str) -> float | None:
        return published.error(self.experiment, self.model, data)

    def comparable(self, data: str) -> float | None:
        return published.comparable(self.experiment, self.model, data)

    def statistic(self, data: str) -> published.Statistic | None:
        return published.statistic(self.experiment, self.model, data)


@dataclass
class Group:
    title: str
    source: str
    arms: list[Arm]  # the first arm is the reference for deltas
    kind: str = "errors"  # errors: test errors against the published ones; degradation: He 2015 Fig. 6


def _arms(prefix: str, names: list[str], model: str) -> list[Arm]:
    return [Arm(f"{prefix}/{name}", model) for name in names]


BLOG_UNITS = ["original", "no_relu_after_add", "bn_after_add", "bn_after_add_no_relu"]
# gcr's solver tables, row by row (README@f0d0a17:246-254 and 214-221); adam has no published row.
BLOG_OPTIM = ["original", "rmsprop_lr1e-4", "rmsprop_lr1e-3", "rmsprop", "rmsprop_lr1e-1", "adadelta",
              "adagrad_lr1e-3", "adagrad_lr1e-2", "adagrad", "adam"]
BLOG20_OPTIM = ["original", "rmsprop_lr1e-4", "rmsprop_lr1e-3", "rmsprop", "adadelta", "adagrad_lr1e-3",
                "adagrad_lr1e-2", "adagrad"]
BLOG20_BN_MOMENTUM = ["original", "bn_momentum_1", "bn_momentum_1e-2", "bn_momentum_dynamic"]
UNITS = ["original", "bn_after_add", "relu_before_add", "relu_only_preact", "full_preact"]
DEGRADATION_DEPTHS = (20, 32, 44, 56)  # He 2015 Fig. 6 (left and middle)

GROUPS = [
    *(Group(f"Torch blog: BN and ReLU around the addition, {m}", published.BLOG, _arms("blog", BLOG_UNITS, m))
      for m in ("resnet-110", "resnet-56")),
    Group("Torch blog: BN and ReLU around the addition, resnet-20", published.BLOG,
          _arms("blog/resnet20", BLOG_UNITS, "resnet-20")),
    *(Group(f"Torch blog: optimizers, {m} (original = SGD with Nesterov)", published.BLOG,
            _arms("blog", BLOG_OPTIM, m)) for m in ("resnet-110", "resnet-56")),
    Group("Torch blog: optimizers, resnet-20 (original = SGD with Nesterov)", published.BLOG,
          _arms("blog/resnet20", BLOG20_OPTIM, "resnet-20")),
    Group("Torch blog: BN momentum, resnet-20 (original = 0.1)", published.BLOG,
          _arms("blog/resnet20", BLOG20_BN_MOMENTUM, "resnet-20")),
    Group("He 2015 Table 6: depth", published.HE2015,
          [Arm(f"he2015/resnet{d}", f"resnet-{d}") for d in (20, 32, 44, 56, 110, 1202)]),
    Group("He 2015 Fig. 6: plain nets against ResNets by depth (the degradation problem)", published.HE2015,
          [Arm(f"he2015/{family}{d}", f"{family}-{d}") for family in ("plain", "resnet") for d in DEGRADATION_DEPTHS],
          kind="degradation"),
    *(Group(f"Identity Mappings Table 2: residual units, {m}", published.HE2016, _arms("identity_mappings", UNITS, m))
      for m in ("resnet-164", "resnet-110")),
    Group("Identity Mappings Table 3: ResNet-1001", published.HE2016,
          [Arm("identity_mappings/preresnet1001", "preresnet-1001")]),
    Group("Wide ResNets", published.WRN,
          [Arm("wrn/wrn_28_10", "wrn-28-10"), Arm("wrn/wrn_28_10_dropout", "wrn-28-10"),
           Arm("wrn/wrn_16_8", "wrn-16-8"), Arm("wrn/wrn_40_4", "wrn-40-4"),
           Arm("wrn/wrn_40_10_dropout", "wrn-40-10")]),
    Group("Wide ResNets on SVHN", published.WRN, [Arm("wrn/svhn_wrn_16_8_dropout", "wrn-16-8")]),
    Group("Faithfulness: the fast path against the plain fp32 path, ResNet-20, 30 epochs",
          "issue Speed (no published errors: the fast arms must lie within 0.5 points of plain)",
          _arms("speed", ["plain", "fast", "graphs"], "resnet-20")),
    Group("ImageNet: single-crop top-1 error", published.FB,
          [Arm(f"imagenet/{name}", label) for name, label in (
              ("resnet18", "resnet-18"), ("resnet34", "resnet-34"), ("resnet50", "resnet-50"),
              ("resnet101", "resnet-101"), ("resnet152", "resnet-152"), ("preresnet200", "preresnet-200"))]),
]


@dataclass
class Runs:
    """The finished runs of one arm."""

    errors: list[float] = field(default_factory=list)
    seeds: list[int | None] = field(default_factory=list)  # each run's seed, in the order of errors
    best_epochs: list[int] = field(default_factory=list)
    histories: list[list[dict]] = field(default_factory=list)  # each run's metrics.jsonl records ([]: none)
    responses: list[list[float]] = field(default_factory=list)  # each run's layer responses (analysis_of; []: none)
    wall_times: list[float] = field(default_factory=list)  # seconds, every leg of each run
    legs: list[list[float]] = field(default_factory=list)  # [start, end] of every leg of every run, Unix seconds
    unlegged_seconds: float = 0.0  # wall times of summaries without legs, a seeds=K run's members counted once
    img_rates: list[float] = field(default_factory=list)  # each run's training images per second
    devices: set[str] = field(default_factory=set)  # where each run's last leg ran
    datasets: set[str] = field(default_factory=set)  # the runs' data= options (summaries before it: none)
    departures: dict = field(default_factory=dict)  # keys in which the runs' config differs from the recipe's

    def add(self, summary: dict, run: Path) -> None:
        """Adds the finished run in folder `run` (its summary read)."""
        self.errors.append(summary["final_test_err"])
        self.seeds.append(summary.get("seed"))
        self.best_epochs.append(summary["best_epoch"])
        if summary.get("data"):
            self.datasets.add(summary["data"])
        if summary.get("wall_time_s") is not None:
            self.wall_times.append(summary["wall_time_s"])
            if summary.get("legs"):
                self.legs += summary["legs"]
            else:
                self.unlegged_seconds += summary["wall_time_s"] / summary.get("members", 1)
        if summary.get("img_per_s"):
            self.img_rates.append(summary["img_per_s"])
        world = summary.get("world_size", 1)
        self.devices.add(f"{summary.get('device_name', 'unrecorded')}{f' x{world}' if world > 1 else ''}")
        metrics = run / "metrics.jsonl"
        self.histories.append([json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
                              if metrics.is_file() else [])
        self.responses.append(analysis_of(run, summary) or [])

    def curves(self, x: str = "epoch", y: str = "test_err") -> list[dict[int, float]]:
        """Per run: x (epoch or step) -> y (a metrics.jsonl key)."""
        return [{r[x]: r[y] for r in h if y in r} for h in self.histories if h]

    def mean_curve(self, x: str = "epoch", y: str = "test_err") -> tuple[list[int], list[float]]:
        """The runs' mean of y at the x that every run has."""
        curves = self.curves(x, y)
        if not curves:
            return [], []
        xs = sorted(set.intersection(*(set(c) for c in curves)))
        return xs, [statistics.fmean(c[v] for c in curves) for v in xs]

    @property
    def train_errors(self) -> list[float]:
        """The last epoch's training error of each run (percent, over that epoch's batches)."""
        return [err for _, err in self.by_seed("train")]

    def by_seed(self, of: str = "test") -> list[tuple[int | None, float]]:
        """(seed, value) of each run: its final test error ("test"), its last epoch's training
        error ("train", for the runs whose metrics record it) or the mean of its layer responses
        ("response", for the runs analysed)."""
        if of == "test":
            return list(zip(self.seeds, self.errors, strict=True))
        if of == "response":
            return [(seed, statistics.fmean(r)) for seed, r in zip(self.seeds, self.responses, strict=True) if r]
        return [(seed, h[-1]["train_err"]) for seed, h in zip(self.seeds, self.histories, strict=True)
                if h and "train_err" in h[-1]]

    def only_on(self, data: str) -> bool:
        """Whether every run (that recorded its data= option) trained on `data`."""
        return not self.datasets - {data}

    def data(self, default: str) -> str:
        """The runs' data= option ("a, b" where they differ); `default` where none recorded it."""
        return ", ".join(sorted(self.datasets)) or default

    @property
    def machine_seconds(self) -> float:
        """The device time the runs took: the union of their legs, so that runs packed on one GPU
        and a seeds=K run's members count once."""
        return union_seconds(self.legs) + self.unlegged_seconds

    @property
    def n(self) -> int:
        return len(self.errors)

    @property
    def mean(self) -> float:
        return statistics.fmean(self.errors)


def matched(arms: list[Runs | None], of: str = "test") -> tuple[list[float | None], str]:
    """The arms' means of `of` (Runs.by_seed) for setting them against each other: over the seeds
    that every arm ran, so that one seed's luck does not pass for a difference between arms (seeds
    of one arm differ by up to 6 points at screening length: results/README.md). None for an arm
    that is None or has no values. With the means, a note: the seeds used where that left runs out
    ("seed 0"), "unmatched seeds" where no seed is common to every arm (the means are then over
    all runs), else ""."""
    values = [r.by_seed(of) if r else [] for r in arms]
    present = [v for v in values if v]
    common = set.intersection(*({s for s, _ in v if s is not None} for v in present)) if present else set()
    used = [[x for s, x in v if s in common] if common else [x for _, x in v] for v in values]
    means = [statistics.fmean(u) if u else None for u in used]
    if len(present) < 2:
        return means, ""
    if not common:
        return means, "unmatched seeds"
    left_out = any(len(u) < len(v) for u, v in zip(used, values, strict=True))
    return means, f"seed{'s' if len(common) > 1 else ''} {', '.join(map(str, sorted(common)))}" if left_out else ""


def union_seconds(intervals: list[list[float]]) -> float:
    """The length of the union of [start, end] intervals."""
    total, reach = 0.0, float("-inf")
    for start, end in sorted(intervals):
        total += max(0.0, end - max(start, reach))
        reach = max(reach, end)
    return total


def _completed(folders: list[Path]) -> list[tuple[Path, dict]]:
    out, seen = [], set()
    for folder in folders:
        for summary_path in sorted(Path(folder).rglob("summary.json")):
            if summary_path.resolve() in seen:  # folders that overlap: `results results/blog`
                continue
            seen.add(summary_path.resolve())
            summary = json.loads(summary_path.read_text())
            if summary.get("status") == "completed":
                out.append((summary_path, summary))
    return out


def _ended(summary: dict) -> float:
    """When the run's last leg ended (0 for summaries without legs)."""
    return max((end for _, end in summary.get("legs") or []), default=0.0)


def repeated_runs(folders: list[Path]) -> list[tuple[Path, Path]]:
    """(left out, kept): runs of one arm, length and seed found twice, as when a results folder and
    the sweep it was copied from are both given, or a seed was run again. Each seed counts once: the
    run that ended last is kept (on a tie, the one found first)."""
    kept: dict[str, tuple[Path, dict]] = {}
    out = []
    for path, summary in _completed(folders):
        key = json.dumps([summary.get("experiment"), summary.get("model"), summary.get("screening", 1.0),
                          summary.get("seed"), _arm_config(summary)], sort_keys=True)
        if key in kept:
            (old, old_summary) = kept[key]
            newer = _ended(summary) > _ended(old_summary)
            out.append((old, path) if newer else (path, old))
            if not newer:
                continue
        kept[key] = (path, summary)
    return out


def finished_runs(folders: list[Path]):
    """(summary.json path, summary) of every completed run below the folders, each seed of an arm
    once (repeated_runs)."""
    left_out = {path for path, _ in repeated_runs(folders)}
    for summary_path, summary in _completed(folders):
        if summary_path not in left_out:
            yield summary_path, summary


# Keys that say where or how a run ran, not what it trained: runs that differ only in these (and
# in the seed) are seeds of one arm.
NOT_THE_ARM = ("seed", "mode", "device", "ckpt", "resume", "data.root", "data.download", "data.num_workers",
               "train.progress", "train.eval_every", "train.keep_last", "train.eval_batch_size")


# Keys that say how a run ran, not what it trained: a run may set them and still be its recipe.
# The fast path (bf16, channels_last, CUDA graphs, data on the GPU) must reach the plain path's
# error (the speed/ arms check it), so it stands beside the published figures too.
HOW_IT_RAN = (*NOT_THE_ARM, "seeds", "experiment", "train.screening", "train.amp", "train.channels_last",
              "train.compile", "train.cuda_graphs", "data.on_gpu", "train.grad_norm_every", "train.grad_norm_by")
# The command line's choices that a published figure is keyed on: the arm, the network, the data.
RECIPE_AXES = ("experiment", "model", "data")


def _arm_config(summary: dict) -> dict:
    """What the run trained: its config without NOT_THE_ARM (empty for summaries that predate it)."""
    return {k: v for k, v in flatten(summary.get("config") or {}).items() if k not in NOT_THE_ARM}


def _same(a, b) -> bool:
    """Equal config values, floats to rounding (1e-3 written as 0.001), lists and dicts elementwise."""
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, int | float) and isinstance(b, int | float) and not isinstance(a, bool):
        return math.isclose(a, b, rel_tol=1e-9)
    return a == b


@functools.cache
def _recipe_config(overrides: tuple[str, ...]) -> dict | None:
    """The flat config these overrides compose to, None for an experiment file since removed or
    renamed. Cached for the process: Hydra takes about 0.1 s a compose, and arms share recipes."""
    from hydra.errors import HydraException

    from .cli import composed
    from .config import screened
    try:
        return flatten(asdict(screened(composed(list(overrides)))))
    except (HydraException, ValueError):
        return None


def departures(summary: dict) -> dict:
    """A run's departures from its recipe: the keys in which its config differs from the one its
    experiment file composes to for the run's model and data (and screening length). A published
    figure stands beside a run only where there are none."""
    overrides, config = summary.get("overrides"), summary.get("config")
    if not summary.get("experiment") or overrides is None or not config:
        return {}  # no recipe, or a summary that does not record the command line
    axes = tuple(o for o in overrides if o.partition("=")[0] in RECIPE_AXES)
    recipe = _recipe_config((*axes, f"train.screening={summary.get('screening', 1.0)}"))
    if recipe is None:
        return {"experiment": f"{summary['experiment']} (no such experiment file now)"}
    ours = flatten(config)
    return {k: v for k, v in sorted(ours.items())
            if k in recipe and k not in HOW_IT_RAN and not _same(v, recipe[k])}


def _label(values: dict) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(values.items()))


def _variant_labels(configs: list[dict]) -> list[str]:
    """For the configs of one (experiment, model): the values of the keys in which they differ."""
    keys = sorted({k for c in configs for k in c if len({json.dumps(d.get(k)) for d in configs}) > 1})
    return [_label({k: c.get(k) for k in keys}) for c in configs]


def collect(folders: list[Path], screening: float = 1.0) -> dict[tuple[str, str], Runs]:
    """The finished runs of each arm at one length: full recipes (1.0), or screening runs at that
    fraction of the recipe (train.screening). An arm is an (experiment, model) whose runs differ
    only in the seed (and NOT_THE_ARM); where one (experiment, model) holds several configs, each
    is its own arm, its experiment suffixed with the differing values: "blog/original [optim.name=adam]".
    A lone config that departs from its recipe is suffixed with its departures."""
    by_name: dict[tuple[str, str], dict[str, list]] = {}
    for summary_path, summary in finished_runs(folders):
        if summary.get("final_test_err") is None or summary.get("screening", 1.0) != screening:
            continue
        config = _arm_config(summary)
        variants = by_name.setdefault((summary.get("experiment") or "-", summary["model"]), {})
        variants.setdefault(json.dumps(config, sort_keys=True), []).append((summary_path, summary))
    runs: dict[tuple[str, str], Runs] = {}
    for (experiment, model), variants in by_name.items():
        departed_each = [departures(members[0][1]) for members in variants.values()]
        labels = _variant_labels([json.loads(c) for c in variants]) if len(variants) > 1 else [_label(departed_each[0])]
        for label, members, departed in zip(labels, variants.values(), departed_each, strict=True):
            arm = runs.setdefault((f"{experiment} [{label}]" if label else experiment, model), Runs())
            arm.departures = departed
            for summary_path, summary in members:
                arm.add(summary, summary_path.parent)
    return runs


def variants(runs: dict[tuple[str, str], Runs], experiment: str, model: str) -> list[tuple[str, Runs]]:
    """(experiment label, runs) of every config of one (experiment, model) that ran."""
    return sorted((e, r) for (e, m), r in runs.items() if m == model and e.split(" [")[0] == experiment)


RESPONSES = "last_responses.json"  # what mode=analyze writes for a run's last.pt


def ran(group: Group, runs: dict[tuple[str, str], Runs]) -> bool:
    """Whether any arm of the group has runs among `runs`."""
    return any(variants(runs, a.experiment, a.model) for a in group.arms)


def analysis_of(run: Path, summary: dict) -> list[float] | None:
    """The layer responses (std per 3x3 layer) that mode=analyze measured on the finished run's
    final weights (RESPONSES in its folder); None where it has none, or one of other weights (the
    run analysed before it finished, or trained on since)."""
    path = run / RESPONSES
    if not path.is_file() or summary.get("status") != "completed":
        return None
    record = json.loads(path.read_text())
    if record.get("step", summary.get("steps")) != summary.get("steps"):
        return None
    return [layer["std"] for layer in record["layers"]]


def stale_analyses(folders: list[Path]) -> list[Path]:
    """The analyses (RESPONSES) below the folders that the report leaves out (analysis_of)."""
    stale = []
    for folder in folders:
        for path in sorted(Path(folder).rglob(RESPONSES)):
            summary_path = path.parent / "summary.json"
            summary = json.loads(summary_path.read_text()) if summary_path.is_file() else {}
            if analysis_of(path.parent, summary) is None:
                stale.append(path)
    return stale


def unfinished_runs(folders: list[Path]) -> list[Path]:
    """Run folders below the folders that trained (metrics.jsonl or last.pt) but hold no completed
    summary.json: stopped, failed or still running. The report cannot count them."""
    out = set()
    for folder in folders:
        for path in [*Path(folder).rglob("metrics.jsonl"), *Path(folder).rglob("last.pt")]:
            summary = path.parent / "summary.json"
            if not (summary.is_file() and json.loads(summary.read_text()).get("status") == "completed"):
                out.add(path.parent)
    return sorted(out)


def responses_section(runs: dict[tuple[str, str], Runs], out: Path, screening: float = 1.0) -> list[str]:
    """He 2015 Fig. 7: one row and one curve per arm analysed, the layer-wise mean over its runs;
    and the paper's two claims checked on He 2015's arms, each net's mean response over the seeds
    that the nets compared all ran (matched). Nothing where no run was analysed."""
    from .analysis import plot_responses

    analysed = {key: [x for x in r.responses if x] for key, r in sorted(runs.items()) if any(r.responses)}
    if not analysed:
        return []
    means = {key: [statistics.fmean(layer) for layer in zip(*each, strict=True)] for key, each in analysed.items()}
    lines = [_heading("Layer responses (He 2015 Fig. 7)", screening), "",
             "The std of each 3x3 layer's output (after BN, before ReLU and addition) over the test set, from "
             f"`mode=analyze ckpt=RUN/last.pt`, or `ckpt=SWEEP` for every run ({RESPONSES}); means over runs.", "",
             "| experiment | model | n | layers | mean std | max std |", "|---|---|---|---|---|---|"]
    lines += [f"| {experiment} | {model} | {len(analysed[experiment, model])} | {len(stds)} | "
              f"{statistics.fmean(stds):.3f} | {max(stds):.3f} |" for (experiment, model), stds in means.items()]
    models = [m for _, m in means]
    labels = {key: key[1] if models.count(key[1]) == 1 else f"{key[1]} ({key[0]})" for key in means}
    plot = _plot_path(out, "layer_responses", screening)
    plot_responses({labels[k]: v for k, v in sorted(means.items(), key=lambda kv: kv[0][1])}, plot,
                   "Layer responses (He 2015 Fig. 7)")
    return [*lines, "", f"![Layer responses](plots/{plot.name})", "",
            "Claims of He 2015 Sec. 4.2, on the mean std of its arms (he2015/...):", "", *response_checks(runs), ""]


def response_checks(runs: dict[tuple[str, str], Runs]) -> list[str]:
    """He 2015 Sec. 4.2 on Fig. 7: a ResNet responds less than the plain net of its depth, and
    deeper ResNets respond less; each on the seeds that the nets compared all analysed."""
    data = orderings_data(runs)

    def analysed(family: str, depth: int) -> Runs | None:
        r = first_variant(runs, f"he2015/{family}{depth}", f"{family}-{depth}", data)
        return r if r and r.by_seed("response") else None

    depths = (*DEGRADATION_DEPTHS, 110)
    pairs = []
    for depth in depths:
        plain, resnet = analysed("plain", depth), analysed("resnet", depth)
        if plain and resnet:
            (p, r), note = matched([plain, resnet], "response")
            pairs.append((depth, p, r, note))
    resnets = [(d, r) for d in depths if (r := analysed("resnet", d))]
    smaller = "- ResNets' responses are smaller than their plain counterparts': "
    deeper = "- Deeper ResNets have smaller responses: "
    if pairs:
        agree = all(r < p for _, p, r, _ in pairs)
        each = [f"depth {d}: plain {p:.3f}, ResNet {r:.3f}{_aside(note)}" for d, p, r, note in pairs]
        smaller += f"{'agrees' if agree else 'DISAGREES'} ({', '.join(each)})"
    else:
        smaller += "not analysed yet (needs a plain net and a ResNet of one depth)"
    if len(resnets) > 1:
        values, note = matched([r for _, r in resnets], "response")
        agree = all(a > b for a, b in zip(values, values[1:], strict=False))
        each = [f"ResNet-{d} {v:.3f}" for (d, _), v in zip(resnets, values, strict=True)]
        deeper += f"{'agrees' if agree else 'DISAGREES'}{_matched_on(note)} ({', '.join(each)})"
    else:
        deeper += "not analysed yet (needs ResNets of two depths)"
    return [smaller, deeper]


def first_variant(runs: dict[tuple[str, str], Runs], experiment: str, model: str, data: str,
                  departures: dict | None = None) -> Runs | None:
    """The arm's runs of its recipe on `data` (a run that did not record its data counts as on any),
    or of the recipe changed by the same `departures` (a shortened sweep of every arm is compared
    arm with arm); where it ran so with several configs, the first one's by label."""
    found = [r for _, r in variants(runs, experiment, model)
             if r.only_on(data) and _same(r.departures, departures or {})]
    return found[0] if found else None


def orderings_data(runs: dict[tuple[str, str], Runs]) -> str:
    """The one data on which arms are set against each other (the orderings, He 2015 Fig. 6):
    CIFAR-10, the papers', unless every run that recorded its data is on one other (the sample)."""
    seen = {d for r in runs.values() for d in r.datasets}
    return seen.pop() if len(seen) == 1 else "cifar10"


def screening_fractions(folders: list[Path]) -> list[float]:
    return sorted({s.get("screening", 1.0) for _, s in finished_runs(folders)} - {1.0})


def _fmt(value: float | None, signed: bool = False) -> str:
    if value is None:
        return "–"
    return f"{value:+.2f}" if signed else f"{value:.2f}"


def _published_cell(arm: Arm, data: str) -> str:
    """The published error on `data`, with what it is (a best or median of several runs) and, where
    it is not the recipe's, the data it is on: "19.25 (median of 5, cifar100)"."""
    notes = [str(stat) for stat in [arm.statistic(data)] if stat] + ([data] if data != arm.home else [])
    return _fmt(arm.published(data)) + (f" ({', '.join(notes)})" if notes else "")


def ranks(group: Group, runs: dict[tuple[str, str], Runs]) -> dict[str, str]:
    """Row label -> "ours / published": the rank (1: lowest error) of each arm that ran its recipe on
    the recipe's data, among those arms, by our mean (over the seeds all of them ran: matched) and
    by the published figure. Screening runs show the published ordering so, never its numbers."""
    rows = [(label, r, published_err) for arm in group.arms
            if (published_err := arm.comparable(arm.home)) is not None
            for label, r in variants(runs, arm.experiment, arm.model) if not r.departures and r.only_on(arm.home)]
    if len(rows) < 2:
        return {}
    means, note = matched([r for _, r, _ in rows])
    rows = [(label, mean, published_err) for (label, _, published_err), mean in zip(rows, means, strict=True)]
    ours, theirs = sorted(rows, key=lambda row: row[1]), sorted(rows, key=lambda row: row[2])
    return {row[0]: f"{ours.index(row) + 1} / {theirs.index(row) + 1}{_aside(note)}" for row in rows}


def group_table(group: Group, runs: dict[tuple[str, str], Runs], beside_published: bool = True) -> list[str]:
    """One row per arm (per config, where an arm ran with several). Each row's deltas are taken
    against the reference arm's runs on the row's data, over the seeds both ran (matched), and it
    stands beside the published figure for that data (the cell names the data where it is not the
    recipe's); a row on data with no figure gets none. `beside_published=False` (screening runs)
    leaves the published columns out and gives each row's rank, ours beside the published one
    (`ranks`)."""
    ref = group.arms[0]
    ranked = {} if beside_published else ranks(group, runs)
    head = "| arm | model | n | test error % (mean ± std) | best epoch |"
    lines = [head + (" published % | our Δ vs ref | published Δ |" if beside_published
                     else " our Δ vs ref | rank, ours / published |"),
             "|---|---|---|---|---|---|---|" + ("---|" if beside_published else "")]
    for arm in group.arms:
        for label, r in variants(runs, arm.experiment, arm.model) or [(arm.experiment, None)]:
            on = r.data(arm.home) if r else arm.home
            ours = _mean_std(r.errors) if r else "not run"
            best = f"{statistics.fmean(r.best_epochs):.0f}" if r else "–"
            # Another arm's row changed from its recipe is set against the reference changed alike (a
            # shortened sweep of every arm) where that ran; every other row against the reference's recipe,
            # and the reference's own row, where its recipe did not run, against itself.
            alike = r and r.departures and arm != ref and first_variant(runs, ref.experiment, ref.model, on,
                                                                        r.departures)
            ref_runs = alike or first_variant(runs, ref.experiment, ref.model, on) or (r if arm == ref else None)
            (mine, theirs), note = matched([r, ref_runs])
            delta = _fmt(mine - theirs, True) + _aside(note) if mine is not None and theirs is not None else "–"
            row = f"| {label} | {arm.model} | {r.n if r else 0} | {ours} | {best} |"
            if beside_published and r and r.departures:
                row += f" – (not the recipe: {', '.join(r.departures)}) | {delta} | – |"
            elif beside_published and on != arm.home and arm.published(on) is None:
                row += f" – (runs on {on}) | {delta} | – |"
            elif beside_published:
                mine, theirs = arm.comparable(on), ref.comparable(on)
                pub_delta = mine - theirs if mine is not None and theirs is not None else None
                row += f" {_published_cell(arm, on)} | {delta} | {_fmt(pub_delta, True)} |"
            else:
                row += f" {delta} | {ranked.get(label, '–')} |"
            lines.append(row)
    return lines


def statistic_notes(group: Group, runs: dict[tuple[str, str], Runs]) -> list[str]:
    """Under a group's table: which published errors in it are more than one run's (on the
    recipe's data, and on any other data a row ran on), and which figure the published deltas use."""
    notes = []
    for arm in group.arms:
        shown = {r.data(arm.home) for _, r in variants(runs, arm.experiment, arm.model)} - {arm.home}
        for data in [arm.home, *sorted(shown)]:
            stat = arm.statistic(data)
            if stat is None:
                continue
            spread = ("" if stat.mean is None else
                      f"; their mean {stat.mean:.2f} ± {stat.std:.2f}, which the published Δ uses")
            on = "" if data == arm.home else f" on {data}"
            notes.append(f"- {arm.experiment}{on}: {arm.published(data):.2f} is the {stat.kind} of {stat.runs} runs "
                         f"({stat.source}){spread}.")
    return notes + [""] if notes else []


def _aside(note: str) -> str:
    return f" ({note})" if note else ""


def _heading(title: str, screening: float) -> str:
    """A section's heading: a full-length one at level 2, one inside a screening length's section at 3."""
    return f"{'##' if screening == 1.0 else '###'} {title}"


def _plot_path(out: Path, name: str, screening: float) -> Path:
    """Where a section's plot goes, beside the report: plots/NAME.png, or NAME_screeningF.png."""
    return out.parent / "plots" / f"{name}{'' if screening == 1.0 else f'_screening{screening:g}'}.png"


def _matched_on(note: str) -> str:
    """A check's aside on the seeds its arms were set against each other on (matched's note)."""
    return "" if not note else f", matched on {note}" if note.startswith("seed") else f", on {note}"


def _mean_std(values: list[float]) -> str:
    """"12.34 ± 0.56" over several runs; one run has no spread to show, so just its value."""
    if not values:
        return "–"
    if len(values) == 1:
        return f"{values[0]:.2f}"
    return f"{statistics.fmean(values):.2f} ± {statistics.stdev(values):.2f}"


def degradation_table(runs: dict[tuple[str, str], Runs], data: str) -> list[str]:
    """He 2015 Fig. 6 as numbers: final training and test error by depth, plain beside ResNet."""
    lines = ["| depth | plain n | plain training error % | plain test error % | ResNet n | ResNet training error % "
             "| ResNet test error % |", "|---|---|---|---|---|---|---|"]
    for d in DEGRADATION_DEPTHS:
        row = f"| {d} |"
        for family in ("plain", "resnet"):
            r = first_variant(runs, f"he2015/{family}{d}", f"{family}-{d}", data)
            row += f" {r.n} | {_mean_std(r.train_errors)} | {_mean_std(r.errors)} |" if r else " 0 | not run | – |"
        lines.append(row)
    return lines


def plot_degradation(runs: dict[tuple[str, str], Runs], path: Path, data: str) -> bool:
    """He 2015 Fig. 6: error against iterations, one panel per family; dashed training error,
    bold test error, one colour per depth."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5), sharey=True)
    drawn = False
    for ax, family, name in zip(axes, ("plain", "resnet"), ("plain", "ResNet"), strict=True):
        for color, d in zip(plt.rcParams["axes.prop_cycle"].by_key()["color"], DEGRADATION_DEPTHS, strict=False):
            r = first_variant(runs, f"he2015/{family}{d}", f"{family}-{d}", data)
            if r is None:
                continue
            steps, train = r.mean_curve("step", "train_err")
            ax.plot(steps, train, "--", color=color, linewidth=1)
            drawn = drawn or bool(steps)
            steps, test = r.mean_curve("step", "test_err")  # one point where only the last epoch was evaluated
            ax.plot(steps, test, "-", marker="o" if len(steps) == 1 else None, color=color, linewidth=2,
                    label=f"{name}-{d} (n={r.n})")
        ax.set(xlabel="iterations", title=f"{name} (dashed: training, bold: test)")
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend()
    axes[0].set_ylabel("error (%)")
    if drawn:
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)
    return drawn


def goal_checks(runs: dict[tuple[str, str], Runs]) -> list[str]:
    """The orderings the papers report, checked on our means on one data (orderings_data), each
    check's arms over the seeds all of them ran (matched): agrees, DISAGREES or not run."""
    data = orderings_data(runs)

    def arm(experiment: str, model: str) -> Runs | None:
        return first_variant(runs, experiment, model, data)

    def said(name: str, ok: bool, values: list[float], where: str = "") -> str:
        return f"- {name}: {'agrees' if ok else 'DISAGREES'}{where} ({', '.join(f'{v:.2f}' for v in values)})"

    def verdict(name: str, arms: list[Runs | None], test) -> str:
        values, note = matched(arms)
        if any(v is None for v in values):
            return f"- {name}: not run yet"
        return said(name, test(*values), values, _matched_on(note))

    def by_depth(name: str, arms: list[Runs | None], rises: bool) -> str:
        """A monotone ordering of the final training error over DEGRADATION_DEPTHS, checked on the
        depths that ran (two or more), which it names where some did not."""
        values, note = matched(arms, "train")
        ran = [(d, v) for d, v in zip(DEGRADATION_DEPTHS, values, strict=True) if v is not None]
        if len(ran) < 2:
            return f"- {name}: not run yet"
        e = [v for _, v in ran]
        ok = all((a < b) if rises else (a > b) for a, b in zip(e, e[1:], strict=False))
        missing = [str(d) for d, v in zip(DEGRADATION_DEPTHS, values, strict=True) if v is None]
        where = f" on depths {', '.join(str(d) for d, _ in ran)} ({', '.join(missing)} not run)" if missing else ""
        return said(name, ok, e, where + _matched_on(note))

    depth = [arm(f"he2015/resnet{d}", f"resnet-{d}") for d in (20, 32, 44, 56, 110)]
    blog = [arm(f"blog/{n}", "resnet-110") for n in ("original", "bn_after_add", "no_relu_after_add")]
    optim = [arm(f"blog/{n}", "resnet-110") for n in ("original", "rmsprop", "adadelta", "adagrad")]
    solvers = [arm(f"blog/{n}", "resnet-110") for n in BLOG_OPTIM if n != "adam"]
    solvers20 = [arm(f"blog/resnet20/{n}", "resnet-20") for n in BLOG20_OPTIM]
    units20 = [arm(f"blog/resnet20/{n}", "resnet-20") for n in BLOG_UNITS]
    momentum20 = [arm(f"blog/resnet20/{n}", "resnet-20") for n in BLOG20_BN_MOMENTUM]
    units = [arm(f"identity_mappings/{n}", "resnet-164")
             for n in ("original", "bn_after_add", "relu_before_add", "relu_only_preact", "full_preact")]
    # Every run of every other arm: WRN-28-10 must beat each, so here no seed is matched.
    others = [r.mean for (exp, _), r in runs.items()
              if not exp.startswith(("wrn/", "imagenet/", "speed/")) and exp != "-" and r.only_on(data)
              and not r.departures]
    wrn = arm("wrn/wrn_28_10", "wrn-28-10")
    speed = [arm(f"speed/{n}", "resnet-20") for n in ("plain", "fast", "graphs")]
    plain_train = [arm(f"he2015/plain{d}", f"plain-{d}") for d in DEGRADATION_DEPTHS]
    resnet_train = [arm(f"he2015/resnet{d}", f"resnet-{d}") for d in DEGRADATION_DEPTHS]
    depths = " → ".join(map(str, DEGRADATION_DEPTHS))
    return [*([f"On the runs on {data} (none on CIFAR-10, the papers' data):", ""] if data != "cifar10" else []),
        by_depth(f"He 2015 Fig. 6, plain nets: the final training error rises with depth {depths}", plain_train,
                 rises=True),
        by_depth(f"He 2015 Fig. 6, ResNets: the final training error falls with depth {depths}", resnet_train,
                 rises=False),
        verdict("He 2015: error falls with depth 20 → 110, and ResNet-110 is at least 2 points below ResNet-20", depth,
                lambda *e: all(a > b for a, b in zip(e, e[1:], strict=False)) and e[0] - e[-1] >= 2.0),
        verdict("He 2015 Sec. 4.2: ResNet-1202 is worse than ResNet-110 (overfitting, the paper argues)",
                [arm("he2015/resnet110", "resnet-110"), arm("he2015/resnet1202", "resnet-1202")],
                lambda short, deep: deep > short),
        verdict("Blog, ResNet-110: BN after the addition is at least 3 points worse than the original",
                blog[:2], lambda o, b: b - o >= 3.0),
        verdict("Blog, ResNet-110: no ReLU after the addition lands within ±0.7 of the original",
                [blog[0], blog[2]], lambda o, n: abs(n - o) <= 0.7),
        verdict("Blog, ResNet-110: SGD < RMSprop < Adadelta < Adagrad, Adagrad worst by at least 2 points", optim,
                lambda s, r, d, a: s < r < d < a and a - d >= 2.0),
        # gcr README@f0d0a17:237-238, 207-208, 145 and 280.
        verdict("Blog, ResNet-110: SGD with Nesterov is lowest of the nine solver rows (RMSprop 1e-4 … Adagrad 1e-1)",
                solvers, lambda *e: min(e) == e[0]),
        verdict("Blog, ResNet-20: SGD with Nesterov is lowest of the eight solver rows", solvers20,
                lambda *e: min(e) == e[0]),
        verdict("Blog, ResNet-20: the four BN/ReLU units lie within 0.5 points of each other", units20,
                lambda *e: max(e) - min(e) <= 0.5),
        verdict("Blog, ResNet-20: BN momentum 0.1, 1, 0.01 and dynamic lie within 0.5 points of each other",
                momentum20, lambda *e: max(e) - min(e) <= 0.5),
        verdict("Identity Mappings, ResNet-164: full pre-activation best, BN after addition worst", units,
                lambda *e: min(e) == e[4] and max(e) == e[1]),
        ("- WRN-28-10 is below every thin-ResNet ablation run: not run yet" if not (wrn and others) else
         said("WRN-28-10 is below every thin-ResNet ablation run", wrn.mean < min(others), [wrn.mean, min(others)])),
        *(verdict(f"Speed: the {name} path's mean lies within 0.5 points of the plain fp32 path's",
                  [speed[0], fast], lambda p, f: abs(f - p) <= 0.5)
          for name, fast in (("fast", speed[1]), ("CUDA-graph", speed[2]))),
    ]


def draw_group(ax, group: Group, runs: dict[tuple[str, str], Runs]) -> None:
    """Each arm's mean test error by epoch; where only the last epoch was evaluated (a point), its
    training error too, dashed in the same colour, to show how it got there."""
    import matplotlib.pyplot as plt

    colors = itertools.cycle(plt.rcParams["axes.prop_cycle"].by_key()["color"])
    for arm in group.arms:
        for label, r in variants(runs, arm.experiment, arm.model):
            epochs, errors = r.mean_curve()
            if not epochs:
                continue
            color = next(colors)
            if len(epochs) == 1:
                ax.plot(*r.mean_curve(y="train_err"), "--", color=color, linewidth=1)
            ax.plot(epochs, errors, color=color, marker="o" if len(epochs) == 1 else None,
                    label=f"{label.split('/', 1)[-1]} (n={r.n})")


def plot_group(group: Group, runs: dict[tuple[str, str], Runs], path: Path) -> bool:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    fig, ax = plt.subplots(figsize=(7, 4.5))
    draw_group(ax, group, runs)
    drawn = bool(ax.lines)
    if drawn:
        dashed = any(line.get_linestyle() == "--" for line in ax.lines)
        ax.set(xlabel="epoch", ylabel="error (%)" if dashed else "test error (%)",
               title=group.title + ("\n(dashed: training error; dots: final test error)" if dashed else ""))
        ax.set_ylim(bottom=0)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs are whole: a 4-epoch run got ticks at 1.5
        ax.grid(alpha=0.3)
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1))  # beside the axes: many arms cover the curves
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)
    return drawn


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in text.lower()).strip("_")[:80]


def group_section(group: Group, runs: dict[tuple[str, str], Runs], out: Path, screening: float = 1.0) -> list[str]:
    """A group's table and plot: for He 2015 Fig. 6, training and test error by depth, plain beside
    ResNet; for every other group, one row per arm. At a screening length (below 1) the heading is
    one level down, and no published figure or note stands beside the runs."""
    full = screening == 1.0
    plot = _plot_path(out, _slug(group.title), screening)
    lines = [_heading(group.title, screening), ""]
    if group.kind == "degradation":
        data = orderings_data(runs)
        lines += [f"Source: {group.source}. Final training error: the last epoch's, over its augmented batches, as "
                  "the paper's curves show it.", "", *degradation_table(runs, data), ""]
        drawn = plot_degradation(runs, plot, data)
    else:
        lines += [f"Source: {group.source}.", "", *group_table(group, runs, beside_published=full), "",
                  *(statistic_notes(group, runs) if full else [])]
        drawn = plot_group(group, runs, plot)
    return lines + ([f"![{group.title}](plots/{plot.name})", ""] if drawn else [])


def screening_section(fraction: float, runs: dict[tuple[str, str], Runs], out: Path) -> list[str]:
    lines = [f"## Screening runs at {fraction:g} of each recipe's length", "",
             "Shortened schedules (`train.screening`): their orderings and deltas only. They are not the published "
             "recipes, so no published number stands beside them: only the published ordering, as each row's rank "
             "among the arms that ran (1: lowest error), ours beside the published figures'.", ""]
    for group in GROUPS:
        if ran(group, runs):
            lines += group_section(group, runs, out, fraction)
    # Only the orderings this length ran: the full list, and what it still waits for, is above.
    checks = goal_checks(runs)
    unrun = [c for c in checks if c.endswith(": not run yet")]
    return lines + ["### Expected orderings, screening runs", "", *(c for c in checks if c not in unrun),
                    *([f"- ({len(unrun)} more not run at this length: see Expected orderings above)"] if unrun else []),
                    "", *responses_section(runs, out, fraction)]


def screened(group: Group, screens: dict[float, dict[tuple[str, str], Runs]]) -> str:
    """Where a group has screening runs only, the lengths at which its section below shows them."""
    fractions = [f"{f:g}" for f, screen in sorted(screens.items()) if ran(group, screen)]
    return f" (screening runs at {', '.join(fractions)} of the length: below)" if fractions else ""


def render(runs: dict[tuple[str, str], Runs], out: Path,
           screens: dict[float, dict[tuple[str, str], Runs]] | None = None, note: str | None = None) -> str:
    lines = ["# Reproduction results", "", *([note, ""] if note else []),
             "Each row: the mean final test error over seeds (n runs; ± their standard deviation where n > 1), "
             "the mean epoch of the lowest test error, "
             "the published error on the row's data (CIFAR-10 unless the cell names other data; a best or median of "
             "several runs where the source says so), and both deltas to the group's first arm on that data. "
             "Our deltas, ranks and orderings set arms against each other on the seeds that all of them ran, "
             "and name those seeds in brackets where that leaves runs out (\"unmatched seeds\": none in common, "
             "so over all runs). Written by `resnet-train-report`.", ""]
    not_run = []
    for group in GROUPS:
        if not ran(group, runs):
            not_run.append(group)
            continue
        lines += group_section(group, runs, out)
    known = {(a.experiment, a.model) for g in GROUPS for a in g.arms}
    extra = sorted(k for k in runs if (k[0].split(" [")[0], k[1]) not in known)
    if extra:
        lines += ["## Other runs", "", "| experiment | model | n | test error % (mean ± std) |", "|---|---|---|---|"]
        lines += [f"| {e} | {m} | {runs[e, m].n} | {_mean_std(runs[e, m].errors)} |" for e, m in extra]
        lines.append("")
    lines += ["## Expected orderings", "", *goal_checks(runs), ""]
    lines += responses_section(runs, out)
    lines += ["## Not yet run at full length", ""]
    lines += [f"- {g.title}: {', '.join(a.experiment for a in g.arms)}{screened(g, screens or {})}"
              for g in not_run] or ["- (none)"]
    for fraction, screen in sorted((screens or {}).items()):
        lines += ["", *screening_section(fraction, screen, out)]
    arms = [(1.0, key, r) for key, r in sorted(runs.items())]
    arms += [(f, key, r) for f, screen in sorted((screens or {}).items()) for key, r in sorted(screen.items())]
    lines += ["", *compute_section(arms)] if arms else []
    return "\n".join(lines).rstrip("\n") + "\n"


def compute_section(arms: list[tuple[float, tuple[str, str], Runs]]) -> list[str]:
    """Per arm (and length: 1 = the full recipe): where and how long its runs took."""
    lines = ["## Compute", "",
             "Wall time: each run's, over all its legs (a resumed run's included), each from its first step to its "
             "summary, or to its last save where it was stopped (start-up and data loading excluded). Machine time: "
             "the time the device was busy with the arm's runs, the union of their legs, so runs packed on one GPU "
             "at once and the members of a seeds=K run count once. Images per second: training steps only, "
             "evaluation excluded.", "",
             "| experiment | model | length | n | device | wall time per run, min (mean) | machine time, min | "
             "img/s per run (mean) |", "|---|---|---|---|---|---|---|---|"]
    for length, (experiment, model), r in arms:
        wall = f"{statistics.fmean(r.wall_times) / 60:.1f}" if r.wall_times else "–"
        rate = f"{statistics.fmean(r.img_rates):,.0f}" if r.img_rates else "–"
        lines.append(f"| {experiment} | {model} | {length:g} | {r.n} | {', '.join(sorted(r.devices))} | {wall} | "
                     f"{r.machine_seconds / 60:.1f} | {rate} |")
    every = Runs(legs=[leg for *_, r in arms for leg in r.legs],
                 unlegged_seconds=sum(r.unlegged_seconds for *_, r in arms))
    return lines + ["", f"All of these runs: {every.machine_seconds / 60:.1f} min of machine time (the union of "
                        f"every run's legs).", ""]


HYDRA_RECORD = (".hydra/config.yaml", ".hydra/overrides.yaml")  # the command's config, as Hydra wrote it


def copy_results(folders: list[Path], dest: Path) -> int:
    """Copies each finished run's small files (no checkpoints) to dest/EXPERIMENT/MODEL/seedN:
    summary, metrics, layer responses, and Hydra's record of the command (a seeds=K member's is
    its process's, in the folder above). A run already there (dest among the folders) is left as it
    is; another run of the same arm, length and seed is replaced, and the line says so."""
    count = 0
    for summary_path, summary in finished_runs(folders):
        length = summary.get("screening", 1.0)
        seed_dir = f"seed{summary['seed']}" if length == 1.0 else f"screening{length:g}_seed{summary['seed']}"
        target = dest / (summary.get("experiment") or "other") / summary["model"] / seed_dir
        run = summary_path.parent
        count += 1
        if target.is_dir() and target.resolve() == run.resolve():
            continue
        if (target / "summary.json").is_file() and (target / "summary.json").read_bytes() != summary_path.read_bytes():
            print(f"replaced {target}: it held another run of the same arm and seed (now {run}'s)")
        command = run.parent if summary.get("members", 1) > 1 else run
        sources = [(run / name, name) for name in ("summary.json", "metrics.jsonl", RESPONSES)]
        sources += [(command / name, name) for name in HYDRA_RECORD]
        for source, name in sources:
            if source.is_file():
                (target / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(source, target / name)
            elif (target / name).is_file():
                (target / name).unlink()  # the replaced run's, which this run does not have
    return count


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="resnet-train-report", description=__doc__.splitlines()[0])
    parser.add_argument("folders", nargs="+", type=Path, help="run folders, or folders that contain them")
    parser.add_argument("--out", type=Path, default=Path("results.md"),
                        help="Markdown file; plots go to plots/ beside it")
    parser.add_argument("--note", help="a paragraph under the title, e.g. what data the runs used")
    parser.add_argument("--copy-to", type=Path,
                        help="also copy each run's summary.json, metrics.jsonl and .hydra record here")
    args = parser.parse_args(argv)
    missing = [f for f in args.folders if not f.exists()]
    if missing:
        parser.error(f"no such folder: {', '.join(map(str, missing))}")
    runs = collect(args.folders)
    screens = {f: collect(args.folders, f) for f in screening_fractions(args.folders)}
    if args.copy_to:
        print(f"copied {_count(copy_results(args.folders, args.copy_to), 'run')} to {args.copy_to}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    for path, kept in repeated_runs(args.folders):
        print(f"left out {path.parent}: {kept.parent} is a run of the same arm, length and seed, and each seed "
              f"counts once (kept: the run that ended last, or the one found first)")
    for path in unfinished_runs(args.folders):
        print(f"left out {path}: not finished (no summary.json); add resume=auto to its command with its folder "
              f"(hydra.run.dir, or the sweep's hydra.sweep.dir) to continue it")
    for path in stale_analyses(args.folders):
        print(f"left out {path}: not the analysis of a finished run's last step (rerun mode=analyze on its last.pt)")
    args.out.write_text(render(runs, args.out, screens, args.note))
    every = [*runs.values(), *(r for screen in screens.values() for r in screen.values())]
    total = sum(r.n for r in every)
    where = ", ".join(map(str, args.folders))
    print(f"wrote {args.out}: {_count(total, 'run')} in {_count(len(every), 'arm')}"
          + ("" if total else f" (no finished run, a summary.json with a test error, under {where})"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
