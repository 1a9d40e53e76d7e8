"""`train(cfg, run_dir) -> summary`: the training loop, on plain dataclass configs (no Hydra here).

As in pycls's trainer: `setup` builds a `Run` from the config, `train_one_epoch` and
`end_of_epoch` advance its `TrainState`, and `train` strings them together and writes the summary.
"""

from __future__ import annotations

import logging
import math
import random
import signal
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from . import checkpoint as ckpt_io
from . import distributed
from . import members as kwide
from .analysis import GradNorms, gradient_groups
from .checkpoint import CheckpointError, TrainState
from .config import Config, override_keys, screened
from .data import DeviceBatches, EpochSampler, build_datasets, build_loaders, wants_top5
from .distributed import AgreedStop, Dist, resolve_device
from .engine import EpochTotals, GraphedTrainStep, TrainStep, evaluate, train_epoch
from .interrupt import GracefulStop, Interrupted
from .metrics import RunLogger, flatten
from .models import ResNet, build_model, restart_bn_averages
from .models.summary import count_params
from .optim import build_optimizer, describe_schedule, drops_at, lr_at, unreached
from .resume import check_resume_config, checkpoint_to_resume, finished_summary, resume_command

log = logging.getLogger(__name__)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


@dataclass
class Run:
    """What `setup` builds for one training run; the loop reads it and changes only TrainState."""

    cfg: Config
    run_dir: Path
    overrides: list[str]  # the command line's, for the resume hint and the summary
    device: torch.device
    dist: Dist
    model: ResNet  # the weights that checkpoints save and rank 0 evaluates
    optimizer: torch.optim.Optimizer
    step_fn: TrainStep  # steps the DDP-wrapped or compiled form of `model`
    eval_model: nn.Module
    sampler: EpochSampler
    train_loader: Any
    eval_loaders: dict[str, Any]
    num_epochs: int
    total_steps: int  # iterations
    lr_fn: Callable[[int], float]  # iteration -> learning rate
    reset_at: Callable[[int], bool]  # iteration -> clear the optimizer state before it
    amp: bool
    channels_last: bool
    grad_norms: GradNorms | None  # train.grad_norm_every > 0, on rank 0
    logger: RunLogger | None = None  # opened once the run's history is known (after a resume)
    tag: str = ""  # before its log lines: "seed 2: " for a member of a seeds=K run

    @property
    def select(self) -> str:
        """The split that picks best.pt: validation when held out, else test."""
        return "val" if "val" in self.eval_loaders else "test"

    def done(self, state: TrainState) -> bool:
        return state.epoch >= self.num_epochs or state.step >= self.total_steps

    @property
    def device_name(self) -> str:
        """The GPU's name (NVIDIA H100 ...), or the device type (cpu)."""
        return torch.cuda.get_device_name(self.device) if self.device.type == "cuda" else self.device.type

    def evaluates_after(self, state: TrainState) -> bool:
        """Whether the epoch now ending (state.epoch, counted from 0) ends with an evaluation."""
        ended = replace(state, epoch=state.epoch + 1)
        return (ended.epoch % self.cfg.train.eval_every == 0 or self.done(ended)) and self.dist.is_main

    def save(self, state: TrainState, names: list[str]) -> None:
        rngs = distributed.gather(ckpt_io.rng_state(self.device), self.dist)
        if not self.dist.is_main:
            return
        ckpt = state.to_checkpoint(self.model, self.optimizer, rngs, asdict(self.cfg))
        for name in names:
            ckpt_io.save_checkpoint(ckpt, self.run_dir / name)


def _plan(cfg: Config, steps_per_epoch: int) -> tuple[int, int]:
    """(epochs to run, total iterations)."""
    t = cfg.train
    if t.iterations is not None:
        return math.ceil(t.iterations / steps_per_epoch), t.iterations
    return t.epochs, t.epochs * steps_per_epoch


def _cuda_graphs(cfg: Config, device: torch.device, dist: Dist) -> bool:
    """train.cuda_graphs applies to CUDA runs only, as train.amp does; DDP is refused."""
    if not cfg.train.cuda_graphs or device.type != "cuda":
        return False
    if dist.active:
        raise ValueError("train.cuda_graphs=true does not work with DDP (torchrun); set it to false")
    return True


