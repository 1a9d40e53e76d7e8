"""Each recipe against the code that produced its published numbers (docs/fidelity.md): the LR of
every iteration against the reference's own formula, written out here as the Lua code has it, and
the solver settings the Torch blog's arms actually ran with."""

import pytest
import torch
import yaml
from omegaconf import OmegaConf

from resnet_train.config import OptimConfig, SchedConfig
from resnet_train.engine import TrainStep, train_epoch
from resnet_train.optim import build_optimizer, drops_at, lr_at

from .conftest import CONF, net

CIFAR_TRAIN = 50_000


def our_lr(cfg, step: int, steps_per_epoch: int) -> float:
    total = cfg.train.iterations or cfg.train.epochs * steps_per_epoch
    return lr_at(step, base_lr=cfg.optim.lr, sched=OmegaConf.to_object(cfg.sched), steps_per_epoch=steps_per_epoch,
                 total_steps=total)


def test_blog_lr_is_gcr_train_cifar_lua(compose):
    cfg = compose("experiment=blog/original")
    assert cfg.train.iterations * 128 == 200 * CIFAR_TRAIN  # tables: the error at epoch 200.0 (notebook cell 15)

    def gcr(k: int) -> float:  # train-cifar.lua@3d1ed05:181-187; epochCounter per train-helpers.lua:75-79
        epoch_counter = k * 128 // CIFAR_TRAIN
        return 0.1 if epoch_counter < 80 else 0.01 if epoch_counter < 120 else 0.001

    for k in range(0, cfg.train.iterations, 7):
        assert our_lr(cfg, k, 391) == pytest.approx(gcr(k), rel=1e-12), k
    for k in (31249, 31250, 46874, 46875):
        assert our_lr(cfg, k, 391) == pytest.approx(gcr(k), rel=1e-12), k


def test_fb_resnet_torch_cifar_lr_by_epoch(compose):
    cfg = compose("sched=multistep", "train.epochs=164")
    steps = 391

    def fb(epoch: int) -> float:  # train.lua@985e569:174-185, epoch counted from 1
        decay = 2 if epoch >= 122 else 1 if epoch >= 81 else 0
        return 0.1 * 0.1 ** decay

    for epoch in range(1, 165):
        for k in ((epoch - 1) * steps, epoch * steps - 1):
            assert our_lr(cfg, k, steps) == pytest.approx(fb(epoch)), epoch


# The WRN scripts' settings: (learningRate, epoch_step, learningRateDecayRatio, max_epoch).
WRN_CIFAR = (0.1, (60, 120, 160), 0.2, 200)  # scripts/train_cifar.sh@51af0c5:3-6
WRN_SVHN = (0.01, (80, 120), 0.1, 160)  # scripts/train_svhn.sh@5ed3b72:3-7


@pytest.mark.parametrize("arm,script", [
    *((arm, WRN_CIFAR) for arm in ("wrn/wrn_28_10", "wrn/wrn_28_10_dropout", "wrn/wrn_16_8", "wrn/wrn_40_4",
                                   "wrn/wrn_40_10_dropout")),
    ("wrn/svhn_wrn_16_8_dropout", WRN_SVHN)])
def test_wrn_lr_by_epoch_is_train_lua(compose, arm, script):
    cfg = compose(f"experiment={arm}")
    steps = 391
    lr, epoch_step, ratio, max_epoch = script
    expected = {}
    for epoch in range(1, max_epoch + 1):  # train.lua@ae6d0d0:173-184: on the start of epoch e (from 1) in epoch_step
        if epoch in epoch_step:
            lr *= ratio
        expected[epoch] = lr
    assert cfg.train.epochs == max_epoch
    for epoch in range(1, max_epoch + 1):
        for k in ((epoch - 1) * steps, epoch * steps - 1):
            assert our_lr(cfg, k, steps) == pytest.approx(expected[epoch]), epoch
    assert cfg.sched.reset_state  # a fresh optimizer state at each drop, train.lua:182-183


