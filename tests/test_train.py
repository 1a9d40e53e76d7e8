"""train(cfg) without Hydra: resume equivalence and checkpoint errors."""

import json
import logging
import time

import pytest
import torch

from resnet_train.checkpoint import CheckpointError, load_checkpoint
from resnet_train.config import DataConfig
from resnet_train.modes import evaluate_checkpoint
from resnet_train.train import train


def strip_timing(records):
    return [{k: v for k, v in r.items() if not k.startswith("perf")} for r in records]


@pytest.mark.slow
def test_resumed_run_equals_uninterrupted_run(tiny, tmp_path):
    straight = train(tiny(epochs=2), tmp_path / "straight")
    train(tiny(epochs=1), tmp_path / "first")
    resumed = train(tiny(epochs=2, resume=str(tmp_path / "first" / "last.pt")), tmp_path / "second")

    a = load_checkpoint(tmp_path / "straight" / "last.pt")
    b = load_checkpoint(tmp_path / "second" / "last.pt")
    for key, tensor in a["model"].items():
        assert torch.equal(tensor, b["model"][key]), key
    assert a["history"] == b["history"]
    assert straight["final_test_err"] == resumed["final_test_err"]
    lines = lambda run: [json.loads(x) for x in (tmp_path / run / "metrics.jsonl").read_text().splitlines()]  # noqa: E731
    assert lines("straight") == lines("second")  # the resumed folder carries the whole history
    assert len(a["optimizer"]["state"]) == len(b["optimizer"]["state"])
    for idx, st in a["optimizer"]["state"].items():
        assert torch.equal(st["momentum_buffer"], b["optimizer"]["state"][idx]["momentum_buffer"])


@pytest.mark.slow
def test_eval_every_evaluates_each_nth_and_the_last_epoch_and_records_every_epoch(tiny, tmp_path, caplog):
    caplog.set_level("INFO", logger="resnet_train.train")
    summary = train(tiny(epochs=3, **{"train.eval_every": 2}), tmp_path)
    records = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2, 3] and all("train_err" in r for r in records)
    assert ["test_err" in r for r in records] == [False, True, True]
    assert summary["final_test_err"] == records[-1]["test_err"] and summary["best_epoch"] in (2, 3)
    epochs = [m for m in caplog.messages if m.startswith("epoch ")]
    assert len(epochs) == 3 and "test err" not in epochs[0] and all("test err" in m for m in epochs[1:])


@pytest.mark.slow
def test_a_milestone_the_run_never_reaches_is_a_warning_that_names_the_key(tiny, tmp_path, caplog):
    # train.epochs=1 alone keeps a recipe's milestones: the LR would never drop, and nothing said so.
    caplog.set_level("INFO", logger="resnet_train.train")
    train(tiny(epochs=1, **{"sched.milestones": [1]}), tmp_path)
    [warning] = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert warning.startswith("sched.milestones: the run stops after 4 iterations, before milestone(s) [1] (epochs)")


@pytest.mark.slow
def test_resume_auto_starts_fresh_then_continues(tiny, tmp_path):
    run = tmp_path / "run"
    first = train(tiny(epochs=1, resume="auto"), run)
    assert first["epochs"] == 1
    saved = load_checkpoint(run / "last.pt")
    [(start, end)] = saved["legs"]
    assert 0 < end - start <= first["wall_time_s"] and first["legs"][0][0] == start
    # The summary's wall time counts every leg: pretend the first one took 1000 s, a day ago.
    saved["legs"] = [[start - 86400.0, start - 85400.0]]
    torch.save(saved, run / "last.pt")
    before = time.time()
    second = train(tiny(epochs=2, resume="auto"), run)
    assert 1000.0 < second["wall_time_s"] <= 1000.0 + time.time() - before
    assert second["legs"][0] == saved["legs"][0] and before <= second["legs"][1][0] < second["legs"][1][1]
    assert second["epochs"] == 2 and load_checkpoint(run / "last.pt")["epoch"] == 2


def test_resume_from_missing_path_is_an_error(tiny, tmp_path):
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        train(tiny(resume=str(tmp_path / "nope.pt")), tmp_path / "run")


@pytest.mark.slow
def test_resume_with_a_different_model_names_each_key(tiny, tmp_path):
    train(tiny(epochs=1), tmp_path / "a")
    cfg = tiny(epochs=2, resume=str(tmp_path / "a" / "last.pt"))
    cfg.model.unit, cfg.optim.lr = "bn_after_add", 0.05
    with pytest.raises(CheckpointError, match=r"model\.unit \(None -> 'bn_after_add'\); optim\.lr \(0\.1 -> 0\.05\)"):
        train(cfg, tmp_path / "b")


