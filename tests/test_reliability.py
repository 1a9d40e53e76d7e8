"""Faults and bad input: what the user sees, and what survives (docs/reliability.md)."""

import errno
import json
import pickle
import shlex
import signal
import subprocess
import sys
import time

import pytest
import torch

from resnet_train import checkpoint as ckpt_io
from resnet_train.checkpoint import CheckpointError, load_checkpoint, save_checkpoint

from .conftest import TINY, our_line, run_cli, signal_after_step

# ---------------------------------------------------------------- the docs' tests


def test_every_test_the_docs_name_exists():
    """The docs back each claim with a test (`test_x.py::test_y`; a bare `::test_y` is in the file
    named last before it on its line, or in reliability.md's own test_reliability.py): a renamed
    test must not leave a claim backed by nothing."""
    import re

    from .conftest import ROOT

    tests = {f.name: f.read_text() for f in (ROOT / "tests").glob("test_*.py")}
    missing = []
    for doc in [ROOT / "README.md", ROOT / "results" / "README.md", *(ROOT / "docs").glob("*.md")]:
        for number, line in enumerate(doc.read_text().splitlines(), 1):
            file = "test_reliability.py" if doc.name == "reliability.md" else None
            for named, name in re.findall(r"(test_\w+\.py)?::(test_\w+)", line):
                file = named or file
                if file is None or f"def {name}(" not in tests.get(file, ""):
                    missing.append(f"{doc.name}:{number}: {file}::{name}")
    assert not missing, missing


# ---------------------------------------------------------------- interruption


