"""The real command, in a subprocess, on the shipped real data."""

import json
import sys

import pytest
import torch

from .conftest import TINY, run_cli


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    work = tmp_path_factory.mktemp("e2e")
    run = work / "run"
    proc = run_cli(*TINY, "train.epochs=2", f"hydra.run.dir={run}", cwd=work)
    assert proc.returncode == 0, proc.stderr
    return run, proc


def scalar_tags(run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run / "tb"))
    acc.Reload()
    return acc


@pytest.mark.slow
def test_end_to_end_run_writes_the_run_folder(trained):
    run, proc = trained
    for name in ("metrics.jsonl", "summary.json", "last.pt", "best.pt", ".hydra/config.yaml", ".hydra/overrides.yaml"):
        assert (run / name).is_file(), name
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2]
    assert records[0]["lr"] == pytest.approx(0.1) and records[1]["lr"] == pytest.approx(0.01)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["final_test_err"] == records[-1]["test_err"]
    assert summary["best_test_err"] == min(r["test_err"] for r in records)
    assert summary["params"] > 70_000 and summary["img_per_s"] > 0 and summary["wall_time_s"] > 0
    assert summary["device_name"] == "cpu" and summary["members"] == 1 and summary["torch"] == torch.__version__
    assert "train.epochs=2" in summary["overrides"]
    # The log opens with what the run resolved to: 512 images in batches of 64, two epochs.
    log = (run / "resnet_train.log").read_text()
    assert f"model       resnet-8 (basic blocks, original unit, shortcut A, init fb), {summary['params']:,} " in log
    assert "data        cifar10_sample: 512 training images (shuffle sampler); test 200" in log
    assert "length      16 iterations of 64 images, 2 epoch(s) of 8 batches; sgd lr 0.1, weight decay 0.0001" in log
    assert "device      cpu: plain fp32" in log
    # A real model on real images learns something in two epochs of 512 images.
    assert records[-1]["train_err"] < 90.0
    acc = scalar_tags(run)
    tags = set(acc.Tags()["scalars"])
    for tag in ("train/loss", "train/err", "test/loss", "test/err", "lr", "perf/img_per_s", "perf/epoch_s"):
        assert tag in tags, tag
        assert [e.step for e in acc.Scalars(tag)] == [1, 2]
    assert "hparams/final_test_err" in tags
    assert acc.Scalars("test/err")[-1].value == pytest.approx(records[-1]["test_err"])
    assert len(list((run / "tb").iterdir())) == 1  # one event folder per run, HParams included


@pytest.mark.slow
def test_hparams_are_in_the_run_event_file(trained):
    from tensorboard.plugins.hparams import plugin_data_pb2

    run, _ = trained
    acc = scalar_tags(run)
    content = acc.PluginTagToContent("hparams")
    assert "_hparams_/session_start_info" in content
    info = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"]).session_start_info
    assert info.hparams["model.depth"].number_value == 8  # set on the command line
    assert info.hparams["optim.name"].string_value == "sgd"  # one of the fixed few
    assert info.hparams["model"].string_value == "resnet-8" and info.hparams["data"].string_value == "cifar10_sample"
    assert "data.root" not in info.hparams and "ckpt" not in info.hparams and len(info.hparams) < 20


@pytest.mark.slow
def test_the_run_folder_is_printed_and_keeps_the_log(trained):
    run, proc = trained
    lines = proc.stdout.splitlines()
    assert lines[0] == f"run folder: {run}" and lines[-1].endswith(f"run folder: {run}")
    assert lines[-1].startswith("finished: test error ")
    assert not [line for line in lines if line.startswith("warning:")]  # its milestone [1] lies inside 2 epochs
    log = (run / "resnet_train.log").read_text()
    assert "[resnet_train.train][INFO] - epoch 2  train err" in log


