import pytest
import torch

from resnet_train.config import OptimConfig, SchedConfig
from resnet_train.optim import build_optimizer, describe_schedule, drops_at, lr_at, param_groups, unreached

from .conftest import net


def lr(step, sched, base=0.1, spe=100, total=1000):
    return lr_at(step, base_lr=base, sched=sched, steps_per_epoch=spe, total_steps=total)


def test_multistep_by_epochs():
    s = SchedConfig(name="multistep", unit="epochs", milestones=[2, 5], gamma=0.1)
    # 100 iterations per epoch: drops at iterations 200 and 500.
    assert [lr(i, s) for i in (0, 199, 200, 499, 500, 999)] == pytest.approx([0.1, 0.1, 0.01, 0.01, 0.001, 0.001])


def test_multistep_by_iterations_he2015_with_warmup():
    # He 2015 Sec. 4.2: 0.1, /10 at 32k and 48k; ResNet-110 warms up at 0.01 for 400 iterations.
    s = SchedConfig(name="multistep", unit="iterations", milestones=[32000, 48000], warmup=400, warmup_lr=0.01)
    got = [lr(i, s, spe=391, total=64000) for i in (0, 399, 400, 31999, 32000, 47999, 48000, 63999)]
    assert got == pytest.approx([0.01, 0.01, 0.1, 0.1, 0.01, 0.01, 0.001, 0.001])


def test_linear_warmup():
    s = SchedConfig(name="constant", warmup=4, warmup_lr=0.02, warmup_mode="linear")
    assert [lr(i, s) for i in range(6)] == pytest.approx([0.02, 0.04, 0.06, 0.08, 0.1, 0.1])


def test_step_every_n_epochs():
    s = SchedConfig(name="step", unit="epochs", step_size=3, gamma=0.2)
    assert [lr(i * 100, s) for i in (0, 2, 3, 5, 6, 9)] == pytest.approx([0.1, 0.1, 0.02, 0.02, 0.004, 0.0008])


@pytest.mark.parametrize("sched", [
    SchedConfig(milestones=[2, 5]), SchedConfig(milestones=[0.885, 1.785, 2.385]),  # WRN's, screened to 1/64
    SchedConfig(unit="iterations", milestones=[488, 732]), SchedConfig(name="step", step_size=3),
    SchedConfig(name="step", step_size=0.7333)])
def test_drops_at_marks_exactly_the_iterations_where_lr_at_falls(sched):
    # The oracle is lr_at: drops_at clears the optimizer state (sched.reset_state) at these iterations,
    # and a milestone part-way through an epoch must still be met once, at the first iteration past it.
    falls = [i for i in range(1, 1000) if lr(i, sched, spe=97) < lr(i - 1, sched, spe=97) * (1 - 1e-9)]
    assert [i for i in range(1000) if drops_at(i, sched=sched, steps_per_epoch=97)] == falls
    assert falls


@pytest.mark.parametrize("sched, text", [
    (SchedConfig(name="multistep", unit="iterations", milestones=[32000, 48000], warmup=400, warmup_lr=0.01),
     "multistep at [32000, 48000] iterations, the first 400 iterations at lr 0.01"),
    (SchedConfig(name="multistep", milestones=[60, 120, 160], gamma=0.2),
     "multistep at [60, 120, 160] epochs (x0.2 each)"),
    (SchedConfig(name="step", step_size=30), "step every 30 epochs"),
    (SchedConfig(milestones=[0.885, 1.785, 2.385]), "multistep at [0.885, 1.785, 2.385] epochs"),
    (SchedConfig(name="step", step_size=7.5), "step every 7.5 epochs"),
    (SchedConfig(milestones=[], gamma=0.2), "multistep with no milestones (a constant lr)"),
    (SchedConfig(name="cosine", warmup=2500, warmup_lr=0.0, warmup_mode="linear"),
     "cosine, rising linearly from lr 0 over the first 2,500 iterations"),
])
def test_the_log_states_the_whole_schedule(sched, text):
    # The run's log is where a reader checks a recipe: a warm-up or a gamma left out hides a difference.
    assert describe_schedule(sched) == text


@pytest.mark.parametrize("sched", [
    SchedConfig(milestones=[2, 4]), SchedConfig(milestones=[2, 5]), SchedConfig(milestones=[5, 6]),
    SchedConfig(unit="iterations", milestones=[499, 500]), SchedConfig(unit="iterations", milestones=[1, 499]),
    SchedConfig(name="step", step_size=5),
    SchedConfig(name="step", step_size=4, unit="epochs")])
def test_a_schedule_the_run_ends_before_is_named_exactly_when_lr_at_never_reaches_it(sched):
    # The oracle is lr_at itself: a drop that no iteration of the run (0 .. total - 1) feels.
    spe, total = 100, 500
    drops = sum(lr(i, sched, spe=spe, total=total) < lr(i - 1, sched, spe=spe, total=total) for i in range(1, total))
    warned = unreached(sched, steps_per_epoch=spe, total_steps=total)
    assert bool(warned) == (drops == 0 if sched.name == "step" else drops < len(sched.milestones))
    for line in warned:
        assert line.startswith(f"sched.{'milestones' if sched.name == 'multistep' else 'step_size'}")
        assert "500 iterations" in line


def test_a_run_inside_its_warm_up_is_named():
    assert unreached(SchedConfig(name="constant", warmup=500), steps_per_epoch=100, total_steps=500) == [
        "sched.warmup=500 iterations: the run stops after 500 iterations, inside the warm-up"]
    assert unreached(SchedConfig(name="constant", warmup=499), steps_per_epoch=100, total_steps=500) == []


def test_cosine():
    s = SchedConfig(name="cosine", min_lr=0.0)
    assert [lr(i, s) for i in (0, 250, 500, 750, 1000)] == pytest.approx([0.1, 0.085355339, 0.05, 0.014644661, 0.0])


def test_weight_decay_groups():
    model = net(depth=8)
    everything = param_groups(model, 1e-4, decay_bn_and_bias=True)
    assert len(everything) == 1 and len(everything[0]["params"]) == len(list(model.parameters()))
    split = param_groups(model, 1e-4, decay_bn_and_bias=False)
    assert split[1]["weight_decay"] == 0.0 and all(p.ndim == 1 for p in split[1]["params"])
    assert all(p.ndim > 1 for p in split[0]["params"])


@pytest.mark.parametrize("name", ["sgd", "adam", "rmsprop", "adagrad", "adadelta"])
def test_every_optimizer_builds_and_steps(name):
    model = net(depth=8)
    opt = build_optimizer(model, OptimConfig(name=name, lr=0.01, nesterov=name == "sgd"))
    before = model.fc.weight.detach().clone()
    model(torch.randn(4, 3, 32, 32)).sum().backward()
    opt.step()
    assert not torch.equal(before, model.fc.weight)
    expected = {"sgd": torch.optim.SGD, "adam": torch.optim.Adam, "rmsprop": torch.optim.RMSprop,
                "adagrad": torch.optim.Adagrad, "adadelta": torch.optim.Adadelta}[name]
    assert isinstance(opt, expected)
