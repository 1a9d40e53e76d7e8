"""seeds=K: K seeds of one arm trained as one K-member network (resnet_train/members.py)."""

import copy
import json

import pytest
import torch
import torch.nn.functional as F

from resnet_train import members as kw
from resnet_train.config import OptimConfig
from resnet_train.distributed import Dist
from resnet_train.engine import TrainStep, evaluate
from resnet_train.optim import build_optimizer

from .conftest import net, no_cuda, signal_after_step


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.double() - b.double()).norm() / b.double().norm().clamp_min(1e-30)).item()


def standalone_and_wide(k: int, **spec):
    """k standalone models, each initialised from its own seed as its run would be, and their
    K-member network."""
    models = []
    for seed in range(k):
        torch.manual_seed(seed)
        models.append(net(**spec))
    wide = kw.combine(models)
    return models, wide


CIFAR_SPECS = [dict(depth=8), dict(depth=8, shortcut="B", unit="full_preact"),
               dict(depth=11, block="bottleneck", shortcut="C"), dict(family="wrn", depth=10, widen_factor=2),
               dict(depth=8, shortcut="none")]
IMAGENET = dict(depth=18, stem="imagenet", shortcut="B")


def cases(fp32_tol: float, imagenet_marks=()) -> list:
    """float32 for the CIFAR nets, as the issue asks. The ImageNet stem's max-pool is not continuous:
    where two inputs nearly tie, kernels that round differently route the gradient to different
    pixels (a float32 standalone run differs from its own float64 run by 0.6% there), so that net
    is held to float64, where every net must agree to 1e-9."""
    fp32 = [(spec, torch.float32, fp32_tol) for spec in CIFAR_SPECS]
    fp64 = [(spec, torch.float64, 1e-9) for spec in CIFAR_SPECS]
    return fp32 + fp64 + [pytest.param(IMAGENET, torch.float64, 1e-9, marks=imagenet_marks)]


CASES = cases(1e-5, imagenet_marks=pytest.mark.slow)  # the ImageNet net: 6 s on 2 CPU cores


def case_id(v) -> str:
    return "-".join(map(str, v.values())) if isinstance(v, dict) else str(v).replace("torch.", "")


CPU = torch.device("cpu")


@pytest.mark.parametrize("spec,dtype,tol", CASES, ids=case_id)
def test_each_member_gives_its_standalone_logits_and_gradients(spec, dtype, tol):
    check_logits_and_gradients(spec, dtype, tol, CPU)


def check_logits_and_gradients(spec: dict, dtype: torch.dtype, tol: float, device: torch.device) -> None:
    k = 3
    models, wide = standalone_and_wide(k, **spec)
    models, wide = [m.to(device, dtype) for m in models], wide.to(device, dtype)
    size = 32  # the ImageNet stem too: 1 px left at stage 4, every layer still exercised
    xs = [torch.randn(6, 3, size, size, dtype=dtype, device=device) for _ in range(k)]
    ys = [torch.randint(0, 10, (6,), device=device) for _ in range(k)]
    logits = wide(torch.cat(xs, 1))
    assert logits.shape == (6, k, 10)
    F.cross_entropy(logits.transpose(1, 2), torch.stack(ys, 1), reduction="none").mean(0).sum().backward()
    for i, (model, x, y) in enumerate(zip(models, xs, ys, strict=True)):
        ref = model(x)
        assert rel(logits[:, i], ref) < tol
        F.cross_entropy(ref, y).backward()
        wide_grads = kw.member_state({n: p.grad for n, p in wide.named_parameters()}, i, k)
        for name, p in model.named_parameters():
            assert rel(wide_grads[name], p.grad) < tol, name


# cuDNN runs a grouped convolution with other algorithms than K separate ones; fp32 with TF32
# off (as training sets it), so rounding is all that differs.
CUDA_CASES = cases(1e-4)


@pytest.mark.gpu
@no_cuda
@pytest.mark.parametrize("spec,dtype,tol", CUDA_CASES, ids=case_id)
def test_each_member_gives_its_standalone_logits_and_gradients_on_cuda(spec, dtype, tol, monkeypatch):
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    check_logits_and_gradients(spec, dtype, tol, torch.device("cuda"))


def test_member_states_unpack_exactly():
    models, wide = standalone_and_wide(3, depth=8)
    packed = wide.state_dict()
    for i, model in enumerate(models):
        mine = kw.member_state(packed, i, 3)
        assert mine.keys() == model.state_dict().keys()
        assert all(torch.equal(mine[n], t) for n, t in model.state_dict().items())


def test_members_are_evaluated_as_their_standalone_networks():
    check_member_evaluation(CPU)


@pytest.mark.gpu
@no_cuda
def test_members_are_evaluated_as_their_standalone_networks_on_cuda():
    check_member_evaluation(torch.device("cuda"))


