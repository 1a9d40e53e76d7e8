"""Every published ablation composes and trains (tiny) on CPU; sweeps pack and continue."""

import json

import pytest
from omegaconf import OmegaConf

from resnet_train import published
from resnet_train.config import validate
from resnet_train.train import train

from .conftest import CONF, TINY, run_cli

EXPERIMENTS = sorted(str(p.relative_to(CONF / "experiment").with_suffix(""))
                     for p in (CONF / "experiment").rglob("*.yaml") if p.stem != "recipe")


def test_every_source_has_its_arms():
    assert {e.split("/")[0] for e in EXPERIMENTS} == {"blog", "he2015", "identity_mappings", "wrn", "imagenet", "speed"}
    from resnet_train.report import GROUPS

    assert {arm.experiment for group in GROUPS for arm in group.arms} == set(EXPERIMENTS)  # the report knows each


def test_every_published_figure_names_an_arm_and_every_statistic_a_figure(compose):
    for data, table in published.ERRORS.items():
        assert {e for e, _ in table} <= set(EXPERIMENTS), data
    for experiment, model, data in published.STATISTICS:
        assert published.error(experiment, model, data) is not None
    # The CIFAR-100 figures are of each arm's own network (its recipe run with data=cifar100).
    for experiment, model in published.CIFAR100:
        assert OmegaConf.to_object(compose(f"experiment={experiment}", "data=cifar100")).model.label == model


@pytest.mark.slow
@pytest.mark.parametrize("name", EXPERIMENTS)
def test_experiment_composes_cites_and_trains_tiny(compose, name, tmp_path):
    header = (CONF / "experiment" / f"{name}.yaml").read_text().split("defaults")[0]
    cfg = OmegaConf.to_object(compose(f"experiment={name}"))
    assert cfg.experiment == name
    validate(cfg)
    # Each arm has its published error in resnet_train/published.py, or says why it has none.
    assert published.error(name, cfg.model.label) is not None or "No published anchor" in header
    # Shrink to seconds on CPU, keeping the arm's unit, shortcut, optimizer and schedule.
    m = cfg.model
    if m.stem == "imagenet":
        m.depth, m.block = 18, "basic"
    else:
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
                                   "optim.nesterov": True, "sched.milestones": [31250, 46875],
                                   "train.iterations": 78125, "data.sampler": "replacement",
                                   "model.init": "gcr"}),
    ("blog/adagrad", {"optim.name": "adagrad", "optim.lr": 0.1, "optim.weight_decay": 0.0}),
    ("he2015/resnet110", {"sched.unit": "iterations", "sched.milestones": [32000, 48000], "train.iterations": 64000,
                          "train.epochs": None, "sched.warmup": 400, "sched.warmup_lr": 0.01, "model.shortcut": "A",
                          "model.init": "fb"}),
    ("he2015/resnet20", {"sched.warmup": 0, "model.depth": 20}),
    ("he2015/plain56", {"model.shortcut": "none", "model.depth": 56, "model.unit": None, "sched.warmup": 0,
                        "train.iterations": 64000, "data.normalize": "pixel"}),
    ("identity_mappings/relu_only_preact", {"model.unit": "relu_only_preact", "model.depth": 164,
                                            "model.block": "bottleneck", "model.init": "fb"}),
    ("wrn/wrn_28_10_dropout", {"model.dropout": 0.3, "optim.weight_decay": 5e-4, "sched.gamma": 0.2,
                               "sched.milestones": [59, 119, 159], "train.epochs": 200, "data.pad_mode": "reflect",
                               "model.init": "wrn"}),
    ("wrn/wrn_40_10_dropout", {"model.depth": 40, "model.widen_factor": 10, "model.dropout": 0.3,
                               "sched.milestones": [59, 119, 159], "train.epochs": 200, "model.init": "wrn"}),
    ("wrn/svhn_wrn_16_8_dropout", {"model.depth": 16, "model.widen_factor": 8, "model.dropout": 0.4,
                                   "data.name": "svhn", "model.init": "wrn", "train.batch_size": 128}),
])
def test_experiment_recipes_match_the_papers(compose, name, checks):
    cfg = compose(f"experiment={name}")
    for key, value in checks.items():
        assert OmegaConf.select(cfg, key) == value, key


def test_imagenet_recipe_matches_fb_resnet_torch(compose):
    cfg = compose("experiment=imagenet/resnet50")
    assert (cfg.model.depth, cfg.model.stem, cfg.data.name, cfg.data.image_size) == (50, "imagenet", "imagefolder", 224)
    assert (cfg.train.epochs, cfg.train.batch_size, cfg.optim.lr, cfg.optim.weight_decay) == (90, 256, 0.1, 1e-4)
    assert (cfg.sched.name, cfg.sched.step_size, cfg.sched.gamma) == ("step", 30, 0.1)
    assert (cfg.data.color_jitter, cfg.data.lighting, cfg.data.augment) == (0.4, 0.1, "imagenet")


