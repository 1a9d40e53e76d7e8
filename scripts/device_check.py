#!/usr/bin/env python3
"""The GPU session's checks as one prepared, time-boxed script (issue 13's steps, in its order).

    python3 scripts/device_check.py --out $OUT                          # call 1: env, tests, bench, bench_eager
    python3 scripts/device_check.py --out $OUT --stages faithfulness --budget B   # call 2: B = time left - 60 s
    python3 scripts/device_check.py --list                              # the stages, their commands and slices

A lent machine has 15 device-minutes a session, start-up included, and 10 minutes a command, so a
call must come back whatever happens inside it. Each stage runs in its own process group with a
slice of wall-clock seconds; a stage past its slice gets SIGTERM (training runs save `last.pt` and
stop; `resume=auto` goes on) and, 15 s later, SIGKILL. A stage starts only while the call's
budget still holds its `least` seconds. After every stage `device_check.json` (each stage's
command, status, exit code and seconds) and `device_check.tgz` (its logs, bench JSON, profiles,
JUnit XML, and the small files of its runs, never checkpoints) are rewritten under --out: two of
the eight files a call may bring back, and complete up to the last stage that ended.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Stage:
    name: str
    seconds: int  # wall-clock slice, seconds: SIGTERM after it
    least: int  # seconds of budget it needs to be worth starting
    argv: tuple[str, ...]  # {python} {data} {work} {runs} are filled in
    runs: str = ""  # a folder under {runs} whose small files go into the archive


BENCH = ("{python}", "scripts/bench.py", "--data-root", "{data}", "--steps", "100", "--warmup", "20")
SCREEN = "train.screening=0.25"
PACKING = ("seed=0,1,2,3", "train.epochs=15", "sched.milestones=[8,12]")  # issue 13 step 5: a 4-run ResNet-20 sweep


def sweep(name: str, seconds: int, least: int, n_jobs: int, *overrides: str) -> Stage:
    """A resnet-train sweep packed n_jobs at a time, in its own folder under {runs}, resumable."""
    return Stage(name, seconds, least, ("{python}", "-m", "resnet_train", "-m", *overrides, "data.root={data}",
                                        "train.progress=false", "resume=auto", "hydra/launcher=joblib",
                                        f"hydra.launcher.n_jobs={n_jobs}", f"hydra.sweep.dir={{runs}}/{name}"),
                 runs=name)


# Issue 13's steps in its order, as they fit a 15-minute session: call 1 is env..bench_eager (6 min
# at most), call 2 faithfulness; the rest in later sessions.
STAGES = {s.name: s for s in [
    Stage("env", 30, 5, ("{python}", "scripts/device_check.py", "--probe")),
    # -v: each test's result is in the log as it ends, so a stage stopped at its slice still tells.
    Stage("tests", 150, 60, ("{python}", "-m", "pytest", "-v", "-m", "gpu", "-rfEs", "-p", "no:cacheprovider",
                             "--junitxml", "{work}/gpu_tests.xml")),
    Stage("bench", 120, 60, (*BENCH, "--graphs", "on", "--profile", "{work}/profile", "--out",
                             "{work}/bench_graphs.json")),
    Stage("bench_eager", 60, 30, (*BENCH, "--graphs", "off", "--no-peer", "--out", "{work}/bench_eager.json")),
    Stage("compile", 240, 120, (*BENCH, "--compile", "reduce-overhead", "--no-peer", "--models", "resnet20",
                                "resnet110", "--out", "{work}/bench_compile.json")),
    sweep("faithfulness", 540, 120, 6, "experiment=speed/plain,speed/fast,speed/graphs", "seed=0,1"),
    sweep("packing_one_at_a_time", 240, 120, 1, *PACKING),
    sweep("packing_packed", 180, 90, 4, *PACKING),
    Stage("members", 240, 120, (*BENCH, "--models", "resnet20", "resnet110", "--members", "8", "--packed",
                                "--no-peer", "--out", "{work}/bench_members.json")),
    # Issue 14's screening pass: groups 2-6 at a quarter of their length, one seed, each group's arms
    # packed; a batch is a whole call (docs/performance.md, "The screening pass").
    sweep("screen_blog_units", 540, 300, 4,
          "experiment=blog/original,blog/no_relu_after_add,blog/bn_after_add,blog/bn_after_add_no_relu", SCREEN),
    sweep("screen_blog_solvers", 540, 300, 3, "experiment=blog/rmsprop,blog/adadelta,blog/adagrad", SCREEN),
    sweep("screen_he_depth", 540, 300, 5,
          "experiment=he2015/resnet20,he2015/resnet32,he2015/resnet44,he2015/resnet56,he2015/resnet110", SCREEN),
    sweep("screen_he_plain", 540, 240, 4,
          "experiment=he2015/plain20,he2015/plain32,he2015/plain44,he2015/plain56", SCREEN),
    sweep("screen_identity", 540, 300, 5,
          "experiment=identity_mappings/original,identity_mappings/bn_after_add,identity_mappings/relu_before_add,"
          "identity_mappings/relu_only_preact,identity_mappings/full_preact", SCREEN),
    sweep("screen_wrn", 540, 300, 2, "experiment=wrn/wrn_28_10,wrn/wrn_28_10_dropout", SCREEN),
]}
FIRST_CALL = ["env", "tests", "bench", "bench_eager"]
MAX_BUDGET = 540  # seconds: a command's 600 less the start of the call and the archive


def command(stage: Stage, data: Path, work: Path, runs: Path) -> list[str]:
    fill = {"{python}": sys.executable, "{data}": str(data), "{work}": str(work), "{runs}": str(runs)}
    out = []
    for arg in stage.argv:
        for key, value in fill.items():
            arg = arg.replace(key, value)
        out.append(arg)
    return out


def probe() -> dict:
    """What the machine has: versions, the device, and nvidia-smi's table where there is one."""
    import hydra
    import omegaconf
    import torch

    cuda = torch.cuda.is_available()
    props = torch.cuda.get_device_properties(0) if cuda else None
    smi = subprocess.run(["nvidia-smi"], capture_output=True, text=True).stdout if shutil.which("nvidia-smi") else ""
    return {"python": platform.python_version(), "torch": torch.__version__, "cuda": torch.version.cuda,
            "cudnn": torch.backends.cudnn.version(), "hydra": hydra.__version__, "omegaconf": omegaconf.__version__,
            "device": props.name if cuda else "none", "memory_gib": round(props.total_memory / 2**30, 1) if cuda else 0,
            "gpus": torch.cuda.device_count(), "cpus": os.cpu_count(), "nvidia_smi": smi.splitlines()}


