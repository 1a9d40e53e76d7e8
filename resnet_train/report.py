"""Our errors beside the published ones, per ablation arm (`resnet-train-report DIR...`).

Reads run folders (summary.json, metrics.jsonl) anywhere below the given folders, groups them by
(experiment, model) over seeds, and writes a Markdown table per published ablation, the checks
of the expected orderings, and one PNG per table of test error against epoch.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
from dataclasses import dataclass, field
from pathlib import Path

from . import published
from .metrics import flatten


@dataclass(frozen=True)
class Arm:
    experiment: str
    model: str  # model label written by train(): resnet-110, preresnet-1001, wrn-28-10

    @property
    def published(self) -> float | None:
        return published.error(self.experiment, self.model)


@dataclass
class Group:
    title: str
    source: str
    arms: list[Arm]  # the first arm is the reference for deltas


def _arms(prefix: str, names: list[str], model: str) -> list[Arm]:
    return [Arm(f"{prefix}/{name}", model) for name in names]


BLOG_UNITS = ["original", "no_relu_after_add", "bn_after_add", "bn_after_add_no_relu"]
BLOG_OPTIM = ["original", "rmsprop", "adadelta", "adagrad", "adam"]
UNITS = ["original", "bn_after_add", "relu_before_add", "relu_only_preact", "full_preact"]

GROUPS = [
    *(Group(f"Torch blog: BN and ReLU around the addition, {m}", published.BLOG, _arms("blog", BLOG_UNITS, m))
      for m in ("resnet-110", "resnet-56", "resnet-20")),
    *(Group(f"Torch blog: optimizers, {m} (original = SGD with Nesterov)", published.BLOG,
            _arms("blog", BLOG_OPTIM, m)) for m in ("resnet-110", "resnet-56")),
    Group("He 2015 Table 6: depth", published.HE2015,
          [Arm(f"he2015/resnet{d}", f"resnet-{d}") for d in (20, 32, 44, 56, 110)]),
    *(Group(f"Identity Mappings Table 2: residual units, {m}", published.HE2016, _arms("identity_mappings", UNITS, m))
      for m in ("resnet-164", "resnet-110")),
    Group("Identity Mappings Table 3: ResNet-1001", published.HE2016,
          [Arm("identity_mappings/preresnet1001", "preresnet-1001")]),
    Group("Wide ResNets", published.WRN,
          [Arm("wrn/wrn_28_10", "wrn-28-10"), Arm("wrn/wrn_28_10_dropout", "wrn-28-10"),
           Arm("wrn/wrn_16_8", "wrn-16-8"), Arm("wrn/wrn_40_4", "wrn-40-4")]),
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
    best_epochs: list[int] = field(default_factory=list)
    curves: list[dict[int, float]] = field(default_factory=list)  # epoch -> test error

    def add(self, summary: dict, metrics: Path) -> None:
        self.errors.append(summary["final_test_err"])
        self.best_epochs.append(summary["best_epoch"])
        if metrics.is_file():
            records = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
            self.curves.append({r["epoch"]: r["test_err"] for r in records if "test_err" in r})

    @property
    def n(self) -> int:
        return len(self.errors)

    @property
    def mean(self) -> float:
        return statistics.fmean(self.errors)

    @property
    def std(self) -> float:
        return statistics.stdev(self.errors) if self.n > 1 else 0.0


def finished_runs(folders: list[Path]):
    """(summary.json path, summary) of every completed run below the folders."""
    for folder in folders:
        for summary_path in sorted(Path(folder).rglob("summary.json")):
            summary = json.loads(summary_path.read_text())
            if summary.get("status") == "completed":
                yield summary_path, summary


# Keys that say where or how a run ran, not what it trained: runs that differ only in these (and
# in the seed) are seeds of one arm.
NOT_THE_ARM = ("seed", "mode", "device", "ckpt", "resume", "data.root", "data.download", "data.num_workers",
               "train.progress", "train.eval_every", "train.keep_last", "train.eval_batch_size")


def _arm_config(summary: dict) -> dict:
    """What the run trained: its config without NOT_THE_ARM (empty for summaries that predate it)."""
    return {k: v for k, v in flatten(summary.get("config") or {}).items() if k not in NOT_THE_ARM}


def _variant_labels(configs: list[dict]) -> list[str]:
    """For the configs of one (experiment, model): the values of the keys in which they differ."""
    keys = sorted({k for c in configs for k in c if len({json.dumps(d.get(k)) for d in configs}) > 1})
    return [",".join(f"{k}={c.get(k)}" for k in keys) for c in configs]


def collect(folders: list[Path], screening: float = 1.0) -> dict[tuple[str, str], Runs]:
    """The finished runs of each arm at one length: full recipes (1.0), or screening runs at that
    fraction of the recipe (train.screening). An arm is an (experiment, model) whose runs differ
    only in the seed (and NOT_THE_ARM); where one (experiment, model) holds several configs, each
    is its own arm, its experiment suffixed with the differing values: "blog/original [optim.name=adam]"."""
    by_name: dict[tuple[str, str], dict[str, list]] = {}
    for summary_path, summary in finished_runs(folders):
        if summary.get("final_test_err") is None or summary.get("screening", 1.0) != screening:
            continue
        config = _arm_config(summary)
        variants = by_name.setdefault((summary.get("experiment") or "-", summary["model"]), {})
        variants.setdefault(json.dumps(config, sort_keys=True), []).append((summary_path, summary))
    runs: dict[tuple[str, str], Runs] = {}
    for (experiment, model), variants in by_name.items():
        labels = _variant_labels([json.loads(c) for c in variants]) if len(variants) > 1 else [""]
        for label, members in zip(labels, variants.values(), strict=True):
            arm = runs.setdefault((f"{experiment} [{label}]" if label else experiment, model), Runs())
            for summary_path, summary in members:
                arm.add(summary, summary_path.parent / "metrics.jsonl")
    return runs


def variants(runs: dict[tuple[str, str], Runs], experiment: str, model: str) -> list[tuple[str, Runs]]:
    """(experiment label, runs) of every config of one (experiment, model) that ran."""
    return sorted((e, r) for (e, m), r in runs.items() if m == model and e.split(" [")[0] == experiment)


def screening_fractions(folders: list[Path]) -> list[float]:
    return sorted({s.get("screening", 1.0) for _, s in finished_runs(folders)} - {1.0})


def _fmt(value: float | None, signed: bool = False) -> str:
    if value is None:
        return "–"
    return f"{value:+.2f}" if signed else f"{value:.2f}"


def group_table(group: Group, runs: dict[tuple[str, str], Runs], published: bool = True) -> list[str]:
    """One row per arm (per config, where an arm ran with several); `published=False` (screening
    runs) leaves the published columns out."""
    ref = group.arms[0]
    ref_runs = next((r for _, r in variants(runs, ref.experiment, ref.model)), None)
    head = "| arm | model | n | test error % (mean ± std) | best epoch |"
    lines = [head + (" published % | our Δ vs ref | published Δ |" if published else " our Δ vs ref |"),
             "|---|---|---|---|---|---|" + ("---|---|" if published else "")]
    for arm in group.arms:
        for label, r in variants(runs, arm.experiment, arm.model) or [(arm.experiment, None)]:
            ours = f"{r.mean:.2f} ± {r.std:.2f}" if r else "not run"
            best = f"{statistics.fmean(r.best_epochs):.0f}" if r else "–"
            delta = _fmt(r.mean - ref_runs.mean if r and ref_runs else None, True)
            row = f"| {label} | {arm.model} | {r.n if r else 0} | {ours} | {best} |"
            if published:
                pub_delta = (arm.published - ref.published
                             if arm.published is not None and ref.published is not None else None)
                row += f" {_fmt(arm.published)} | {delta} | {_fmt(pub_delta, True)} |"
            else:
                row += f" {delta} |"
            lines.append(row)
    return lines


def _mean(runs: dict[tuple[str, str], Runs], experiment: str, model: str) -> float | None:
    """The arm's mean; where it ran with several configs, the first one's (by label)."""
    found = variants(runs, experiment, model)
    return found[0][1].mean if found else None


def goal_checks(runs: dict[tuple[str, str], Runs]) -> list[str]:
    """The orderings the papers report, checked on our means: agrees, DISAGREES or not run."""

    def verdict(name: str, values: list[float | None], test) -> str:
        if any(v is None for v in values):
            return f"- {name}: not run yet"
        return f"- {name}: {'agrees' if test(*values) else 'DISAGREES'} ({', '.join(f'{v:.2f}' for v in values)})"

    depth = [_mean(runs, f"he2015/resnet{d}", f"resnet-{d}") for d in (20, 32, 44, 56, 110)]
    blog = [_mean(runs, f"blog/{n}", "resnet-110") for n in ("original", "bn_after_add", "no_relu_after_add")]
    optim = [_mean(runs, f"blog/{n}", "resnet-110") for n in ("original", "rmsprop", "adadelta", "adagrad")]
    units = [_mean(runs, f"identity_mappings/{n}", "resnet-164")
             for n in ("original", "bn_after_add", "relu_before_add", "relu_only_preact", "full_preact")]
    others = [r.mean for (exp, _), r in runs.items()
              if not exp.startswith(("wrn/wrn_28_10", "imagenet/", "speed/")) and exp != "-"]
    wrn = [_mean(runs, "wrn/wrn_28_10", "wrn-28-10")]
    speed = [_mean(runs, f"speed/{n}", "resnet-20") for n in ("plain", "fast", "graphs")]
    return [
        verdict("He 2015: error falls with depth 20 → 110, and ResNet-110 is at least 2 points below ResNet-20", depth,
                lambda *e: all(a > b for a, b in zip(e, e[1:], strict=False)) and e[0] - e[-1] >= 2.0),
        verdict("Blog, ResNet-110: BN after the addition is at least 3 points worse than the original",
                blog[:2], lambda o, b: b - o >= 3.0),
        verdict("Blog, ResNet-110: no ReLU after the addition lands within ±0.7 of the original",
                [blog[0], blog[2]], lambda o, n: abs(n - o) <= 0.7),
        verdict("Blog, ResNet-110: SGD < RMSprop < Adadelta < Adagrad, Adagrad worst by at least 2 points", optim,
                lambda s, r, d, a: s < r < d < a and a - d >= 2.0),
        verdict("Identity Mappings, ResNet-164: full pre-activation best, BN after addition worst", units,
                lambda *e: min(e) == e[4] and max(e) == e[1]),
        verdict("WRN-28-10 is best of all CIFAR-10 ablation runs", wrn + ([min(others)] if others else [None]),
                lambda w, o: w < o),
        *(verdict(f"Speed: the {name} path's mean lies within 0.5 points of the plain fp32 path's",
                  [speed[0], fast], lambda p, f: abs(f - p) <= 0.5)
          for name, fast in (("fast", speed[1]), ("CUDA-graph", speed[2]))),
    ]


def plot_group(group: Group, runs: dict[tuple[str, str], Runs], path: Path) -> bool:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    drawn = False
    for arm in group.arms:
        for label, r in variants(runs, arm.experiment, arm.model):
            if not r.curves:
                continue
            epochs = sorted(set.intersection(*(set(c) for c in r.curves)))
            ax.plot(epochs, [statistics.fmean(c[e] for c in r.curves) for e in epochs],
                    label=f"{label.split('/', 1)[-1]} (n={r.n})")
            drawn = True
    if drawn:
        ax.set(xlabel="epoch", ylabel="test error (%)", title=group.title)
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
        ax.legend()
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)
    return drawn


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in text.lower()).strip("_")[:80]


def screening_section(fraction: float, runs: dict[tuple[str, str], Runs]) -> list[str]:
    lines = [f"## Screening runs at {fraction:g} of each recipe's length", "",
             "Shortened schedules (`train.screening`): their orderings and deltas only. They are not the published "
             "recipes, so no published number stands beside them.", ""]
    for group in GROUPS:
        if any(variants(runs, a.experiment, a.model) for a in group.arms):
            lines += [f"### {group.title}", "", *group_table(group, runs, published=False), ""]
    return lines + ["### Expected orderings, screening runs", "", *goal_checks(runs), ""]


def render(runs: dict[tuple[str, str], Runs], out: Path,
           screens: dict[float, dict[tuple[str, str], Runs]] | None = None, note: str | None = None) -> str:
    lines = ["# Reproduction results", "", *([note, ""] if note else []),
             "Each row: the mean final test error over seeds (n runs), the mean epoch of the lowest test error, "
             "the published CIFAR-10 error, and both deltas to the group's first arm. Written by "
             "`resnet-train-report`.", ""]
    not_run = []
    for group in GROUPS:
        have = [a for a in group.arms if variants(runs, a.experiment, a.model)]
        if not have:
            not_run.append(group)
            continue
        lines += [f"## {group.title}", "", f"Source: {group.source}.", "", *group_table(group, runs), ""]
        plot = out.parent / "plots" / f"{_slug(group.title)}.png"
        if plot_group(group, runs, plot):
            lines += [f"![{group.title}](plots/{plot.name})", ""]
    known = {(a.experiment, a.model) for g in GROUPS for a in g.arms}
    extra = sorted(k for k in runs if (k[0].split(" [")[0], k[1]) not in known)
    if extra:
        lines += ["## Other runs", "", "| experiment | model | n | test error % (mean ± std) |", "|---|---|---|---|"]
        lines += [f"| {e} | {m} | {runs[e, m].n} | {runs[e, m].mean:.2f} ± {runs[e, m].std:.2f} |" for e, m in extra]
        lines.append("")
    lines += ["## Expected orderings", "", *goal_checks(runs), ""]
    lines += ["## Not yet run", ""]
    lines += [f"- {g.title}: {', '.join(a.experiment for a in g.arms)}" for g in not_run] or ["- (none)"]
    for fraction, screen in sorted((screens or {}).items()):
        lines += ["", *screening_section(fraction, screen)]
    return "\n".join(lines) + "\n"


def copy_results(folders: list[Path], dest: Path) -> int:
    """Copies each finished run's small files (no checkpoints) to dest/EXPERIMENT/MODEL/seedN."""
    count = 0
    for summary_path, summary in finished_runs(folders):
        length = summary.get("screening", 1.0)
        seed_dir = f"seed{summary['seed']}" if length == 1.0 else f"screening{length:g}_seed{summary['seed']}"
        target = dest / (summary.get("experiment") or "other") / summary["model"] / seed_dir
        target.mkdir(parents=True, exist_ok=True)
        for name in ("summary.json", "metrics.jsonl"):
            if (summary_path.parent / name).is_file():
                shutil.copy2(summary_path.parent / name, target / name)
        count += 1
    return count


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="resnet-train-report", description=__doc__.splitlines()[0])
    parser.add_argument("folders", nargs="+", type=Path, help="run folders, or folders that contain them")
    parser.add_argument("--out", type=Path, default=Path("results.md"),
                        help="Markdown file; plots go to plots/ beside it")
    parser.add_argument("--note", help="a paragraph under the title, e.g. what data the runs used")
    parser.add_argument("--copy-to", type=Path, help="also copy each run's summary.json and metrics.jsonl here")
    args = parser.parse_args(argv)
    missing = [f for f in args.folders if not f.exists()]
    if missing:
        parser.error(f"no such folder: {', '.join(map(str, missing))}")
    runs = collect(args.folders)
    screens = {f: collect(args.folders, f) for f in screening_fractions(args.folders)}
    if args.copy_to:
        print(f"copied {copy_results(args.folders, args.copy_to)} runs to {args.copy_to}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(render(runs, args.out, screens, args.note))
    total = sum(r.n for r in runs.values()) + sum(r.n for s in screens.values() for r in s.values())
    print(f"wrote {args.out}: {total} runs in {len(runs)} arms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