def _step_model(cfg: Config, model: nn.Module, device: torch.device, dist: Dist) -> nn.Module:
    """The module the training step calls: DDP-wrapped and/or compiled. Both share `model`'s
    parameters."""
    if dist.active:
        from torch.nn.parallel import DistributedDataParallel

        model = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    if cfg.train.compile != "none":
        # Static shapes: one graph for the full batch, one for an epoch's short last batch, one for
        # evaluation; without dynamic=False the second shape would make every batch use a slower
        # dynamic-shape graph.
        model = torch.compile(model, mode=cfg.train.compile, dynamic=False)
    return model


def setup(cfg: Config, run_dir: Path, overrides: list[str], device: torch.device, dist: Dist) -> Run:
    cuda = device.type == "cuda"
    amp, channels_last = cfg.train.amp and cuda, cfg.train.channels_last and cuda
    seed_everything(cfg.seed)
    model = build_model(cfg.model, cfg.data.num_classes)  # first: a bad model fails before data is read
    if cfg.train.sync_bn and dist.active:
        model = distributed.convert_sync_bn(model)
    if cuda:
        distributed.configure_cuda()
    model = model.to(device, memory_format=torch.channels_last if channels_last else torch.preserve_format)
    data = build_datasets(cfg.data, cfg.seed)
    sampler = EpochSampler(len(data.train), cfg.seed, cfg.train.batch_size, dist.rank, dist.world,
                           replacement=cfg.data.sampler == "replacement", drop_last=cfg.data.drop_last)
    train_loader, eval_loaders = build_loaders(
        cfg.data, data, seed=cfg.seed, sampler=sampler, batch_size=cfg.train.batch_size // dist.world,
        eval_batch_size=cfg.train.eval_batch_size, device=device, channels_last=channels_last)
    optimizer = build_optimizer(model, cfg.optim)
    base_lr = cfg.optim.base_lr(cfg.train.batch_size)
    step_model = _step_model(cfg, model, device, dist)
    step_fn = (GraphedTrainStep if _cuda_graphs(cfg, device, dist) else TrainStep)(step_model, optimizer,
                                                                                    device=device, amp=amp)
    steps_per_epoch = len(train_loader)
    num_epochs, total_steps = _plan(cfg, steps_per_epoch)
    lr_fn = partial(lr_at, base_lr=base_lr, sched=cfg.sched, steps_per_epoch=steps_per_epoch,
                    total_steps=total_steps)
    reset_at = partial(drops_at, sched=cfg.sched, steps_per_epoch=steps_per_epoch) if cfg.sched.reset_state \
        else (lambda step: False)
    every = cfg.train.grad_norm_every
    grad_norms = GradNorms(gradient_groups(model, cfg.train.grad_norm_by), every) if every and dist.is_main else None
    return Run(cfg, run_dir, overrides, device, dist, model, optimizer, step_fn,
               eval_model=model if dist.active else step_model, sampler=sampler, train_loader=train_loader,
               eval_loaders=eval_loaders, num_epochs=num_epochs, total_steps=total_steps, lr_fn=lr_fn,
               reset_at=reset_at, amp=amp, channels_last=channels_last, grad_norms=grad_norms)


def plan_lines(run: Run, members: int = 1) -> list[str]:
    """What the run folder's log records first: the network, the data, the length and the
    device settings the run resolved to."""
    cfg, m, o = run.cfg, run.cfg.model, run.cfg.optim
    evals = ", ".join(f"{split} {_images(loader):,}" for split, loader in run.eval_loaders.items())
    fast = [name for name, on in (("bf16 autocast", run.amp), ("channels_last", run.channels_last),
                                  ("data on the device", isinstance(run.train_loader, DeviceBatches)),
                                  ("CUDA graphs", isinstance(run.step_fn, GraphedTrainStep)),
                                  (f"compile {cfg.train.compile}", cfg.train.compile != "none")) if on]
    return [
        f"model       {m.label} ({m.layout_text}, init {m.init}"
        f"{_bn_momentum(m.bn_momentum)}), "
        f"{count_params(run.model):,} parameters" + (f"; {members} members side by side" if members > 1 else ""),
        f"data        {cfg.data.name}: {run.sampler.size:,} training images ({cfg.data.sampler} sampler"
        f"{', last partial batch dropped' if cfg.data.drop_last else ''}){'; ' + evals if evals else ''}",
        f"length      {run.total_steps:,} iterations of {cfg.train.batch_size} images, {run.num_epochs} epoch(s) of "
        f"{len(run.train_loader)} batches; {o.name}{' (Nesterov)' if o.name == 'sgd' and o.nesterov else ''} "
        f"lr {o.lr:g}, weight decay {o.weight_decay:g}, {describe_schedule(cfg.sched)}",
        f"device      {run.device}" + (f" ({run.device_name})" if run.device.type == "cuda" else "")
        + (f", {run.dist.world} processes" if run.dist.active else "") + f": {', '.join(fast) or 'plain fp32'}",
    ]


