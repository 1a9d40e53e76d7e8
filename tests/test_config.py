import pytest
import torch
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf

from resnet_train.config import Config, validate
from resnet_train.models import build_model

from .conftest import CONF, our_line

GROUP_OPTIONS = [(group.name, str(f.relative_to(group).with_suffix(""))) for group in sorted(CONF.iterdir())
                 if group.is_dir() and group.name != "hydra" for f in sorted(group.rglob("*.yaml"))]


def to_config(dict_cfg) -> Config:
    return OmegaConf.to_object(dict_cfg)


@pytest.mark.parametrize("group,option", GROUP_OPTIONS, ids=[f"{g}={o}" for g, o in GROUP_OPTIONS])
def test_every_config_file_composes_and_validates(compose, group, option):
    cfg = to_config(compose(f"{group}={option}"))
    assert isinstance(cfg, Config)
    if cfg.data.name == "synthetic":
        assert cfg.data.train_size and cfg.data.test_size
    validate(cfg)


@pytest.mark.parametrize("option", [o for g, o in GROUP_OPTIONS if g == "model"])
def test_every_model_preset_builds(compose, option):
    cfg = to_config(compose(f"model={option}"))
    if cfg.model.depth > 200:  # ResNet-1202 and PreResNet-1001 build in tests/test_models.py
        return
    with torch.device("meta"):  # the structure, without drawing weights
        model = build_model(cfg.model, cfg.data.num_classes)
    assert model.fc.out_features == 10


def test_design_command_lines_compose(compose):
    cfg = to_config(compose("model=wrn_28_10", "optim=sgd"))
    assert (cfg.model.family, cfg.model.depth, cfg.model.widen_factor) == ("wrn", 28, 10)
    cfg = to_config(compose("model=resnet110", "model.unit=bn_after_add", "model.relu_after_add=false"))
    assert cfg.model.unit == "bn_after_add" and cfg.model.relu_after_add is False
    build_model(cfg.model)


def test_defaults_match_he2015_cifar_recipe(compose):
    cfg = to_config(compose())
    assert (cfg.optim.name, cfg.optim.lr, cfg.optim.momentum, cfg.optim.weight_decay) == ("sgd", 0.1, 0.9, 1e-4)
    assert cfg.train.batch_size == 128 and cfg.train.epochs == 164
    assert cfg.sched.milestones == [80, 121] and cfg.model.shortcut == "A"  # fb.resnet.torch: from epoch 81, 122


@pytest.mark.parametrize("override,fragment", [
    ("model.colour=red", "colour"),
    ("model.depth=twenty", "depth"),
    ("model=resnet21", "resnet21"),
    ("optim=lbfgs", "lbfgs"),
    ("train.batch_size=1.5", "batch_size"),
])
def test_unknown_keys_and_wrong_types_fail_at_compose(compose, override, fragment):
    with pytest.raises(ConfigCompositionException, match=fragment):
        compose(override)