@pytest.mark.parametrize("arm", ["he2015/resnet110", "he2015/resnet1202", "identity_mappings/original"])
def test_he_lr_by_iteration_with_warmup(compose, arm):
    cfg = compose(f"experiment={arm}")

    def he(k: int) -> float:  # He 2015 Sec. 4.2 and He 2016's appendix: 0.01 for 400 iterations
        if k < 400:
            return 0.01
        return 0.1 * 0.1 ** ((k >= 32000) + (k >= 48000))

    assert cfg.train.iterations == 64000
    for k in range(0, 64000, 11):
        assert our_lr(cfg, k, 391) == pytest.approx(he(k)), k


def test_imagenet_lr_by_epoch(compose):
    cfg = compose("experiment=imagenet/resnet50")
    for epoch in range(1, 91):  # train.lua@985e569:178: decay = floor((epoch - 1) / 30)
        assert our_lr(cfg, (epoch - 1) * 100, 100) == pytest.approx(0.1 * 0.1 ** ((epoch - 1) // 30))


RECIPES = sorted(CONF.glob("experiment/*/recipe.yaml"))


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.parent.name)
def test_recipes_leave_the_optimizer_to_its_group(path):
    """A recipe that set optim.lr in its body would override every arm's optimizer group."""
    body = yaml.safe_load(path.read_text())
    assert "optim" not in body
    assert any("override /optim" in str(d) for d in body["defaults"])


@pytest.mark.parametrize("arm,expected", [
    ("blog/original", dict(name="sgd", lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-4)),
    ("blog/rmsprop", dict(name="rmsprop", lr=1e-2, alpha=0.9, eps=1e-8, momentum=0.0, weight_decay=0.0)),
    ("blog/adagrad", dict(name="adagrad", lr=0.1, eps=1e-10, weight_decay=0.0)),
    ("blog/adadelta", dict(name="adadelta", lr=1.0, rho=0.3, eps=1e-6, weight_decay=0.0)),
    ("blog/adam", dict(name="adam", lr=5e-3, weight_decay=0.0)),
    ("blog/rmsprop_lr1e-3", dict(name="rmsprop", lr=1e-3, alpha=0.9, eps=1e-8, momentum=0.0, weight_decay=0.0)),
    ("blog/resnet20/adagrad_lr1e-2", dict(name="adagrad", lr=1e-2, eps=1e-10, weight_decay=0.0)),
    ("blog/resnet20/original", dict(name="sgd", lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-4)),
    ("wrn/wrn_28_10", dict(name="sgd", lr=0.1, nesterov=True, weight_decay=5e-4)),
    ("wrn/svhn_wrn_16_8_dropout", dict(name="sgd", lr=0.01, momentum=0.9, nesterov=True, weight_decay=5e-4)),
    ("he2015/resnet20", dict(name="sgd", lr=0.1, momentum=0.9, nesterov=False, weight_decay=1e-4)),
    ("identity_mappings/full_preact", dict(name="sgd", lr=0.1, momentum=0.9, nesterov=False, weight_decay=1e-4)),
])
def test_each_arm_runs_its_references_solver(compose, arm, expected):
    optim = compose(f"experiment={arm}").optim
    assert {k: optim[k] for k in expected} == pytest.approx(expected)


def test_blog_adadelta_runs_without_a_schedule(compose):
    cfg = compose("experiment=blog/adadelta")
    assert cfg.sched.name == "constant" and our_lr(cfg, 70_000, 391) == 1.0


@pytest.mark.parametrize("arm,data", [
    ("blog/original", dict(normalize="pixel_global_std", pad_mode="zero", sampler="replacement", drop_last=False)),
    ("he2015/resnet56", dict(normalize="pixel", pad_mode="zero", sampler="shuffle", drop_last=False)),
    ("identity_mappings/original", dict(normalize="channel", pad_mode="zero", sampler="shuffle", drop_last=False)),
    ("wrn/wrn_28_10", dict(normalize="channel", pad_mode="reflect", sampler="shuffle", drop_last=True)),
    # train_svhn.sh@5ed3b72:10-13: no crop, no flip; pixels in [0, 1] from train and extra (the paper's
    # Sec. 3: the gist that prepared them is not reachable).
    ("wrn/svhn_wrn_16_8_dropout", dict(name="svhn", extra=True, augment="none", normalize="channel",
                                       mean=[0.0, 0.0, 0.0], std=[1.0, 1.0, 1.0], drop_last=True)),
])
def test_each_recipe_prepares_data_as_its_reference(compose, arm, data):
    cfg = compose(f"experiment={arm}").data
    assert {k: cfg[k] for k in data} == data


@pytest.mark.parametrize("arm,data,mean,std", [
    # wrn:train.lua:57 fixes CIFAR-10's values for every dataset it reads.
    ("wrn/wrn_28_10", "cifar10", [125.3, 123.0, 113.9], [63.0, 62.1, 66.7]),
    ("wrn/wrn_28_10", "cifar100", [125.3, 123.0, 113.9], [63.0, 62.1, 66.7]),
    # fb.resnet.torch (Identity Mappings' pipeline) has each dataset's own: fb:datasets/cifar10.lua:38-41,
    # datasets/cifar100.lua:49-52.
    ("identity_mappings/full_preact", "cifar10", [125.3, 123.0, 113.9], [63.0, 62.1, 66.7]),
    ("identity_mappings/full_preact", "cifar100", [129.3, 124.1, 112.4], [68.2, 65.4, 70.4]),
])
def test_recipes_normalise_each_dataset_as_their_reference(compose, arm, data, mean, std):
    cfg = compose(f"experiment={arm}", f"data={data}").data
    assert [255 * m for m in cfg.mean] == pytest.approx(mean, abs=0.06)  # the references' one decimal
    assert [255 * s for s in cfg.std] == pytest.approx(std, abs=0.06)


def test_identity_mappings_bottlenecks_stride_their_first_1x1(compose):
    for arm in ("identity_mappings/original", "identity_mappings/full_preact", "identity_mappings/preresnet1001"):
        assert compose(f"experiment={arm}").model.bottleneck_stride == "1x1"
    for preset in ("resnet50", "preresnet200"):  # the ImageNet presets keep torchvision's 3x3
        assert compose(f"model={preset}").model.bottleneck_stride == "3x3"


def test_reset_state_clears_momentum_exactly_at_each_drop():
    sched = SchedConfig(milestones=[2, 3], reset_state=True)
    assert [k for k in range(40) if drops_at(k, sched=sched, steps_per_epoch=10)] == [20, 30]
    torch.manual_seed(0)
    model = net(depth=8)
    optimizer = build_optimizer(model, OptimConfig(nesterov=True))
    step_fn = TrainStep(model, optimizer, device=torch.device("cpu"), amp=False)
    batches = [(torch.randn(4, 3, 32, 32), torch.randint(0, 10, (4,))) for _ in range(3)]
    seen = []

    def lr_fn(k):
        bufs = [optimizer.state[p].get("momentum_buffer") for p in model.parameters()]
        seen.append(all(b is None for b in bufs))
        return 0.1

    train_epoch(step_fn, batches, lr_fn=lr_fn, step=5, max_steps=100, reset_at=lambda k: k == 7)
    assert seen == [True, False, True]  # fresh at the start, kept at 6, cleared at 7


def test_reset_state_needs_a_stepped_schedule(compose):
    from resnet_train.config import validate

    cfg = OmegaConf.to_object(compose("sched=cosine", "sched.reset_state=true"))
    with pytest.raises(ValueError, match="sched.reset_state=true .* sched.name=cosine"):
        validate(cfg)