@pytest.mark.slow
def test_eval_defaults_to_the_checkpoints_data_and_names_the_model(trained, tmp_path):
    run, _ = trained
    proc = run_cli("mode=eval", f"ckpt={run / 'last.pt'}", "model=resnet110", "data.num_workers=0", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "note: model=resnet110 ignored: the model is the checkpoint's own" in proc.stdout
    assert "model       resnet-8 (basic blocks, original unit, shortcut A)" in proc.stdout
    assert "data        cifar10_sample test split, 200 images" in proc.stdout  # the training run's test_size
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["test_err"] == pytest.approx(json.loads((run / "summary.json").read_text())["final_test_err"])
    assert not (tmp_path / "outputs").exists()  # eval writes no run folder


@pytest.mark.slow
def test_eval_mode_reproduces_the_final_test_error(trained, tmp_path):
    run, _ = trained
    proc = run_cli("mode=eval", f"ckpt={run / 'last.pt'}", "data=cifar10_sample", "data.test_size=200",
                   "data.num_workers=0", f"hydra.run.dir={tmp_path / 'eval'}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    summary = json.loads((run / "summary.json").read_text())
    assert result["test_err"] == pytest.approx(summary["final_test_err"])


@pytest.mark.slow
def test_analyze_writes_one_response_per_3x3_layer(trained, tmp_path):
    run, _ = trained
    proc = run_cli("mode=analyze", f"ckpt={run / 'last.pt'}", "data.num_workers=0", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    record = json.loads((run / "last_responses.json").read_text())
    assert record["model"] == "resnet-8" and record["epoch"] == 2 and record["data"] == "cifar10_sample"
    assert record["step"] == json.loads((run / "summary.json").read_text())["steps"]  # the report checks this
    assert len(record["layers"]) == 7  # ResNet-8: the stem and 2 convs in each of 3 units, all 3x3
    assert all(layer["std"] > 0 for layer in record["layers"])
    assert (run / "last_responses.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert f"wrote {run / 'last_responses.json'}" in proc.stdout
    assert not (tmp_path / "outputs").exists()


@pytest.mark.slow
def test_a_sweep_folder_is_evaluated_and_analysed_run_by_run(trained, tmp_path):
    """Sweep job folders are named like 0_optim=adam (Hydra would reject that '=' unquoted); ckpt= a
    folder takes every last.pt under it, members of a seeds=K run included."""
    run, _ = trained
    sweep = tmp_path / "sweep"
    jobs = [sweep / "0_optim=sgd", sweep / "1_optim=adam" / "seed1"]
    for job in jobs:
        job.mkdir(parents=True)
        (job / "last.pt").write_bytes((run / "last.pt").read_bytes())
    proc = run_cli("mode=analyze", f"ckpt={jobs[0] / 'last.pt'}", "data.num_workers=0", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert [p.parent for p in sweep.rglob("last_responses.json")] == [jobs[0]]
    (jobs[0] / "last_responses.json").unlink()
    proc = run_cli("mode=analyze", f"ckpt={sweep}", "data.num_workers=0", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert f"2 checkpoints under {sweep}" in proc.stdout
    assert sorted(p.parent for p in sweep.rglob("last_responses.json")) == jobs
    proc = run_cli("mode=eval", f"ckpt={sweep}", "data.num_workers=0", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    results = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    summary = json.loads((run / "summary.json").read_text())
    assert [r["ckpt"] for r in results] == [str(job / "last.pt") for job in jobs]
    assert all(r["test_err"] == pytest.approx(summary["final_test_err"]) for r in results)


def test_path_values_with_equals_signs_are_quoted_for_hydra():
    from resnet_train.cli import _quote_paths

    assert _quote_paths(["ckpt=out/0_optim=sgd/last.pt", "hydra.run.dir=o/1_seed=1", "optim.lr=0.1", "ckpt=a/b.pt"]) \
        == ["ckpt='out/0_optim=sgd/last.pt'", "hydra.run.dir='o/1_seed=1'", "optim.lr=0.1", "ckpt=a/b.pt"]
    sweep = ["-m", "ckpt=s/0_x=1/last.pt,s/plain/last.pt"]
    assert _quote_paths(sweep) == ["-m", "ckpt='s/0_x=1/last.pt',s/plain/last.pt"]
    assert _quote_paths(["ckpt='already=quoted'"]) == ["ckpt='already=quoted'"]


@pytest.mark.slow
def test_checkpoint_loads_with_weights_only(trained):
    run, _ = trained
    state = torch.load(run / "last.pt", weights_only=True)
    assert state["epoch"] == 2 and state["config"]["model"]["depth"] == 8
    assert {"python", "numpy", "torch", "cuda"} <= set(state["rng"])


@pytest.mark.slow
def test_multirun_sweep_makes_one_folder_per_job(tmp_path):
    sweep = tmp_path / "sweep"
    proc = run_cli("-m", "optim=sgd,adam", *TINY, "data.train_size=128", "data.test_size=100", "train.epochs=1",
                   f"hydra.sweep.dir={sweep}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    summaries = sorted(sweep.glob("*/summary.json"))
    assert len(summaries) == 2
    assert sorted(json.loads(p.read_text())["overrides"][0] for p in summaries) == ["optim=adam", "optim=sgd"]
    assert all(len(list(p.parent.joinpath("tb").iterdir())) == 1 for p in summaries)
    # TensorBoard names a run by its folder: the job number and the values it sweeps.
    assert sorted(p.parent.name for p in summaries) == ["0_optim=sgd", "1_optim=adam"]
    acc = scalar_tags(sweep / "1_optim=adam")
    from tensorboard.plugins.hparams import plugin_data_pb2

    content = acc.PluginTagToContent("hparams")["_hparams_/session_start_info"]
    hparams = plugin_data_pb2.HParamsPluginData.FromString(content).session_start_info.hparams
    assert hparams["optim"].string_value == "adam" and hparams["optim.name"].string_value == "adam"


@pytest.mark.slow
def test_info_mode_and_refused_runs_leave_no_run_folder(tmp_path):
    assert run_cli("mode=info", cwd=tmp_path).returncode == 0
    assert run_cli("optim.lr=0", cwd=tmp_path).returncode == 1
    missing = run_cli("data=cifar10", f"data.root={tmp_path / 'none'}", cwd=tmp_path)
    assert missing.returncode == 1 and "run folder" not in missing.stdout + missing.stderr  # it was removed
    assert not (tmp_path / "outputs").exists()


@pytest.mark.slow
def test_help_is_the_apps_own(tmp_path):
    proc = run_cli("--help", cwd=tmp_path)
    assert proc.returncode == 0
    for text in ("resnet-train: train and study the ResNet family", "mode=...", "experiment/blog:",
                 "resnet-train -sc install=bash", "outputs/DATE/TIME"):
        assert text in proc.stdout, text
    assert "powered by Hydra" not in proc.stdout


@pytest.mark.slow
def test_info_mode_prints_figures_and_a_json_last_line(tmp_path):
    proc = run_cli("mode=info", "model=resnet110", f"hydra.run.dir={tmp_path}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    info = json.loads(proc.stdout.strip().splitlines()[-1])
    assert {"params", "macs", "num_classes", "image_size"} <= set(info)
    assert info["num_classes"] == 10 and info["image_size"] == 32
    assert abs(info["params"] - 1.7e6) / 1.7e6 < 0.02 and abs(info["macs"] - 253e6) / 253e6 < 0.03
    assert "stage 3     output 64 x 8 x 8" in proc.stdout


@pytest.mark.slow
def test_bad_input_is_one_line_and_exit_1(tmp_path):
    proc = run_cli("model=resnet20", "model.depth=21", f"hydra.run.dir={tmp_path}", cwd=tmp_path)
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert lines == ["resnet-train: error: model.depth=21 does not fit resnet with basic blocks on CIFAR, whose "
                     "depth is 6n+2 (n >= 1); nearest valid: 20 or 26"]


@pytest.mark.skipif(sys.platform != "linux", reason="uses the console script path of a Linux venv")
def test_console_script_is_installed():
    from pathlib import Path
    script = Path(sys.executable).parent / "resnet-train"
    assert script.is_file()