def run_stage(argv: list[str], log: Path, seconds: float, grace: float = 15.0) -> tuple[str, int | None]:
    """Runs argv in its own process group, output to log: ("ok" | "failed" | "timed out", exit code)."""
    with log.open("w") as out:
        proc = subprocess.Popen(argv, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            code = proc.wait(timeout=seconds)
        except subprocess.TimeoutExpired:
            return "timed out", _stop_group(proc, grace)
        except BaseException:  # this script was stopped (the call's own limit): so is the stage, gracefully
            _stop_group(proc, grace)
            raise
    return ("ok" if code == 0 else "failed"), code


def _stop_group(proc: subprocess.Popen, grace: float) -> int:
    """SIGTERM to the stage's process group, then wait until every process of it has ended (a sweep's
    parent dies at once, its jobs first save last.pt), SIGKILL to what is left after grace seconds."""
    _signal_group(proc, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while _group_alive(proc) and time.monotonic() < deadline:
        time.sleep(0.1)
    _signal_group(proc, signal.SIGKILL)
    return proc.wait()


def _signal_group(proc: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        pass


def _group_alive(proc: subprocess.Popen) -> bool:
    proc.poll()  # reaps the leader once it has ended, so that it no longer counts
    try:
        os.killpg(proc.pid, 0)
    except ProcessLookupError:
        return False
    return True


def small_files(folder: Path, limit: int = 1 << 20):
    """Each file under folder but checkpoints and files over limit bytes (run folders' logs,
    summaries, metrics, configs; TensorBoard event files of a short run)."""
    for path in sorted(folder.rglob("*")):
        if path.is_file() and path.suffix != ".pt" and path.stat().st_size <= limit:
            yield path


def write_back(out: Path, work: Path, runs: Path, record: dict) -> None:
    (out / "device_check.json").write_text(json.dumps(record, indent=2) + "\n")
    with tarfile.open(out / "device_check.tgz", "w:gz") as tar:
        for path in small_files(work):
            tar.add(path, arcname=str(path.relative_to(work.parent)))
        for stage in record["stages"]:
            name = STAGES[stage["name"]].runs
            folder = runs / name
            if name and folder.is_dir():
                for path in small_files(folder):
                    tar.add(path, arcname=str(Path("runs") / path.relative_to(runs)))


class Stopped(Exception):
    pass


def _stop(signum, frame):
    raise Stopped(signal.Signals(signum).name)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, help="folder that comes back ($OUT)")
    parser.add_argument("--stages", nargs="+", default=FIRST_CALL, choices=list(STAGES), metavar="STAGE",
                        help=f"in the order given (default: {' '.join(FIRST_CALL)}); --list shows them all")
    parser.add_argument("--budget", type=float, help="seconds for the whole call, all stages (default: the sum of "
                        f"their slices, at most {MAX_BUDGET}: a command may run 600 s)")
    parser.add_argument("--data-root", type=Path, default=Path("/tmp/data"),
                        help="CIFAR-10 in torchvision's layout (where the device prefix unpacks it)")
    parser.add_argument("--work", type=Path, default=Path("/tmp/device_check"), help="logs and bench output")
    parser.add_argument("--runs", type=Path, default=Path("/tmp/runs"), help="training runs (kept for resume=auto)")
    parser.add_argument("--list", action="store_true", help="print each stage's slice and command, run nothing")
    parser.add_argument("--probe", action="store_true", help="print the versions and the device as JSON (stage env)")
    args = parser.parse_args(argv)
    if args.probe:
        print(json.dumps(probe(), indent=1))
        return 0
    if args.list:
        for stage in STAGES.values():
            print(f"{stage.name}: {stage.seconds} s (starts with {stage.least} s left)\n    "
                  + " ".join(command(stage, args.data_root, args.work, args.runs)))
        return 0
    if args.out is None:
        parser.error("--out is required (the folder that comes back)")
    for folder in (args.out, args.work, args.runs):
        folder.mkdir(parents=True, exist_ok=True)
    budget = args.budget or min(sum(STAGES[name].seconds for name in args.stages), MAX_BUDGET)
    signal.signal(signal.SIGTERM, _stop)
    start = time.monotonic()
    record = {"budget_s": budget, "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "stages": []}
    try:
        for name in args.stages:
            stage = STAGES[name]
            argv_ = command(stage, args.data_root, args.work, args.runs)
            left = budget - (time.monotonic() - start)
            entry = {"name": name, "command": " ".join(argv_), "slice_s": stage.seconds}
            record["stages"].append(entry)
            if left < stage.least:
                entry.update(status="skipped", why=f"{left:.0f} s of the budget left, it needs {stage.least}")
            else:
                t0 = time.monotonic()
                entry["status"] = "running"
                status, code = run_stage(argv_, args.work / f"{name}.log", min(stage.seconds, left))
                entry.update(status=status, exit_code=code, seconds=round(time.monotonic() - t0, 1))
            print(f"device_check: {name}: {entry['status']}" + (f" in {entry['seconds']} s" if "seconds" in entry
                                                                  else f" ({entry.get('why', '')})"), flush=True)
            write_back(args.out, args.work, args.runs, record)
    except (Stopped, KeyboardInterrupt) as stop:
        if record["stages"]:
            record["stages"][-1]["status"] = f"stopped by {stop or 'SIGINT'}"
        write_back(args.out, args.work, args.runs, record)
        return 1
    return 0 if all(s["status"] in ("ok", "skipped") for s in record["stages"]) else 1


if __name__ == "__main__":
    sys.exit(main())