def _bn_momentum(momentum: float | None) -> str:
    if momentum is None:
        return ", BN statistics averaged over each epoch"
    return "" if momentum == 0.1 else f", BN momentum {momentum:g}"


def _images(loader) -> int:
    return len(loader.labels) if isinstance(loader, DeviceBatches) else len(loader.dataset)


def restore(run: Run, path: Path, ckpt: dict[str, Any]) -> TrainState:
    """Weights, optimizer, progress and this rank's RNG state from a checkpoint of the same run."""
    check_resume_config(ckpt["config"], asdict(run.cfg))
    run.model.load_state_dict(ckpt["model"])
    run.optimizer.load_state_dict(ckpt["optimizer"])
    state = TrainState.from_checkpoint(ckpt)
    if not run.dist.is_main:  # the saved partial-epoch sums are global; rank 0 carries them
        state.partial = EpochTotals(steps=state.partial.steps)
    ckpt_io.set_rng_state(TrainState.rng_for_rank(ckpt, run.dist.rank, run.dist.world), run.device)
    log.info(f"resumed from {path} at epoch {state.epoch + 1}, iteration {state.step}")
    return state


def train_one_epoch(runs: list[Run], states: list[TrainState], step_fn: TrainStep, stop: Callable[[], bool],
                    progress: bool) -> tuple[list[EpochTotals], bool]:
    """Runs the rest of epoch `state.epoch` of each member (one, or the K of seeds=K, which
    step_fn trains together); returns each one's global sums and whether a stop came."""
    run, state = runs[0], states[0]
    for member, member_state in zip(runs, states, strict=True):
        member.sampler.set_epoch(member_state.epoch, start=member_state.partial.steps * run.cfg.train.batch_size)
    if state.partial.steps == 0:  # a resumed partial epoch goes on with its average (the count is in last.pt)
        restart_bn_averages(step_fn.model)
    batches = run.train_loader if len(runs) == 1 else kwide.MemberBatches([r.train_loader for r in runs])
    epoch_start = state.step - state.partial.steps
    totals, stopped = train_epoch(step_fn, batches, lr_fn=run.lr_fn, step=state.step, max_steps=run.total_steps,
                                  totals=[s.partial for s in states], channels_last=run.channels_last,
                                  progress=progress, stop=stop, desc=f"epoch {state.epoch + 1}/{run.num_epochs}",
                                  reset_at=run.reset_at, grad_norms=run.grad_norms)
    for member_state in states:
        member_state.step = epoch_start + totals[0].steps
    for step, norms in run.grad_norms.drain() if run.grad_norms else []:
        run.logger.scalars({f"grad_norm/{name}": value for name, value in norms.items()}, step)
    return [_global_totals(t, run.dist, run.device) for t in totals], stopped


def evaluate_runs(runs: list[Run], model: nn.Module) -> list[dict[str, dict[str, float]]]:
    """Each run's results on each evaluation split: one run's, or with seeds=K the K members' in
    one pass of the K-member `model`, each member fed its own run's batches."""
    lead, k = runs[0], len(runs)
    results: list[dict[str, dict[str, float]]] = [{} for _ in runs]
    for name, loader in lead.eval_loaders.items():
        batches = loader if k == 1 else kwide.MemberBatches([run.eval_loaders[name] for run in runs])
        res = evaluate(model, batches, device=lead.device, amp=lead.amp, channels_last=lead.channels_last,
                       top5=wants_top5(lead.cfg.data), members=k)
        for mine, member_res in zip(results, res if k > 1 else [res], strict=True):
            mine[name] = member_res
    return results