@pytest.mark.slow
def test_sigterm_mid_epoch_saves_and_resume_matches_uninterrupted(tmp_path):
    args = [*TINY, "data.train_size=1024", "train.batch_size=32", "train.epochs=3", "sched.milestones=[2]"]
    straight = run_cli(*args, f"hydra.run.dir={tmp_path / 'straight'}", cwd=tmp_path)
    assert straight.returncode == 0, straight.stderr

    run = tmp_path / "interrupted"
    proc = subprocess.Popen([sys.executable, "-m", "resnet_train", *args, f"hydra.run.dir={run}"], cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not (run / "metrics.jsonl").exists() or not (run / "metrics.jsonl").read_text():
        assert proc.poll() is None and time.time() < deadline, proc.communicate()
        time.sleep(0.05)
    time.sleep(1.0)  # into epoch 2 (about 3 s long here)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert "interrupted by SIGTERM" in err
    saved = load_checkpoint(run / "last.pt")
    assert saved["epoch"] in (1, 2)  # mid-epoch 2, or at its end if the signal came late
    assert f"stopped by SIGTERM at iteration {saved['step']}; saved {run / 'last.pt'}" in (
        run / "resnet_train.log").read_text()

    # The printed command continues in the same folder.
    hint = shlex.split(err.split("Resume in the same folder with: ")[1].strip())
    assert hint[0] == "resnet-train" and f"hydra.run.dir={run}" in hint and "resume=auto" in hint
    resumed = run_cli(*hint[1:], cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    a, b = load_checkpoint(tmp_path / "straight" / "last.pt"), load_checkpoint(run / "last.pt")
    assert all(torch.equal(t, b["model"][k]) for k, t in a["model"].items())
    assert a["history"] == b["history"]
    sa = json.loads((tmp_path / "straight" / "summary.json").read_text())
    sb = json.loads((run / "summary.json").read_text())
    assert sa["final_test_err"] == sb["final_test_err"] and sa["best_test_err"] == sb["best_test_err"]


@pytest.mark.slow
def test_mid_epoch_stop_resumes_exactly_in_process(tiny, tmp_path, monkeypatch):
    """The same check without a subprocess: a real SIGUSR1 arrives during iteration 6, the 2nd of
    epoch 2's 4 steps; the run stops after that step."""

    from resnet_train.interrupt import Interrupted
    from resnet_train.train import train

    straight = train(tiny(epochs=2), tmp_path / "a")
    signal_after_step(monkeypatch, 6)
    with pytest.raises(Interrupted, match="interrupted by SIGUSR1 in epoch 2 at iteration 6"):
        train(tiny(epochs=2), tmp_path / "b")
    monkeypatch.undo()
    state = load_checkpoint(tmp_path / "b" / "last.pt")
    assert (state["epoch"], state["step"], state["epoch_totals"]["steps"]) == (1, 6, 2)
    resumed = train(tiny(epochs=2, resume="auto"), tmp_path / "b")
    assert resumed["final_test_err"] == straight["final_test_err"]
    a, b = load_checkpoint(tmp_path / "a" / "last.pt"), load_checkpoint(tmp_path / "b" / "last.pt")
    assert a["history"] == b["history"]
    assert all(torch.equal(t, b["model"][k]) for k, t in a["model"].items())


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_to_the_process_group_stops_a_sweep_with_loader_workers_gracefully(tmp_path, sig):
    """`timeout`, Ctrl-C and schedulers signal the whole process group, loader workers included.
    A worker killed by it once ended the job with a traceback mid-step, unsaved, and the sweep went
    on with its next job; now the run stops as on a signal to itself, and so does the sweep."""
    import os

    args = [*TINY, "data.num_workers=2", "data.train_size=1024", "train.batch_size=32", "train.epochs=3"]
    sweep = tmp_path / "sweep"
    proc = subprocess.Popen([sys.executable, "-m", "resnet_train", "-m", *args, "seed=0,1",
                             f"hydra.sweep.dir={sweep}"], cwd=tmp_path, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    metrics = sweep / "0_seed=0" / "metrics.jsonl"
    deadline = time.time() + 120
    while not metrics.exists() or not metrics.read_text():
        assert proc.poll() is None and time.time() < deadline, proc.communicate()
        time.sleep(0.05)
    time.sleep(0.5)  # into epoch 2
    os.killpg(proc.pid, sig)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + sig, err
    assert f"interrupted by {sig.name}" in err and "Traceback" not in err and "DataLoader worker" not in err
    assert f"run the sweep's command again with hydra.sweep.dir={sweep} resume=auto" in err
    assert load_checkpoint(sweep / "0_seed=0" / "last.pt")["epoch"] >= 1
    assert not (sweep / "1_seed=1").exists()  # the sweep stopped with its first job


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_to_a_packed_sweeps_group_saves_every_running_job_and_leaves_no_process(tmp_path, sig):
    """hydra/launcher=joblib: on Ctrl-C joblib once killed the running jobs before they saved (their
    partial epochs lost), and on SIGTERM the launcher died alone while its jobs, saved, stayed idle
    in their workers for minutes (on a GPU, holding its memory). Now each running job saves mid-epoch,
    the queued one does not start, and the sweep exits with 128 + signal, its processes gone."""
    import os

    sweep = tmp_path / "sweep"
    proc = subprocess.Popen([sys.executable, "-m", "resnet_train", "-m", *TINY, "train.epochs=400", "seed=0,1,2",
                             "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", f"hydra.sweep.dir={sweep}"],
                            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    logs = [sweep / "0_seed=0" / "resnet_train.log", sweep / "1_seed=1" / "resnet_train.log"]
    deadline = time.time() + 180
    while not all(log.exists() and "epoch 1 " in log.read_text() for log in logs):
        assert proc.poll() is None and time.time() < deadline, proc.communicate()
        time.sleep(0.1)
    os.killpg(proc.pid, sig)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + sig, err
    assert "Traceback" not in err and err.count(f"interrupted by {sig.name}") == 2, err
    assert f"job 2 ({' '.join(TINY)} train.epochs=400 seed=2) not started: the sweep was stopped by {sig.name}" in err
    assert not (sweep / "2_seed=2").exists()
    for log in logs:
        saved = load_checkpoint(log.parent / "last.pt")
        assert f"stopped by {sig.name} at iteration {saved['step']}; saved" in log.read_text()  # at that step
    deadline = time.time() + 30
    while True:  # the workers end with their jobs (reaped by init, hence a moment)
        try:
            os.killpg(proc.pid, 0)
        except ProcessLookupError:
            break
        alive = subprocess.run(["ps", "-o", "pid,stat,args", "-g", str(proc.pid)], capture_output=True, text=True)
        assert time.time() < deadline, alive.stdout
        time.sleep(0.2)


# ---------------------------------------------------------------- atomic checkpoints

KILL_MIDWAY = """
import os, signal, sys, torch
from resnet_train import checkpoint
real_save = torch.save
def half_then_die(obj, f):
    f.write(b"PK\\x03\\x04" + b"x" * 4096)
    f.flush()
    os.kill(os.getpid(), signal.SIGKILL)
checkpoint.torch.save = half_then_die
checkpoint.save_checkpoint({"format": checkpoint.FORMAT, "epoch": 2}, sys.argv[1])
"""


@pytest.mark.slow
def test_checkpoint_write_killed_midway_leaves_previous_loadable(tmp_path):
    path = tmp_path / "last.pt"
    save_checkpoint({"format": ckpt_io.FORMAT, "epoch": 1, "w": torch.ones(3)}, path)
    proc = subprocess.run([sys.executable, "-c", KILL_MIDWAY, str(path)], capture_output=True)
    assert proc.returncode == -signal.SIGKILL
    state = load_checkpoint(path)
    assert state["epoch"] == 1 and torch.equal(state["w"], torch.ones(3))


@pytest.mark.slow
def test_stale_temporaries_are_removed_and_last_n_kept(tiny, tmp_path):
    from resnet_train.train import train

    (tmp_path / ".last.pt.abc123.tmp").write_bytes(b"half a checkpoint")
    cfg = tiny(epochs=3)
    cfg.train.keep_last = 2
    train(cfg, tmp_path)
    assert not list(tmp_path.glob(".*.tmp"))
    assert sorted(p.name for p in tmp_path.glob("epoch_*.pt")) == ["epoch_0002.pt", "epoch_0003.pt"]
    assert load_checkpoint(tmp_path / "epoch_0002.pt")["epoch"] == 2


def test_disk_full_during_checkpoint_keeps_previous(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    save_checkpoint({"format": ckpt_io.FORMAT, "epoch": 1}, path)

    def disk_full(obj, f):
        f.write(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(ckpt_io.torch, "save", disk_full)
    with pytest.raises(CheckpointError, match="No space left on device.*previous last.pt is intact"):
        save_checkpoint({"format": ckpt_io.FORMAT, "epoch": 2}, path)
    monkeypatch.undo()
    assert load_checkpoint(path)["epoch"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]  # no temporary file left behind


@pytest.mark.slow
def test_checkpoint_holds_complete_state_and_loads_weights_only(tiny, tmp_path):
    from resnet_train.train import train

    train(tiny(epochs=1), tmp_path)
    state = torch.load(tmp_path / "last.pt", weights_only=True)
    for key in ("model", "optimizer", "epoch", "step", "epoch_totals", "best", "history", "rng", "config"):
        assert key in state, key
    assert set(state["rng"]) == {"python", "numpy", "torch", "cuda"}
    assert state["config"]["model"]["depth"] == 8 and state["best"]["epoch"] == 1


# ---------------------------------------------------------------- divergence


@pytest.mark.slow
def test_nan_in_a_sweep_fails_only_that_job(tmp_path):
    sweep = tmp_path / "sweep"
    proc = run_cli("-m", "optim.lr=0.05,1e12", *TINY, "data.train_size=256", "data.test_size=100",
                   "train.epochs=1", f"hydra.sweep.dir={sweep}", cwd=tmp_path)
    assert proc.returncode == 1
    assert "NaN or infinite at iteration" in proc.stderr and "learning rate 1e+12" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert (sweep / "0_optim.lr=0.05" / "summary.json").is_file()
    assert not (sweep / "1_optim.lr=1e12" / "summary.json").exists()


# ---------------------------------------------------------------- bad input, through the CLI


@pytest.mark.parametrize("args,message", [
    (["model=resnet21"], "model=resnet21: no such option; choose one of plain110, plain20, "),
    (["optim=lbfgs"], "optim=lbfgs: no such option; choose one of adadelta, adagrad, adam, blog/adadelta, "),
    (["sched=linear"], "sched=linear: no such option; choose one of constant, cosine, multistep, step"),
    (["data=mnist"], "data=mnist: no such option; choose one of cifar10, cifar100, cifar10_sample, "),
    (["experiment=blog/nope"], "experiment=blog/nope: no such option; choose one of blog/adadelta, "),
    (["hydra/launcher=nope"], "hydra/launcher=nope: no such option; choose one of basic, joblib, slurm, "),
    (["model.colour=red"], "model.colour: no such key in the config"),
    (["train.epochs=many"], "train.epochs: Value 'many' of type 'str' could not be converted to Integer"),
    (["sched.milestones=[2"], "cannot read sched.milestones=[2: no viable alternative at input '[2'"),
    (["seed=0,1"], "Ambiguous value for argument 'seed=0,1' 1. To use it as a list, use key=[value1,value2] 2. "),
])
def test_unknown_options_keys_and_types_are_one_line(cli, args, message):
    code, err = cli(*args, "hydra.run.dir=run")
    assert code == 1 and our_line(err).startswith(f"resnet-train: error: {message}")


@pytest.mark.parametrize("launcher,missing,extra",
                         [("joblib", "joblib", "sweep"), ("slurm", "submitit_slurm", "slurm")])
def test_a_launcher_without_its_plugin_names_the_extra(launcher, missing, extra):
    from hydra.errors import MissingConfigException

    from resnet_train.cli import _composition_error

    exc = MissingConfigException("...", missing_cfg_file=f"hydra/launcher/{missing}", options=["basic"])
    assert _composition_error(exc, [f"hydra/launcher={launcher}"]) == (
        f"hydra/launcher: the {missing} launcher's Hydra plugin is not installed; pip install -e '.[{extra}]'")


def test_every_failed_job_of_a_sweep_says_so_in_its_log(cli, tmp_path):
    """Hydra repeats only the first failure after a sweep; each job's own log names its own."""
    code, err = cli("-m", "data=cifar10", f"data.root={tmp_path / 'none'}", "seed=0,1",
                    f"hydra.sweep.dir={tmp_path / 'sweep'}")
    assert code == 1 and "CIFAR-10 file data_batch_1 not found" in err
    for job, folder in enumerate(["0_seed=0", "1_seed=1"]):
        log = (tmp_path / "sweep" / folder / "resnet_train.log").read_text()
        assert f"job {job} (data=cifar10 data.root={tmp_path / 'none'} seed={job}) failed: CIFAR-10 file" in log


@pytest.mark.parametrize("swept,message", [("model=resnet20,resnet21", "model=resnet21: no such option"),
                                           ("optim.lr=0.1,0", "optim.lr must be positive, got 0.0")])
def test_a_sweep_with_one_bad_job_stops_before_any_job_runs(cli, tmp_path, swept, message):
    code, err = cli("-m", "data=cifar10_sample", "train.epochs=1", swept, f"hydra.sweep.dir={tmp_path / 'sweep'}")
    assert code == 1 and our_line(err).startswith(f"resnet-train: error: {message}")
    assert not (tmp_path / "sweep").exists()


def test_missing_data_root(cli, tmp_path):
    code, err = cli("data=cifar10", f"data.root={tmp_path / 'none'}", "hydra.run.dir=run")
    line = our_line(err)
    assert code == 1 and f"not found at {tmp_path / 'none' / 'cifar-10-batches-py'}" in line
    assert "data.root=" in line and "data.download=true" in line


def test_drop_last_without_a_full_batch(cli):
    code, err = cli("data=cifar10_sample", "data.train_size=100", "data.drop_last=true", "data.sampler=replacement",
                    "hydra.run.dir=run")
    assert code == 1 and our_line(err) == ("resnet-train: error: data.drop_last=true with 100 training images and "
                                           "train.batch_size=128 leaves no full batch; set data.drop_last=false or a "
                                           "smaller batch")


def test_a_batch_larger_than_the_training_set(cli):
    code, err = cli("data=cifar10_sample", "data.train_size=100", "train.batch_size=128", "hydra.run.dir=run")
    assert code == 1 and our_line(err) == ("resnet-train: error: train.batch_size=128 is more than the 100 training "
                                           "images, which a shuffled epoch holds once each; set train.batch_size to "
                                           "at most 100, or data.sampler=replacement")


def test_corrupt_dataset_file(cli, tmp_path):
    folder = tmp_path / "cifar" / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        (folder / name).write_bytes(pickle.dumps({"data": b"", "labels": []})[:10])
    code, err = cli("data=cifar10", f"data.root={tmp_path / 'cifar'}", "hydra.run.dir=run")
    assert code == 1 and "data_batch_1 is truncated or corrupt" in our_line(err)


@pytest.mark.parametrize("mode", ["eval", "analyze"])
def test_bad_checkpoints_for_eval_and_analyze(cli, tmp_path, mode):
    junk = tmp_path / "junk.pt"
    junk.write_text("not a checkpoint")
    code, err = cli(f"mode={mode}", f"ckpt={junk}", "hydra.run.dir=run")
    assert code == 1 and "is not a readable checkpoint" in our_line(err)
    # Whole sentences, and never torch's advice to unpickle a foreign file.
    junk.write_bytes(bytes(range(256)) * 4)
    code, err = cli(f"mode={mode}", f"ckpt={junk}", "hydra.run.dir=run")
    assert our_line(err) == (f"resnet-train: error: {junk} is not a readable checkpoint: it is not a file written "
                             f"by torch.save with tensors and plain data only")
    assert "weights_only" not in err
    code, err = cli(f"mode={mode}", f"ckpt={tmp_path / 'absent.pt'}", "hydra.run.dir=run")
    assert code == 1 and "does not exist" in our_line(err)
    (tmp_path / "empty" / "0_seed=0").mkdir(parents=True)
    code, err = cli(f"mode={mode}", f"ckpt={tmp_path / 'empty'}", "hydra.run.dir=run")
    assert code == 1 and f"ckpt={tmp_path / 'empty'} is a folder with no last.pt under it" in our_line(err)
    other = tmp_path / "other.pt"
    torch.save({"model": {}}, other)
    code, err = cli(f"mode={mode}", f"ckpt={other}", "hydra.run.dir=run")
    assert code == 1 and "is not a resnet-train checkpoint" in our_line(err)


@pytest.mark.slow
def test_checkpoint_of_a_different_model(tiny, cli, tmp_path):
    from resnet_train.train import train

    train(tiny(epochs=1), tmp_path / "r8")
    code, err = cli("mode=eval", f"ckpt={tmp_path / 'r8' / 'last.pt'}", "data=synthetic", "data.num_classes=100",
                    "hydra.run.dir=run")
    assert code == 1 and "does not fit its model config" in our_line(err)
    (tmp_path / "r8" / "last_responses.json").mkdir()  # unwritable, even for root
    code, err = cli("mode=analyze", f"ckpt={tmp_path / 'r8' / 'last.pt'}", "hydra.run.dir=run")
    assert code == 1 and "cannot write the analysis beside" in our_line(err)
    code, err = cli("model.depth=14", f"resume={tmp_path / 'r8' / 'last.pt'}", "data=cifar10_sample",
                    "hydra.run.dir=run")
    assert code == 1 and "cannot resume: the config differs from the checkpoint's in model.depth (8 -> 14)" in err


def test_resume_path_that_does_not_exist(cli, tmp_path):
    code, err = cli(f"resume={tmp_path / 'gone.pt'}", "data=cifar10_sample", "hydra.run.dir=run")
    assert code == 1 and "no such checkpoint" in our_line(err)


def test_output_folder_that_cannot_be_written(cli, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    code, err = cli(f"hydra.run.dir={blocker / 'run'}")
    assert code == 1 and f"cannot create the output folder {blocker / 'run'}: {blocker} is a file" in our_line(err)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error shown without a GPU")
def test_cuda_requested_without_gpu(cli):
    code, err = cli("device=cuda", "data=cifar10_sample", "hydra.run.dir=run")
    assert code == 1 and "device=cuda but no CUDA GPU is visible" in our_line(err)


@pytest.mark.slow
def test_resume_auto_steps_over_a_truncated_last_pt(tiny, tmp_path, caplog):
    from resnet_train.train import train

    cfg = tiny(epochs=2)
    cfg.train.keep_last = 2
    train(cfg, tmp_path)
    last = tmp_path / "last.pt"
    last.write_bytes(last.read_bytes()[:1000])
    cfg = tiny(epochs=3, resume="auto")
    cfg.train.keep_last = 2
    with caplog.at_level("WARNING"):
        summary = train(cfg, tmp_path)
    assert "last.pt is not a readable checkpoint: it is truncated" in caplog.text
    assert "resuming from epoch_0002.pt instead" in caplog.text
    assert summary["epochs"] == 3 and load_checkpoint(last)["epoch"] == 3
    # With nothing readable beside it, the error names the file and the way out.
    for path in tmp_path.glob("*.pt"):
        path.write_bytes(b"PK")
    with pytest.raises(CheckpointError, match="last.pt is not a readable checkpoint.*no readable epoch_NNNN.pt "
                                              "or best.pt lies beside it; move it aside"):
        train(tiny(epochs=4, resume="auto"), tmp_path)