def check_member_evaluation(device: torch.device) -> None:
    """One eval pass of the K-member network over MemberBatches gives each member the loss, error
    and top-5 error of its own network on its own batches (eval-mode BN: its own running stats)."""
    k = 3
    models, _ = standalone_and_wide(k, depth=8)
    for model in models:  # running statistics that differ between members
        model.double().train()(torch.randn(32, 3, 32, 32, dtype=torch.float64) * (1 + torch.rand(1)))
    models = [m.to(device) for m in models]
    wide = kw.combine(models)
    loaders = [[(torch.randn(n, 3, 32, 32, dtype=torch.float64), torch.randint(0, 10, (n,))) for n in (8, 8, 5)]
               for _ in range(k)]
    together = evaluate(wide, kw.MemberBatches(loaders), device=device, top5=True, members=k)
    assert len(together) == k
    for model, loader, ours in zip(models, loaders, together, strict=True):
        alone = evaluate(model, loader, device=device, top5=True)
        assert ours.keys() == alone.keys() == {"loss", "err", "err5"}
        assert ours["loss"] == pytest.approx(alone["loss"], rel=1e-9)
        assert (ours["err"], ours["err5"]) == (alone["err"], alone["err5"])
    assert len({round(res["loss"], 6) for res in together}) == k  # the members really differ


def flat(state: dict) -> torch.Tensor:
    return torch.cat([t.double().flatten() for t in state.values() if t.is_floating_point()])


def train_both(k: int, cfg: OptimConfig, dtype: torch.dtype, steps: int = 3, exact: bool = False,
               device: torch.device = CPU):
    """k standalone TrainSteps and one K-member TrainStep after `steps` steps on the same data;
    exact=True adds the standalone runs in float64, the rounding-free reference. On CUDA, SGD and
    Adam take their fused kernels (optim.build_optimizer)."""
    models, wide = standalone_and_wide(k, depth=8)
    refs = [copy.deepcopy(m).to(device, torch.float64) for m in models] if exact else []
    models, wide = [m.to(device, dtype) for m in models], wide.to(device, dtype)
    solo, ref = ([TrainStep(m, build_optimizer(m, cfg), device=device, amp=False) for m in group]
                 for group in (models, refs))
    together = TrainStep(wide, build_optimizer(wide, cfg), device=device, amp=False, members=k)
    for _ in range(steps):
        xs = [torch.randn(16, 3, 32, 32, dtype=torch.float64, device=device) for _ in range(k)]
        ys = [torch.randint(0, 10, (16,), device=device) for _ in range(k)]
        for step, x, y in zip(solo, xs, ys, strict=True):
            step(x.to(dtype), y)
        for step, x, y in zip(ref, xs, ys, strict=False):
            step(x, y)
        together(torch.cat(xs, 1).to(dtype), torch.stack(ys, 1))
    return solo, together, ref


OPTIMIZERS = [dict(name="sgd", nesterov=True), dict(name="adam", lr=1e-3), dict(name="rmsprop", lr=1e-3),
              dict(name="adagrad"), dict(name="adadelta", lr=1.0)]


@pytest.mark.slow
@pytest.mark.parametrize("optim", OPTIMIZERS, ids=lambda o: o["name"])
def test_training_steps_match_standalone_runs(optim):
    check_training_steps(optim, CPU)


def check_training_steps(optim: dict, device: torch.device) -> None:
    """In float64, where rounding cannot hide a mismatch: every weight, buffer and optimizer
    state tensor of every member equals its standalone run's."""
    k = 3
    solo, together, _ = train_both(k, OptimConfig(**optim), torch.float64, device=device)
    weights, opt_state = together.model.state_dict(), together.optimizer.state_dict()
    for i, step in enumerate(solo):
        mine = kw.member_state(weights, i, k)
        for name, t in step.model.state_dict().items():
            assert (rel(mine[name], t) < 1e-9) if t.is_floating_point() else torch.equal(mine[name], t), name
        theirs, ours = step.optimizer.state_dict()["state"], kw.member_optimizer(opt_state, i, k)["state"]
        assert theirs.keys() == ours.keys()
        for idx, entry in theirs.items():
            for key, value in entry.items():
                if isinstance(value, torch.Tensor) and value.dim() > 0:
                    assert rel(ours[idx][key], value) < 1e-9, (idx, key)
        assert step.sums.loss_sum.item() == pytest.approx(together.sums.loss_sum[i].item(), rel=1e-12)
        assert step.sums.wrong.item() == together.sums.wrong[i].item()


@pytest.mark.slow
@pytest.mark.gpu
@no_cuda
@pytest.mark.parametrize("optim", OPTIMIZERS, ids=lambda o: o["name"])
def test_training_steps_match_standalone_runs_on_cuda(optim):
    check_training_steps(optim, torch.device("cuda"))