def end_of_epoch(run: Run, state: TrainState, totals: EpochTotals, bar: tqdm,
                 results: dict[str, dict[str, float]] | None) -> None:
    """Counts the finished epoch, logs it with its evaluation `results` (rank 0, where due; else
    None), and saves last.pt (and best.pt, epoch_NNNN.pt)."""
    state.epoch += 1
    state.partial = EpochTotals()
    state.train_seconds += totals.seconds
    state.train_images += totals.images
    scalars = {"train/loss": totals.loss, "train/err": totals.err, "lr": run.lr_fn(state.step - 1),
               "perf/img_per_s": totals.images / totals.seconds, "perf/epoch_s": totals.seconds}
    record: dict[str, Any] = {"epoch": state.epoch, "step": state.step, "lr": scalars["lr"],
                              "train_loss": totals.loss, "train_err": totals.err}
    improved, evaluated = False, ""
    if results is not None:
        for name, res in results.items():
            for k, v in res.items():
                scalars[f"{name}/{k}"] = record[f"{name}_{k}"] = v
        err = record[f"{run.select}_err"]
        improved = state.best["err"] is None or err < state.best["err"]
        if improved:
            state.best = {"err": err, "epoch": state.epoch, "test_err": record["test_err"]}
        evaluated = f"  {run.select} err {err:.2f}%"
    if run.dist.is_main:  # every epoch, its evaluation where one was due (train.eval_every)
        state.history.append(record)
        run.logger.record(record)
        log.info(f"{run.tag}epoch {state.epoch}  train err {totals.err:.2f}%{evaluated}  "
                 f"({totals.images / totals.seconds:.0f} img/s)")
    run.logger.scalars(scalars, state.epoch)
    bar.update(1)
    keep = run.cfg.train.keep_last
    run.save(state, ["last.pt"] + ["best.pt"] * improved + [f"epoch_{state.epoch:04d}.pt"] * bool(keep))
    if keep and run.dist.is_main:
        ckpt_io.keep_recent(run.run_dir, keep)


def member_configs(cfg: Config, run_dir: Path) -> list[tuple[Config, Path]]:
    """(config, run folder) of each run that `cfg` trains: itself, or with seeds=K the K
    standalone runs seed, ..., seed + K - 1, each in its own folder seedN below run_dir."""
    if cfg.seeds == 1:
        return [(cfg, run_dir)]
    return [(replace(cfg, seed=cfg.seed + k, seeds=1), run_dir / f"seed{cfg.seed + k}") for k in range(cfg.seeds)]


