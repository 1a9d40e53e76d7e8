"""The loop's parts on their own: train_epoch, evaluate and the run-folder writer, against
quantities computed here by hand."""

import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from resnet_train.engine import DivergenceError, EpochTotals, TrainStep, evaluate, train_epoch
from resnet_train.metrics import RunLogger

CPU = torch.device("cpu")


def batches(n=5, size=8, classes=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(size, 6, generator=g), torch.randint(0, classes, (size,), generator=g)) for _ in range(n)]


def linear(seed=0):
    torch.manual_seed(seed)
    return nn.Linear(6, 4)


def test_train_epoch_sums_losses_sets_the_lr_per_step_and_steps_sgd_by_hand():
    model, reference = linear(), linear()
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
    data = batches()
    lrs = {k: 0.1 / (k + 1) for k in range(10, 15)}
    totals, stopped = train_epoch(TrainStep(model, optimizer, device=CPU, amp=False), data, lr_fn=lrs.__getitem__,
                                  step=10, max_steps=100)
    losses, wrong = [], 0
    for k, (x, y) in enumerate(data, 10):
        logits = reference(x)
        loss = F.cross_entropy(logits, y)
        reference.zero_grad()
        loss.backward()
        with torch.no_grad():
            for p in reference.parameters():
                p -= lrs[k] * p.grad
        losses.append(loss.item())
        wrong += int((logits.argmax(1) != y).sum())
    assert not stopped and (totals.steps, totals.images, totals.wrong) == (5, 40, wrong)
    assert totals.loss == pytest.approx(sum(losses) / 5, rel=1e-6)
    assert optimizer.param_groups[0]["lr"] == lrs[14]
    for p, q in zip(model.parameters(), reference.parameters(), strict=True):
        assert torch.allclose(p, q, atol=1e-6)


def test_train_epoch_stops_at_max_steps_and_after_a_stop_and_continues_totals():
    model = linear()
    step_fn = TrainStep(model, torch.optim.SGD(model.parameters(), lr=0.1), device=CPU, amp=False)
    totals, stopped = train_epoch(step_fn, batches(), lr_fn=lambda k: 0.1, step=0, max_steps=3)
    assert (totals.steps, stopped) == (3, False)
    calls = []
    more, stopped = train_epoch(step_fn, batches(), lr_fn=lambda k: 0.1, step=3, max_steps=100, totals=totals,
                                stop=lambda: calls.append(1) or len(calls) == 2)
    assert (more.steps, more.images, stopped) == (5, 40, True)  # 3 carried + 2 until the stop


def test_train_epoch_clears_the_optimizer_state_where_reset_at_says():
    """Cleared before iteration 3: the same as a fresh optimizer from iteration 3 on (WRN's drops)."""
    data = batches()
    model = linear()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    train_epoch(TrainStep(model, optimizer, device=CPU, amp=False), data, lr_fn=lambda k: 0.1, step=0,
                max_steps=100, reset_at=lambda k: k == 3)
    fresh = linear()
    for part, start in ((data[:3], 0), (data[3:], 3)):
        sgd = torch.optim.SGD(fresh.parameters(), lr=0.1, momentum=0.9)
        train_epoch(TrainStep(fresh, sgd, device=CPU, amp=False), part, lr_fn=lambda k: 0.1, step=start,
                    max_steps=100)
    for p, q in zip(model.parameters(), fresh.parameters(), strict=True):
        assert torch.equal(p, q)


def test_train_epoch_names_the_iteration_where_the_loss_diverged():
    model = linear()
    data = batches()
    data[2] = (data[2][0] * float("nan"), data[2][1])
    step_fn = TrainStep(model, torch.optim.SGD(model.parameters(), lr=0.1), device=CPU, amp=False)
    with pytest.raises(DivergenceError, match="at iteration 7 \\(learning rate 0.1\\)"):
        train_epoch(step_fn, data, lr_fn=lambda k: 0.1, step=5, max_steps=100)


def test_evaluate_equals_cross_entropy_and_top1_top5_by_hand():
    model = nn.Linear(6, 10)
    data = batches(n=3, size=7, classes=10)
    x, y = torch.cat([b[0] for b in data]), torch.cat([b[1] for b in data])
    with torch.no_grad():
        logits = model(x)
    out = evaluate(model, data, device=CPU, top5=True)
    assert out["loss"] == pytest.approx(F.cross_entropy(logits, y).item(), rel=1e-6)
    assert out["err"] == pytest.approx(100 * (logits.argmax(1) != y).float().mean().item())
    in_top5 = (logits.topk(5, 1).indices == y[:, None]).any(1)
    assert out["err5"] == pytest.approx(100 * (~in_top5).float().mean().item())
    assert not model.training


def test_run_logger_writes_records_rewrites_history_and_summary(tmp_path):
    logger = RunLogger(tmp_path, history=[{"epoch": 1, "test_err": 50.0}])
    logger.record({"epoch": 2, "test_err": 40.0})
    logger.scalars({"train/loss": 1.5}, 2)
    logger.summary({"status": "completed", "final_test_err": 40.0})
    logger.close()
    lines = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert lines == [{"epoch": 1, "test_err": 50.0}, {"epoch": 2, "test_err": 40.0}]
    assert json.loads((tmp_path / "summary.json").read_text())["final_test_err"] == 40.0
    assert not list(tmp_path.glob("*.tmp"))

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(tmp_path / "tb"))
    acc.Reload()
    assert [(e.step, e.value) for e in acc.Scalars("train/loss")] == [(2, 1.5)]
    # A resumed run opens the writer with the history it carries: no record twice.
    RunLogger(tmp_path, history=lines[:1]).close()
    assert len((tmp_path / "metrics.jsonl").read_text().splitlines()) == 1


def test_a_disabled_run_logger_writes_nothing(tmp_path):
    logger = RunLogger(tmp_path / "rank1", enabled=False)
    logger.record({"epoch": 1})
    logger.summary({"status": "completed"})
    logger.close()
    assert not (tmp_path / "rank1").exists()


def test_epoch_totals_report_means_in_percent():
    t = EpochTotals(loss_sum=30.0, wrong=5, images=20, steps=2)
    assert (t.loss, t.err) == (1.5, 25.0)
    assert (EpochTotals().loss, EpochTotals().err) == (0.0, 0.0)


def test_the_console_marks_warnings_and_nothing_else(capsys):
    import logging

    from resnet_train.metrics import ConsoleHandler

    handler = ConsoleHandler()
    for level in (logging.INFO, logging.WARNING, logging.ERROR):
        handler.emit(logging.LogRecord("resnet_train.train", level, __file__, 1, "the message", None, None))
    assert capsys.readouterr().out.splitlines() == ["the message", "warning: the message", "the message"]
