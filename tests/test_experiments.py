"""Every published ablation composes and trains (tiny) on CPU; sweeps pack and continue."""

import json

import pytest
from omegaconf import OmegaConf

from resnet_train.config import validate
from resnet_train.train import train

from .conftest import CONF, run_cli
from .test_cli import TINY

EXPERIMENTS = sorted(str(p.relative_to(CONF / "experiment").with_suffix(""))
                     for p in (CONF / "experiment").rglob("*.yaml") if p.stem != "recipe")


def test_every_source_has_its_arms():
    assert {e.split("/")[0] for e in EXPERIMENTS} == {"blog", "he2015", "identity_mappings", "wrn"}
    from resnet_train.report import GROUPS

    assert {arm.experiment for group in GROUPS for arm in group.arms} == set(EXPERIMENTS)  # the report knows each


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_experiment_composes_cites_and_trains_tiny(compose, name, tmp_path):
    text = (CONF / "experiment" / f"{name}.yaml").read_text()
    header = text.split("defaults")[0]
    assert "%" in header or "No published anchor" in header, "each arm cites its published error in a comment"
    cfg = OmegaConf.to_object(compose(f"experiment={name}"))
    assert cfg.experiment == name
    validate(cfg)
    # Shrink to seconds on CPU, keeping the arm's unit, shortcut, optimizer and schedule.
    m = cfg.model
    m.depth = {"wrn": 10}.get(m.family, 11 if m.block == "bottleneck" else 8)
    m.widen_factor = 1
    cfg.data = OmegaConf.to_object(compose("data=cifar10_sample")).data
    cfg.data.train_size, cfg.data.test_size, cfg.data.num_workers = 64, 32, 0
    cfg.train.epochs, cfg.train.iterations, cfg.train.batch_size, cfg.train.eval_batch_size = None, 2, 32, 32
    cfg.train.progress = False
    summary = train(cfg, tmp_path)
    assert summary["steps"] == 2 and summary["experiment"] == name and summary["final_test_err"] is not None


@pytest.mark.parametrize("name,checks", [
    ("blog/bn_after_add_no_relu", {"model.unit": "bn_after_add", "model.relu_after_add": False, "model.depth": 110,
                                   "optim.nesterov": True, "sched.milestones": [81, 122], "train.epochs": 164}),
    ("blog/adagrad", {"optim.name": "adagrad", "optim.lr": 0.1, "optim.weight_decay": 1e-4}),
    ("he2015/resnet110", {"sched.unit": "iterations", "sched.milestones": [32000, 48000], "train.iterations": 64000,
                          "train.epochs": None, "sched.warmup": 400, "sched.warmup_lr": 0.01, "model.shortcut": "A"}),
    ("he2015/resnet20", {"sched.warmup": 0, "model.depth": 20}),
    ("identity_mappings/relu_only_preact", {"model.unit": "relu_only_preact", "model.depth": 164,
                                            "model.block": "bottleneck"}),
    ("wrn/wrn_28_10_dropout", {"model.dropout": 0.3, "optim.weight_decay": 5e-4, "sched.gamma": 0.2,
                               "sched.milestones": [60, 120, 160], "train.epochs": 200, "data.pad_mode": "reflect"}),
])
def test_experiment_recipes_match_the_papers(compose, name, checks):
    cfg = compose(f"experiment={name}")
    for key, value in checks.items():
        assert OmegaConf.select(cfg, key) == value, key


def test_command_line_overrides_the_experiment(compose):
    cfg = compose("experiment=blog/bn_after_add", "model=resnet56", "optim.lr=0.05")
    assert (cfg.model.depth, cfg.model.unit, cfg.optim.lr) == (56, "bn_after_add", 0.05)


SWEEP_TINY = [*TINY, "data.train_size=128", "data.test_size=100", "train.epochs=1", "resume=auto"]


def test_packed_sweep_runs_every_job_and_a_rerun_skips_finished_ones(tmp_path):
    sweep = tmp_path / "sweep"
    args = ["-m", "experiment=blog/bn_after_add,blog/original", "seed=0,1", *SWEEP_TINY, "model.depth=8",
            f"hydra.sweep.dir={sweep}"]
    first = run_cli(*args, "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    summaries = {p.parent.name: json.loads(p.read_text()) for p in sweep.glob("*/summary.json")}
    assert len(summaries) == 4
    assert sorted((s["experiment"], s["seed"]) for s in summaries.values()) == [
        ("blog/bn_after_add", 0), ("blog/bn_after_add", 1), ("blog/original", 0), ("blog/original", 1)]
    # A job that was cut short resumes; finished ones are skipped.
    (sweep / "3" / "summary.json").unlink()
    again = run_cli(*args, cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert again.stdout.count("finished") == 3 and again.stdout.count("skipped") == 3
    assert json.loads((sweep / "3" / "summary.json").read_text())["final_test_err"] == summaries["3"]["final_test_err"]