def train(cfg: Config, run_dir: str | Path, overrides: list[str] | None = None,
          job_index: int | None = None, dist: Dist = distributed.SINGLE) -> dict[str, Any] | list[dict[str, Any]]:
    """Trains as `cfg` says, writing logs and checkpoints to run_dir; returns the summary (with
    seeds=K, the K members' summaries, each member in run_dir/seedN).

    Raises Interrupted after saving last.pt when a stop signal arrives, DivergenceError when the
    loss stops being finite. Under torchrun, `dist` names this process; rank 0 alone writes."""
    cfg = screened(cfg)
    if cfg.train.batch_size % dist.world:
        raise ValueError(f"train.batch_size={cfg.train.batch_size} is the global batch; it must divide evenly "
                         f"over the {dist.world} processes")
    if cfg.seeds > 1 and dist.active:
        raise ValueError(f"seeds={cfg.seeds} trains its members in one process and does not run under torchrun "
                         f"(DDP); set seeds=1, or start one torchrun per seed")
    device = resolve_device(cfg.device, dist.local_rank if dist.active else job_index)
    if device.type == "cuda":  # a packed sweep job on GPU i: streams and graph capture use the current device
        torch.cuda.set_device(device)
    distributed.init(dist, device.type == "cuda")
    run_dir = Path(distributed.broadcast(str(run_dir), dist))
    members = member_configs(cfg, run_dir)
    done = [finished_summary(member_cfg, folder) for member_cfg, folder in members]
    if all(summary is not None for summary in done):
        errors = ", ".join(f"{s['final_test_err']:.2f}%" for s in done)
        log.info(f"{run_dir} already holds this run, finished (test error {errors}); skipped")
        return done if cfg.seeds > 1 else done[0]
    resume_from = [checkpoint_to_resume(cfg.resume, folder) for _, folder in members]
    runs = [setup(member_cfg, folder, list(overrides or []), device, dist) for member_cfg, folder in members]
    if dist.is_main:  # after setup: a run refused there (e.g. its data missing) leaves no folder to name
        log.info(f"run folder: {run_dir}" + (f" (members: {', '.join(f.name for _, f in members)})"
                                              if cfg.seeds > 1 else ""))
        for line in plan_lines(runs[0], cfg.seeds):
            log.info(line)
        for line in unreached(cfg.sched, steps_per_epoch=len(runs[0].train_loader), total_steps=runs[0].total_steps):
            log.warning(line)
    states = [restore(run, *found) if found is not None else TrainState()
              for run, found in zip(runs, resume_from, strict=True)]
    step_fn, sync = (runs[0].step_fn, lambda: None) if cfg.seeds == 1 else member_step(runs, states, device)
    eval_model = runs[0].eval_model if cfg.seeds == 1 else step_fn.model
    for run, state in zip(runs, states, strict=True):
        run.tag = f"seed {run.cfg.seed}: " if cfg.seeds > 1 else ""
        run.logger = RunLogger(run.run_dir, state.history, enabled=dist.is_main)
        if dist.is_main:
            ckpt_io.remove_stale_temporaries(run.run_dir)
    progress = cfg.train.progress and sys.stderr.isatty() and dist.is_main
    for member_state in states:
        member_state.start_leg()
    lead, state = runs[0], states[0]
    bars = [tqdm(total=lead.num_epochs, initial=state.epoch, desc="epochs", disable=not progress or k > 0,
                 dynamic_ncols=True) for k in range(len(runs))]
    pairs = list(zip(runs, states, strict=True))
    try:
        with GracefulStop() as local_stop:
            stop = AgreedStop(local_stop, dist, device)
            while not lead.done(state):
                totals, stopped = train_one_epoch(runs, states, step_fn, stop, progress)
                sync()
                if stopped and totals[0].steps < len(lead.train_loader) and state.step < lead.total_steps:
                    for (run, member_state), member_totals in zip(pairs, totals, strict=True):
                        member_state.partial = member_totals
                        run.save(member_state, ["last.pt"])
                    raise _interrupted(local_stop, state, lead.overrides, run_dir, cfg.seeds > 1)
                results = evaluate_runs(runs, eval_model) if lead.evaluates_after(state) else [None] * len(runs)
                for (run, member_state), member_totals, bar, res in zip(pairs, totals, bars, results, strict=True):
                    end_of_epoch(run, member_state, member_totals, bar, res)
                if stop() and not lead.done(state):
                    raise _interrupted(local_stop, state, lead.overrides, run_dir, cfg.seeds > 1)
    finally:
        for run, bar in zip(runs, bars, strict=True):
            bar.close()
            run.logger.flush()
    summaries = [_finish(run, member_state, len(runs)) for run, member_state in pairs]
    return summaries if cfg.seeds > 1 else summaries[0]


def member_step(runs: list[Run], states: list[TrainState], device: torch.device) -> tuple[TrainStep, Callable]:
    """The training step of K members as one K-member network (members.py), and the function
    that writes each member's weights and optimizer state back into its own run, so that
    evaluation, checkpoints and summaries are each member's as if it had run alone."""
    cfg, k = runs[0].cfg, len(runs)
    positions = {(s.epoch, s.step, s.partial.steps) for s in states}
    if len(positions) > 1:
        where = ", ".join(f"{r.run_dir.name} at iteration {s.step}" for r, s in zip(runs, states, strict=True))
        raise CheckpointError(f"cannot resume: the members' checkpoints are at different points ({where}); resume "
                              f"each with seeds=1 seed=N hydra.run.dir=FOLDER/seedN resume=auto")
    wide = kwide.combine([r.model for r in runs])
    if runs[0].channels_last:
        wide = wide.to(memory_format=torch.channels_last)
    optimizer = build_optimizer(wide, cfg.optim)
    optimizer.load_state_dict(kwide.pack_optimizer([r.optimizer.state_dict() for r in runs]))
    step_model = _step_model(cfg, wide, device, runs[0].dist)
    step_fn = (GraphedTrainStep if _cuda_graphs(cfg, device, runs[0].dist) else TrainStep)(
        step_model, optimizer, device=device, amp=runs[0].amp, members=k)

    def sync() -> None:
        weights, opt_state = wide.state_dict(), optimizer.state_dict()
        for i, run in enumerate(runs):
            run.model.load_state_dict(kwide.member_state(weights, i, k))
            run.optimizer.load_state_dict(kwide.member_optimizer(opt_state, i, k))

    return step_fn, sync