def test_eval_rejects_files_that_are_not_checkpoints(tiny, tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_text("hello")
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        evaluate_checkpoint(tiny(mode="eval", ckpt=str(bad)))
    torch.save({"weights": torch.zeros(3)}, bad)
    with pytest.raises(CheckpointError, match="not a resnet-train checkpoint"):
        evaluate_checkpoint(tiny(mode="eval", ckpt=str(bad)))


@pytest.mark.slow
def test_eval_on_named_data_keeps_the_normalisation_the_network_learnt(tiny, tmp_path, caplog):
    """data=cifar10_sample names the run's own data, but its option file normalises per channel: the
    run's per-pixel mean and global std (the blog's) must stay, or the error is another network's."""
    summary = train(tiny(epochs=1, **{"data.normalize": "pixel_global_std"}), tmp_path / "run")
    cfg = tiny(mode="eval", ckpt=str(tmp_path / "run" / "last.pt"), **{"data.test_size": 100})
    assert cfg.data.normalize == "channel"  # what data=cifar10_sample composes to
    with caplog.at_level(logging.INFO, logger="resnet_train"):
        result = evaluate_checkpoint(cfg, ["data=cifar10_sample", "data.test_size=100"])
    assert result["err"] == pytest.approx(summary["final_test_err"])
    assert "with the checkpoint's input normalisation (data.normalize=pixel_global_std)" in caplog.text
    other = evaluate_checkpoint(cfg, ["data=cifar10_sample", "data.test_size=100", "data.normalize=channel"])
    assert other["err"] != pytest.approx(summary["final_test_err"])  # set on the command line: obeyed


@pytest.mark.slow
def test_eval_rejects_a_truncated_checkpoint(tiny, tmp_path):
    train(tiny(epochs=1), tmp_path / "run")
    data = (tmp_path / "run" / "last.pt").read_bytes()
    cut = tmp_path / "cut.pt"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        evaluate_checkpoint(tiny(mode="eval", ckpt=str(cut)))


@pytest.mark.slow
def test_eval_rejects_a_checkpoint_for_other_classes(tiny, tmp_path):
    train(tiny(epochs=1), tmp_path / "run")
    cfg = tiny(mode="eval", ckpt=str(tmp_path / "run" / "last.pt"))
    cfg.data = DataConfig(name="synthetic", num_classes=100, train_size=8, test_size=8, num_workers=0)
    with pytest.raises(CheckpointError, match="does not fit"):
        evaluate_checkpoint(cfg, ["data=synthetic"])  # the command line's data replaces the checkpoint's
    assert evaluate_checkpoint(cfg)["err"] >= 0  # without it, the checkpoint's own data (10 classes)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error shown without a GPU")
def test_cuda_without_gpu_is_an_error(tiny, tmp_path):
    with pytest.raises(ValueError, match="device=cuda but no CUDA GPU"):
        train(tiny(device="cuda"), tmp_path / "run")


@pytest.mark.slow
def test_iterations_define_the_length(tiny, tmp_path):
    out = train(tiny(epochs=None, **{"train.iterations": 6}), tmp_path / "run")
    # 256 images at batch 64: 4 iterations per epoch, so 6 iterations end mid-way through epoch 2.
    assert out["steps"] == 6 and out["epochs"] == 2


@pytest.mark.slow
def test_loader_workers_do_not_change_the_run(tiny, tmp_path):
    """Augmentation is seeded per (seed, epoch, image), and the epoch travels in the sampler's
    keys, so persistent workers give the same run as the main process, epoch after epoch."""
    a = train(tiny(epochs=2), tmp_path / "w0")
    cfg = tiny(epochs=2)
    cfg.data.num_workers = 2
    b = train(cfg, tmp_path / "w2")
    history = [load_checkpoint(tmp_path / run / "last.pt")["history"] for run in ("w0", "w2")]
    assert history[0] == history[1] and a["final_test_err"] == b["final_test_err"]


def test_cuda_graphs_apply_to_one_cuda_process(tiny):
    from resnet_train.distributed import SINGLE, Dist
    from resnet_train.train import _cuda_graphs

    cuda, cpu, ddp = torch.device("cuda", 0), torch.device("cpu"), Dist(rank=0, world=2, local_rank=0)
    graphs = {"train.cuda_graphs": True}
    assert _cuda_graphs(tiny(**graphs), cuda, SINGLE)
    assert not _cuda_graphs(tiny(), cuda, SINGLE)
    assert not _cuda_graphs(tiny(**graphs), cpu, SINGLE)  # CUDA only, like train.amp
    assert not _cuda_graphs(tiny(), cuda, ddp)
    with pytest.raises(ValueError, match="does not work with DDP"):
        _cuda_graphs(tiny(**graphs), cuda, ddp)


@pytest.mark.slow
def test_screening_run_is_the_shortened_recipe(tiny, tmp_path):
    summary = train(tiny(epochs=4, **{"train.screening": 0.5}), tmp_path)
    assert (summary["epochs"], summary["screening"]) == (2, 0.5)
    saved = load_checkpoint(tmp_path / "last.pt")["config"]
    assert saved["train"]["epochs"] == 2 and saved["train"]["screening"] == 0.5


@pytest.mark.slow
def test_bn_averages_restart_at_each_epoch(tiny, tmp_path):
    """model.bn_momentum=null: after two epochs of 4 batches every BN has counted the last epoch's
    4 batches, not all 8 (and the eval saw that epoch's average)."""
    train(tiny(epochs=2, **{"model.bn_momentum": None}), tmp_path / "dynamic")
    train(tiny(epochs=2), tmp_path / "ema")
    counts = lambda run: {int(v) for k, v in load_checkpoint(tmp_path / run / "last.pt")["model"].items()  # noqa: E731
                          if k.endswith("num_batches_tracked")}
    assert counts("dynamic") == {4} and counts("ema") == {8}


def test_a_checkpoint_older_than_a_config_key_resumes_at_its_default(tiny):
    """A key added to the schema since the checkpoint was written defaults to what the code did
    before it existed: model.bn_momentum's 0.1 resumes, null (a different run) is refused."""
    from dataclasses import asdict

    from resnet_train.resume import check_resume_config

    saved = asdict(tiny())
    del saved["model"]["bn_momentum"]
    check_resume_config(saved, asdict(tiny()))
    with pytest.raises(CheckpointError, match=r"model\.bn_momentum \(0\.1 -> None\)"):
        check_resume_config(saved, asdict(tiny(**{"model.bn_momentum": None})))