@pytest.mark.slow
def test_training_steps_match_standalone_runs_in_float32():
    """In float32, each member and each standalone run lie within rounding of the float64 run.
    (CPU float32 kernels are not equally exact on every block of channels: a BN bias gradient, a
    sum of near-cancelling terms, can be off by 1% in either run, so the bound is on all weights.)"""
    k = 3
    solo, together, ref = train_both(k, OptimConfig(name="sgd", nesterov=True), torch.float32, exact=True)
    weights = together.model.state_dict()
    for i, (step, exact) in enumerate(zip(solo, ref, strict=True)):
        truth = flat(exact.model.state_dict())
        assert rel(flat(step.model.state_dict()), truth) < 1e-4
        assert rel(flat(kw.member_state(weights, i, k)), truth) < 1e-4
        assert step.sums.loss_sum.item() == pytest.approx(together.sums.loss_sum[i].item(), rel=1e-5)


def test_seeds_is_refused_under_ddp(tiny, tmp_path):
    from resnet_train.train import train

    with pytest.raises(ValueError, match="seeds=2 trains its members in one process and does not run under torchrun"):
        train(tiny(epochs=1, seeds=2), tmp_path, dist=Dist(0, 2, 0))


@pytest.mark.slow
def test_members_are_run_folders_like_any_run(tiny, tmp_path):
    from resnet_train.modes import evaluate_checkpoint
    from resnet_train.report import main as report
    from resnet_train.train import train

    summaries = train(tiny(epochs=2, seed=3, seeds=2, **{"model.dropout": 0.0}), tmp_path / "k")
    assert [s["seed"] for s in summaries] == [3, 4]
    assert [s["members"] for s in summaries] == [2, 2]  # one process's wall time, shared (report: Compute)
    solo = train(tiny(epochs=2, seed=4, **{"model.dropout": 0.0}), tmp_path / "solo")
    for summary in summaries:
        folder = tmp_path / "k" / f"seed{summary['seed']}"
        for name in ("summary.json", "metrics.jsonl", "last.pt", "best.pt"):
            assert (folder / name).is_file(), name
        assert any((folder / "tb").iterdir())
        state = torch.load(folder / "last.pt", weights_only=True)
        assert state["config"]["seed"] == summary["seed"] and state["config"]["seeds"] == 1
        # A normal single-seed checkpoint: mode=eval gives the run's own final error.
        res = evaluate_checkpoint(tiny(mode="eval", ckpt=str(folder / "last.pt")))
        assert res["err"] == pytest.approx(summary["final_test_err"])
    # Member seed 4 is the run seed=4 alone, up to float rounding in other kernels.
    member = [json.loads(line) for line in (tmp_path / "k" / "seed4" / "metrics.jsonl").read_text().splitlines()]
    alone = [json.loads(line) for line in (tmp_path / "solo" / "metrics.jsonl").read_text().splitlines()]
    assert member[0]["train_loss"] == pytest.approx(alone[0]["train_loss"], rel=1e-3)
    assert abs(summaries[1]["final_test_err"] - solo["final_test_err"]) <= 3.0
    out = tmp_path / "results.md"
    assert report([str(tmp_path / "k"), "--out", str(out)]) == 0
    assert "| - | resnet-8 | 2 |" in out.read_text()  # the report sees two seeds of one arm


@pytest.mark.slow
def test_interrupted_members_resume_exactly(tiny, tmp_path, monkeypatch):
    from resnet_train.interrupt import Interrupted
    from resnet_train.train import train

    straight = train(tiny(epochs=2, seeds=2), tmp_path / "a")
    signal_after_step(monkeypatch, 6)
    with pytest.raises(Interrupted, match=f"saved in each member's last.pt below {tmp_path / 'b'}.*resume=auto"):
        train(tiny(epochs=2, seeds=2), tmp_path / "b")
    monkeypatch.undo()
    resumed = train(tiny(epochs=2, seeds=2, resume="auto"), tmp_path / "b")
    for a, b in zip(straight, resumed, strict=True):
        assert a["final_test_err"] == b["final_test_err"] and a["steps"] == b["steps"]
        ckpt_a = torch.load(tmp_path / "a" / f"seed{a['seed']}" / "last.pt", weights_only=True)
        ckpt_b = torch.load(tmp_path / "b" / f"seed{b['seed']}" / "last.pt", weights_only=True)
        assert all(torch.equal(ckpt_a["model"][n], ckpt_b["model"][n]) for n in ckpt_a["model"])
    # A member's checkpoint also resumes as the standalone run it is.
    more = train(tiny(epochs=3, seed=1, resume=str(tmp_path / "b" / "seed1" / "last.pt")), tmp_path / "c")
    assert more["epochs"] == 3