# Every bad value outside the model section (tests/test_models.py has those), with the line the
# user gets from the command.
BAD_VALUES = [
    (["seeds=0"], "seeds is how many seeds to train at once, a positive integer; got 0"),
    (["seed=-1"], "seed must lie in [0, 4294967295] with seeds=1 (numpy's seeds are unsigned 32-bit integers), got -1"),
    (["seed=4294967295", "seeds=2"], "seed must lie in [0, 4294967294] with seeds=2"),
    (["optim=adam", "optim.nesterov=true"], "optim.nesterov=true is SGD's Nesterov momentum and needs optim.name=sgd"),
    (["optim.nesterov=true", "optim.momentum=0"], "got optim.name=sgd, optim.momentum=0.0; set optim.nesterov=false"),
    (["seeds=2", "train.grad_norm_every=10"], "train.grad_norm_every logs one network's gradients; with seeds=2"),
    (["seeds=2", "resume=/tmp/last.pt"], "resume=/tmp/last.pt names one checkpoint; a seeds=2 run resumes all"),
    (["train.grad_norm_every=-5"], "train.grad_norm_every must be >= 0 iterations (0: off), got -5"),
    (["train.grad_norm_by=layer"], "train.grad_norm_by='layer' is not valid; choose one of stage, unit"),
    (["mode=analyze"], "mode=analyze needs a checkpoint: add ckpt=PATH/TO/last.pt, or ckpt=FOLDER for every run in it"),
    (["optim.lr=0"], "optim.lr must be positive, got 0.0"),
    (["optim.lr=-0.1"], "optim.lr must be positive, got -0.1"),
    (["train.batch_size=0"], "train.batch_size must be positive, got 0"),
    (["train.epochs=0"], "train.epochs must be positive, got 0"),
    (["train.epochs=-1"], "train.epochs must be positive"),
    (["train.epochs=null"], "exactly one of train.epochs and train.iterations"),
    (["train.iterations=100"], "exactly one of train.epochs and train.iterations"),
    (["data.name=mnist"], "data.name='mnist' is not valid"),
    (["sched.name=linear"], "sched.name='linear' is not valid"),
    (["optim.name=lbfgs"], "optim.name='lbfgs' is not valid"),
    (["mode=eval"], "mode=eval needs a checkpoint: add ckpt="),
    (["device=tpu"], "device='tpu' is not valid"),
    (["sched.milestones=[123,82]"], "milestones must be increasing"),
    (["train.cuda_graphs=true", "train.compile=reduce-overhead"], "both capture CUDA graphs"),
    (["data.crop_aspect=cubic"], "data.crop_aspect='cubic' is not valid; choose one of uniform, squared"),
    (["data.crop_aspect=squared"], "data.crop_aspect=squared shapes the random-sized crop of data.augment=imagenet, "
                                   "but data.augment=cifar; leave data.crop_aspect=uniform"),
    (["model.bn_momentum=0"], "model.bn_momentum=0.0 must lie in (0, 1] (each batch's weight in BN's running"),
    (["model.bn_momentum=1.5"], "model.bn_momentum=1.5 must lie in (0, 1]"),
    (["model.bn_momentum=null", "train.cuda_graphs=true"], "model.bn_momentum=null (BN statistics averaged over each "
                                                           "epoch) weighs each batch by a count read on the host"),
    (["optim.momentum=2"], "optim.momentum is a decay rate in [0, 1), got 2.0"),
    (["optim.rho=1.5"], "optim.rho is a decay rate in [0, 1), got 1.5"),
    (["optim.betas=[0.9,1.2]"], "optim.betas are two decay rates in [0, 1)"),
    (["optim.eps=0"], "optim.eps must be positive"),
    (["train.screening=0"], "train.screening is a fraction"),
    (["train.screening=1.5"], "train.screening is a fraction"),
    (["train.screening=-0.25"], "train.screening is a fraction"),
    (["data.extra=true"], "data.extra=true adds SVHN's extra images, but data.name=cifar10; use data=svhn"),
    (["optim.lr_reference_batch=0"], "optim.lr_reference_batch must be positive, got 0"),
    (["sched.milestones=[-1,80]"], "sched.milestones must be >= 0 epochs, got -1.0"),
    (["sched.gamma=0"], "sched.gamma is the LR's factor at each drop, in (0, 1], got 0.0"),
    (["sched.gamma=10"], "sched.gamma is the LR's factor at each drop, in (0, 1], got 10.0"),
    (["sched=cosine", "sched.min_lr=1"], "sched.min_lr=1.0 is the floor the cosine falls to and must lie in [0, 0.1]"),
    (["sched=cosine", "sched.min_lr=-0.1"], "sched.min_lr=-0.1 is the floor the cosine falls to"),
    # The base LR is the one linear scaling gives: 0.1 x 256 / 128.
    (["sched=cosine", "sched.min_lr=0.3", "train.batch_size=256", "optim.lr_reference_batch=128"],
     "sched.min_lr=0.3 is the floor the cosine falls to and must lie in [0, 0.2]"),
    (["sched.warmup=10", "sched.warmup_lr=-0.01"], "sched.warmup_lr=-0.01 must lie in [0, 0.1] (the base LR"),
    # He 2015's ResNet-110 warm-up at 0.01 would lie ten times above Adam's 1e-3.
    (["experiment=he2015/resnet110", "optim=adam"], "sched.warmup_lr=0.01 must lie in [0, 0.001] (the base LR, "
                                                    "optim.lr) for a warm-up to lead up to it"),
    (["data.pad=-1"], "data.pad must be >= 0 pixels, got -1"),
    (["data.mean=[0.5]"], "data.mean takes 3 values, one per colour channel (0..1 scale), got [0.5]"),
    (["data.std=[0.2,0,0.2]"], "data.std must be positive in every channel, got [0.2, 0.0, 0.2]"),
    (["data.color_jitter=-0.4"], "data.color_jitter must be >= 0, got -0.4"),
    (["data.lighting=-0.1"], "data.lighting must be >= 0, got -0.1"),
]


