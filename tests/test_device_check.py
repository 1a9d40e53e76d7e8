"""scripts/device_check.py, the GPU session's prepared script: its training commands compose, a stage
past its slice is stopped gracefully, the budget skips what no longer fits, and what comes back is
written after every stage. (What it measures needs the GPU.)"""

import json
import os
import signal
import sys
import tarfile
import threading

import pytest
from omegaconf import OmegaConf

from resnet_train.config import validate

from .conftest import load_script

device_check = load_script("device_check")

# A stage that stands for a training run: on SIGTERM it writes "saved" and exits, as a run saves last.pt.
SAVES_ON_TERM = ("import signal, sys, time, pathlib\n"
                 "def save(*_): pathlib.Path(sys.argv[1]).write_text('saved'); sys.exit(0)\n"
                 "signal.signal(signal.SIGTERM, save)\n"
                 "print('training', flush=True); time.sleep(60)\n")
TRAINING = [s for s in device_check.STAGES.values() if "resnet_train" in s.argv]


def first_job(argv: list[str]) -> tuple[list[str], dict[str, list[str]]]:
    """A stage's sweep: the overrides of its first job (Hydra's own keys left out) and each swept key's values."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    sweep, *overrides = argv[argv.index("resnet_train") + 1:]
    assert sweep == "-m"
    parsed = OverridesParser.create().parse_overrides([o for o in overrides if not o.startswith("hydra")])
    swept = {o.get_key_element(): list(o.sweep_string_iterator()) for o in parsed if o.is_sweep_override()}
    job = [f"{o.get_key_element()}={swept[o.get_key_element()][0]}" if o.is_sweep_override() else o.input_line
           for o in parsed]
    return job, swept


@pytest.mark.parametrize("stage", TRAINING, ids=[s.name for s in TRAINING])
def test_each_training_stage_composes_and_validates(compose, stage, tmp_path):
    """Its first job composes and validates; every other experiment it sweeps is one that composes
    (test_config.py composes each experiment file)."""
    from resnet_train.cli import group_options

    argv = device_check.command(stage, tmp_path / "data", tmp_path / "work", tmp_path / "runs")
    job, swept = first_job(argv)
    cfg = OmegaConf.to_object(compose(*job))
    validate(cfg)
    assert cfg.resume == "auto" and cfg.data.root == str(tmp_path / "data")
    assert cfg.train.screening == (0.25 if stage.name.startswith("screen_") else 1.0)
    assert set(swept.get("experiment", [])) <= set(group_options("experiment"))
    assert f"hydra.sweep.dir={tmp_path / 'runs' / stage.runs}" in argv  # what the archive takes along


def test_stages_fit_a_call_and_the_first_call_fits_its_budget():
    for stage in device_check.STAGES.values():
        assert stage.least <= stage.seconds <= device_check.MAX_BUDGET, stage.name
    assert sum(device_check.STAGES[n].seconds for n in device_check.FIRST_CALL) <= device_check.MAX_BUDGET


def test_list_runs_nothing(capsys, tmp_path):
    assert device_check.main(["--list", "--work", str(tmp_path / "work")]) == 0
    printed = capsys.readouterr().out
    assert all(f"{name}: " in printed for name in device_check.STAGES)
    assert not (tmp_path / "work").exists()


@pytest.mark.slow
def test_a_stage_past_its_slice_is_stopped_with_sigterm_first(tmp_path):
    saved = tmp_path / "saved"
    status, code = device_check.run_stage([sys.executable, "-c", SAVES_ON_TERM, str(saved)], tmp_path / "a.log",
                                          seconds=2)
    assert (status, code, saved.read_text()) == ("timed out", 0, "saved")
    assert "training" in (tmp_path / "a.log").read_text()
    # A sweep: its parent dies at SIGTERM, its job takes a second to save; the stage ends after both.
    saved.unlink()
    slow_save = SAVES_ON_TERM.replace("def save(*_): ", "def save(*_): time.sleep(1); ")
    sweep = (f"import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', {slow_save!r}, {str(saved)!r}]); "
             "time.sleep(60)")
    assert device_check.run_stage([sys.executable, "-c", sweep], tmp_path / "s.log", seconds=2) == (
        "timed out", -signal.SIGTERM)
    assert saved.read_text() == "saved"
    ignores = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(60)"
    assert device_check.run_stage([sys.executable, "-c", ignores], tmp_path / "b.log", seconds=1, grace=1) == (
        "timed out", -signal.SIGKILL)
    assert device_check.run_stage([sys.executable, "-c", "raise SystemExit(3)"], tmp_path / "c.log", 30) == (
        "failed", 3)


@pytest.mark.slow
def test_the_budget_skips_a_stage_that_no_longer_fits_and_each_stage_is_written_back(tmp_path):
    out, work = tmp_path / "out", tmp_path / "work"
    rc = device_check.main(["--out", str(out), "--work", str(work), "--runs", str(tmp_path / "runs"),
                            "--stages", "env", "bench", "--budget", "40"])
    record = json.loads((out / "device_check.json").read_text())
    env, bench = record["stages"]
    assert rc == 0 and env["status"] == "ok" and bench["status"] == "skipped" and "needs 60" in bench["why"]
    with tarfile.open(out / "device_check.tgz") as tar:
        probe = json.loads(tar.extractfile("work/env.log").read())
    assert probe["python"] and probe["torch"] and probe["cpus"] == os.cpu_count()


@pytest.mark.slow
def test_a_stopped_call_stops_its_stage_gracefully_and_says_so(tmp_path, monkeypatch):
    saved = tmp_path / "saved"
    monkeypatch.setitem(device_check.STAGES, "train", device_check.Stage(
        "train", 60, 1, ("{python}", "-c", SAVES_ON_TERM, str(saved)), runs="train"))
    (tmp_path / "runs" / "train").mkdir(parents=True)
    (tmp_path / "runs" / "train" / "summary.json").write_text("{}")
    (tmp_path / "runs" / "train" / "last.pt").write_text("checkpoint")
    previous = signal.getsignal(signal.SIGTERM)
    timer = threading.Timer(2, os.kill, (os.getpid(), signal.SIGTERM))  # the call's own limit, reached
    timer.start()
    try:
        rc = device_check.main(["--out", str(tmp_path / "out"), "--work", str(tmp_path / "work"),
                                "--runs", str(tmp_path / "runs"), "--stages", "train", "env"])
    finally:
        timer.cancel()
        signal.signal(signal.SIGTERM, previous)
    record = json.loads((tmp_path / "out" / "device_check.json").read_text())
    assert rc == 1 and [s["status"] for s in record["stages"]] == ["stopped by SIGTERM"]
    assert saved.read_text() == "saved"
    with tarfile.open(tmp_path / "out" / "device_check.tgz") as tar:
        assert sorted(tar.getnames()) == ["runs/train/summary.json", "work/train.log"]