def _finish(run: Run, state: TrainState, members: int) -> dict[str, Any]:
    """Writes summary.json and the HParams entry; returns the summary. `members`: the networks
    this process trained side by side (seeds=K), sharing its wall time."""
    cfg, final = run.cfg, (state.history[-1] if state.history else {})
    legs = state.all_legs()
    summary = {
        "status": "completed",
        "overrides": run.overrides,
        "experiment": cfg.experiment,
        "model": cfg.model.label,
        "data": cfg.data.name,
        "seed": cfg.seed,
        "screening": cfg.train.screening,
        "params": count_params(run.model),
        "epochs": final.get("epoch", 0),
        "steps": state.step,
        "final_test_err": final.get("test_err"),
        "best_test_err": state.best.get("test_err"),
        "best_epoch": state.best["epoch"],
        "best_on": run.select,
        "wall_time_s": sum(end - start for start, end in legs),  # every leg of a resumed run
        "legs": legs,  # [start, end] of each, Unix seconds
        "img_per_s": state.train_images / state.train_seconds if state.train_seconds else None,
        "device_name": run.device_name,
        "world_size": run.dist.world,
        "members": members,
        "torch": torch.__version__,
        "config": asdict(cfg),  # the report tells arms apart by it
    }
    if "test_err5" in final:
        summary["final_test_err5"] = final["test_err5"]
    results = {k: summary[k] for k in ("final_test_err", "best_test_err") if summary[k] is not None}
    run.logger.hparams(hparams(cfg, run.overrides), results)
    run.logger.summary(summary)
    run.logger.close()
    if run.dist.is_main:
        log.info(f"{run.tag}finished: test error {_pct(summary['final_test_err'])} (best "
                 f"{_pct(summary['best_test_err'])} at epoch {summary['best_epoch']}); run folder: {run.run_dir}")
    return summary


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}%"


# What a reader compares across runs in TensorBoard's HParams tab, besides what the command line set.
HPARAMS = ("model", "data.name", "optim.name", "optim.lr", "optim.weight_decay", "sched.name", "train.batch_size",
           "train.epochs", "train.iterations", "seed")


def hparams(cfg: Config, overrides: list[str]) -> dict[str, Any]:
    """The command line's keys (a sweep's swept ones among them) and HPARAMS, with their values;
    a config group the command line chose (optim=adam) by its option name."""
    flat = flatten(asdict(cfg))
    given = {k: v for k, v in override_keys(overrides).items() if v is not None}
    out: dict[str, Any] = {"model": cfg.model.label}
    for key in [*HPARAMS[1:], *given]:
        if key in flat:
            out[key] = flat[key]
        elif key not in out:  # a group: optim=adam
            out[key] = given[key]
    return {k: v for k, v in out.items() if k not in ("mode", "ckpt", "resume") and v is not None}


def _interrupted(stop: GracefulStop, state: TrainState, overrides: list[str], run_dir: Path,
                 members: bool) -> Interrupted:
    # Under DDP another rank may have got the signal; SIGTERM is what torchrun passes on.
    signum = stop.signum or signal.SIGTERM
    saved = f"each member's last.pt below {run_dir}" if members else str(run_dir / "last.pt")
    # Also in the run's own log: a packed sweep's workers have no console that outlives them.
    log.info(f"stopped by {signal.Signals(signum).name} at iteration {state.step}; saved {saved}")
    return Interrupted(f"interrupted by {signal.Signals(signum).name} in epoch {state.epoch + 1} at iteration "
                       f"{state.step}; the state is saved in {saved}. Resume in the same folder with: "
                       f"{resume_command(overrides, run_dir)}", signum, stop.previous(signum))


def _global_totals(totals: EpochTotals, dist: Dist, device: torch.device) -> EpochTotals:
    if not dist.active:
        return totals
    loss_sum, wrong, images = distributed.sum_over_ranks([totals.loss_sum, totals.wrong, totals.images], dist, device)
    return EpochTotals(loss_sum=loss_sum, wrong=round(wrong), images=round(images), steps=totals.steps,
                       seconds=totals.seconds)