def test_screening_shortens_a_recipe_proportionally(compose):
    from resnet_train.config import screened

    cfg = screened(to_config(compose("experiment=he2015/resnet110", "train.screening=0.25")))
    assert (cfg.train.iterations, cfg.sched.milestones, cfg.sched.warmup) == (16000, [8000, 12000], 400)
    wrn = screened(to_config(compose("experiment=wrn/wrn_28_10", "train.screening=0.25")))
    assert (wrn.train.epochs, wrn.sched.milestones) == (50, [14.75, 29.75, 39.75])  # [59, 119, 159] / 4
    # 1/64 of 200 epochs is 3 (3.125 rounded): the drops keep their share of the run, [59, 119, 159] x 3/200.
    short = screened(to_config(compose("experiment=wrn/wrn_28_10", "train.screening=0.015625")))
    assert (short.train.epochs, short.sched.milestones) == (3, [0.885, 1.785, 2.385])
    full = to_config(compose("experiment=wrn/wrn_28_10"))
    assert screened(full) is full


EXPERIMENTS = [option for group, option in GROUP_OPTIONS if group == "experiment" and not option.endswith("recipe")]


def test_screening_keeps_every_lr_drop_at_its_share_of_the_run(compose):
    """Each milestone and step of every recipe sits at the same fraction of the screened run as of
    the recipe's: exactly for epochs, to within an iteration's rounding for iterations."""
    from dataclasses import replace

    from resnet_train.config import screened

    checked = {"epochs": 0, "iterations": 0}
    for experiment in EXPERIMENTS:
        recipe = to_config(compose(f"experiment={experiment}"))
        assert (recipe.sched.unit == "epochs") == (recipe.train.epochs is not None), experiment  # one unit
        checked[recipe.sched.unit] += 1
        for fraction in (0.25, 0.03125, 0.015625):
            run = screened(replace(recipe, train=replace(recipe.train, screening=fraction)))
            length, screened_length = ((recipe.train.epochs, run.train.epochs) if recipe.sched.unit == "epochs"
                                       else (recipe.train.iterations, run.train.iterations))
            # Iterations: the length and each milestone rounded, each by half an iteration at most.
            tolerance = 1e-6 if recipe.sched.unit == "epochs" else 1 / screened_length
            pairs = [*zip(recipe.sched.milestones, run.sched.milestones, strict=True),
                     (recipe.sched.step_size, run.sched.step_size)]
            for full, short in pairs:
                assert short / screened_length == pytest.approx(full / length, abs=tolerance), \
                    (experiment, fraction, full, short)
    assert checked["epochs"] >= 10 and checked["iterations"] >= 30


@pytest.mark.parametrize("overrides,message", BAD_VALUES, ids=[" ".join(o) for o, _ in BAD_VALUES])
def test_bad_values_end_the_command_with_one_line(cli, overrides, message):
    code, err = cli(*overrides, "hydra.run.dir=run")
    assert code == 1 and message in our_line(err)


def test_keys_added_with_plus_that_the_schema_lacks_are_refused(cli):
    """Hydra's own hint after a typo (`+optim.lrr=0.1`) must not train with the key ignored."""
    code, err = cli("+optim.lrr=0.1", "hydra.run.dir=run")
    assert code == 1 and our_line(err).startswith("resnet-train: error: optim.lrr: no such key in the config")