@pytest.mark.parametrize("name, unit, projection_bn, stage_entry, crop_aspect", [
    ("resnet18", None, False, None, "squared"), ("resnet34", None, False, None, "squared"),
    ("resnet50", "bn_after_add", False, None, "squared"), ("resnet101", None, None, None, "squared"),
    ("resnet152", None, None, None, "uniform"), ("preresnet200", None, True, "branch", "uniform")])
def test_imagenet_arms_are_the_released_models(compose, name, unit, projection_bn, stage_entry, crop_aspect):
    """fb.resnet.torch's figures are those of its released models (pretrained/README.md@985e569),
    which differ from its models/*.lua, and were partly trained before a fix of its crop, as
    docs/fidelity.md says."""
    cfg = compose(f"experiment=imagenet/{name}")
    assert (cfg.model.unit, cfg.model.projection_bn, cfg.model.stage_entry) == (unit, projection_bn, stage_entry)
    assert cfg.data.crop_aspect == crop_aspect


def write_image_folder(root, per_class_train=4, per_class_val=2):
    """A real ImageFolder tree: JPEG files of the shipped CIFAR-10 sample, as unpack_cifar10.py
    --layout folder writes them."""
    from importlib import resources

    import numpy as np

    with resources.files("resnet_train").joinpath("assets/cifar10_sample.npz").open("rb") as f:
        z = np.load(f)
        for split, source, count in (("train", "train", per_class_train), ("val", "test", per_class_val)):
            buf, off, labels = z[f"{source}_jpeg"].tobytes(), z[f"{source}_offsets"], z[f"{source}_labels"]
            for cls in range(10):
                idx = np.flatnonzero(labels == cls)[:count]
                (root / split / f"class{cls}").mkdir(parents=True)
                for i in idx:
                    (root / split / f"class{cls}" / f"{i:05d}.jpg").write_bytes(buf[off[i]:off[i + 1]])


@pytest.mark.slow
def test_imagenet_recipe_runs_end_to_end_on_an_image_folder(tmp_path):
    write_image_folder(tmp_path / "tree")
    proc = run_cli("experiment=imagenet/resnet18", f"data.root={tmp_path / 'tree'}", "data.num_classes=10",
                   "data.num_workers=0", "train.epochs=null", "train.iterations=2", "train.batch_size=8",
                   "train.eval_batch_size=10", f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["experiment"] == "imagenet/resnet18" and summary["steps"] == 2
    record = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[-1])
    assert 0 <= record["test_err5"] <= record["test_err"] <= 100  # top-5 reported beside top-1


def test_command_line_overrides_the_experiment(compose):
    cfg = compose("experiment=blog/bn_after_add", "model=resnet56", "optim.lr=0.05")
    assert (cfg.model.depth, cfg.model.unit, cfg.optim.lr) == (56, "bn_after_add", 0.05)


# train.iterations=null: the blog's recipe is defined in iterations, as gcr's code counts.
SWEEP_TINY = [*TINY, "data.train_size=128", "data.test_size=100", "train.epochs=1", "train.iterations=null",
              "resume=auto"]


@pytest.mark.slow
def test_packed_sweep_runs_every_job_and_a_rerun_skips_finished_ones(tmp_path):
    sweep = tmp_path / "sweep"
    args = ["-m", "experiment=blog/bn_after_add,blog/original", "seed=0,1", *SWEEP_TINY, "model.depth=8",
            f"hydra.sweep.dir={sweep}"]
    # Loader workers inside joblib's processes (they once failed: 'Process' object has no attribute 'env').
    workers = [a.replace("data.num_workers=0", "data.num_workers=2") for a in args]
    first = run_cli(*workers, "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    summaries = {p.parent.name: json.loads(p.read_text()) for p in sweep.glob("*/summary.json")}
    # Each job's folder names the values it sweeps, and so does its TensorBoard run.
    last = "3_experiment=blog-original,seed=1"
    assert sorted(summaries) == ["0_experiment=blog-bn_after_add,seed=0", "1_experiment=blog-bn_after_add,seed=1",
                                 "2_experiment=blog-original,seed=0", last]
    assert sorted((s["experiment"], s["seed"]) for s in summaries.values()) == [
        ("blog/bn_after_add", 0), ("blog/bn_after_add", 1), ("blog/original", 0), ("blog/original", 1)]
    # A job that was cut short resumes; finished ones are skipped.
    (sweep / last / "summary.json").unlink()
    again = run_cli(*args, cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert again.stdout.count("already holds this run") == 3
    resumed = json.loads((sweep / last / "summary.json").read_text())
    assert resumed["final_test_err"] == summaries[last]["final_test_err"]
