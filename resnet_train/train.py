"""`train(cfg) -> metrics`, `evaluate_checkpoint` and `describe`: the three modes, on plain
dataclass configs (no Hydra here)."""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
import random
import signal
import sys
import time
from dataclasses import asdict
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from . import checkpoint as ckpt_io
from . import distributed
from .checkpoint import CheckpointError
from .config import RESUME_AUTO, Config, DataConfig, ModelConfig, screened
from .data import DeviceBatches, EpochSampler, build_datasets, make_loader
from .distributed import Dist
from .engine import EpochTotals, GraphedTrainStep, TrainStep, evaluate, train_epoch
from .interrupt import GracefulStop, Interrupted
from .metrics import RunLogger
from .models import ResNet, build_model, check_model_args, default_unit
from .models.summary import count_params, model_summary
from .optim import build_optimizer, drops_at, lr_at

# Keys that change what is trained or on what; a resume that changes one would silently make a
# different run. train.epochs/iterations may grow (to extend a run), the rest may not.
RESUME_LOCKED = ("model", "data", "optim", "sched", "seed", "train.batch_size")
RESUME_FREE = ("data.root", "data.download", "data.num_workers")  # where and how, not what


def resolve_device(name: str, job_index: int | None = None) -> torch.device:
    """auto: CUDA when present; in a sweep, job i takes GPU i mod the GPU count, so a launcher
    that runs several jobs at once (hydra/launcher=joblib) packs them over all GPUs."""
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if name.startswith("cuda") and not gpus:
        raise ValueError(f"device={name} but no CUDA GPU is visible to PyTorch; use device=auto or device=cpu")
    if name.startswith("cuda:") and int(name[5:]) >= gpus:
        raise ValueError(f"device={name} but only {gpus} GPU(s) are visible")
    if name == "auto":
        name = "cpu" if not gpus else f"cuda:{(job_index or 0) % gpus}"
    elif name == "cuda":  # torch.cuda.set_device and the graph capture need an index
        name = f"cuda:{torch.cuda.current_device()}"
    return torch.device(name)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _model_args(model_cfg: ModelConfig) -> dict[str, Any]:
    return {f.name: getattr(model_cfg, f.name) for f in dataclasses.fields(ModelConfig)}


def wants_top5(data_cfg: DataConfig) -> bool:
    """Top-5 error beside top-1 for 100 classes or more, and for ImageNet-style folders."""
    return data_cfg.num_classes >= 100 or (data_cfg.name == "imagefolder" and data_cfg.num_classes > 5)


def model_label(m: ModelConfig) -> str:
    """resnet-110, preresnet-1001, wrn-28-10: the names the papers' tables use."""
    return f"{m.family}-{m.depth}" + (f"-{m.widen_factor}" if m.family == "wrn" else "")


def check_model(model_cfg: ModelConfig, data_cfg: DataConfig) -> None:
    """Fails on an invalid model before any data is read or memory spent."""
    check_model_args(num_classes=data_cfg.num_classes, **_model_args(model_cfg))


def make_model(model_cfg: ModelConfig, data_cfg: DataConfig) -> ResNet:
    return build_model(num_classes=data_cfg.num_classes, **_model_args(model_cfg))


def describe(cfg: Config) -> dict[str, Any]:
    """`mode=info`: prints the model's figures; the last line is one JSON object."""
    m = cfg.model
    model = make_model(m, cfg.data)
    info = model_summary(model, cfg.data.image_size)
    unit = m.unit or default_unit(m.family)
    info = {"family": m.family, "depth": m.depth, "block": m.block, "unit": unit, "shortcut": m.shortcut,
            "widen_factor": m.widen_factor, **info}
    print(f"model       {m.family}-{m.depth} ({m.block} blocks, {unit} unit, shortcut {m.shortcut}, "
          f"widen x{m.widen_factor}, dropout {m.dropout})")
    print(f"params      {info['params']:,} ({info['params'] / 1e6:.2f}M)")
    print(f"MACs/image  {info['macs']:,} ({info['macs'] / 1e6:.1f}M at {cfg.data.image_size} px)")
    for i, shape in enumerate(info["stage_shapes"], 1):
        print(f"stage {i}     output {' x '.join(map(str, shape))}")
    print(json.dumps(info))
    return info


def _diff(old: Any, new: Any, prefix: str = "") -> list[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for key in sorted(set(old) | set(new)):
            out += _diff(old.get(key), new.get(key), f"{prefix}{key}.")
        return out
    key = prefix[:-1]
    return [] if old == new or key in RESUME_FREE else [f"{key} ({old!r} -> {new!r})"]


def check_resume_config(saved: dict, current: dict) -> None:
    changed = []
    for key in RESUME_LOCKED:
        section, _, leaf = key.partition(".")
        old, new = saved.get(section), current.get(section)
        if leaf:
            old, new = (old or {}).get(leaf), (new or {}).get(leaf)
        changed += _diff(old, new, f"{key}.")
    if changed:
        raise CheckpointError("cannot resume: the config differs from the checkpoint's in " + "; ".join(changed))


def _resume_path(resume: str | None, run_dir: Path) -> Path | None:
    if not resume:
        return None
    if resume == RESUME_AUTO:
        path = run_dir / "last.pt"
        return path if path.exists() else None
    path = Path(resume).expanduser()
    if not path.is_file():
        raise CheckpointError(f"resume={resume}: no such checkpoint (use resume=auto to start fresh when none exists)")
    return path


def _plan(cfg: Config, steps_per_epoch: int) -> tuple[int, int]:
    """(epochs to run, total iterations)."""
    t = cfg.train
    if t.iterations is not None:
        return math.ceil(t.iterations / steps_per_epoch), t.iterations
    return t.epochs, t.epochs * steps_per_epoch


def _loaders(cfg: Config, data, sampler: EpochSampler, device: torch.device, batch_size: int,
             channels_last: bool):
    """The plain path (per-image torchvision transforms in a DataLoader, the reference) or the
    fast path (device-resident batches, augmented per batch on the device)."""
    splits = data.splits()
    on_gpu = cfg.data.on_gpu if cfg.data.on_gpu is not None else device.type == "cuda"
    if on_gpu and (splits is None or cfg.data.augment == "imagenet"):
        if cfg.data.on_gpu:
            raise ValueError("data.on_gpu=true needs an in-memory dataset with cifar or no augmentation")
        on_gpu = False
    if on_gpu:
        train = DeviceBatches(splits.pop("train"), cfg.data, batch_size, device, sampler=sampler,
                              seed=cfg.seed, norm=data.norm, channels_last=channels_last)
        return train, {k: DeviceBatches(v, cfg.data, cfg.train.eval_batch_size, device, norm=data.norm,
                                        channels_last=channels_last) for k, v in splits.items()}
    pin = device.type == "cuda"
    train = make_loader(data.train, batch_size, num_workers=cfg.data.num_workers, pin_memory=pin,
                        sampler=sampler)
    return train, {name: make_loader(ds, cfg.train.eval_batch_size, num_workers=cfg.data.num_workers,
                                     pin_memory=pin) for name, ds in data.evals.items()}


def _cuda_graphs(cfg: Config, device: torch.device, dist: Dist) -> bool:
    """train.cuda_graphs applies to CUDA runs only, as train.amp does; DDP is refused."""
    if not cfg.train.cuda_graphs or device.type != "cuda":
        return False
    if dist.active:
        raise ValueError("train.cuda_graphs=true does not work with DDP (torchrun); set it to false")
    return True


def _resume_hint(overrides: list[str], path: Path) -> str:
    kept = [o for o in overrides if not o.startswith("resume=")]
    return " ".join(["resnet-train", *kept, f"resume={path}"])


def _finished(cfg: Config, run_dir: Path) -> dict[str, Any] | None:
    """With resume=auto, a run folder that already holds this run, finished, is not run again;
    that lets a sweep be re-run to complete only what is missing."""
    summary_path = run_dir / "summary.json"
    if cfg.resume != RESUME_AUTO or not summary_path.is_file() or not (run_dir / "last.pt").is_file():
        return None
    summary = json.loads(summary_path.read_text())
    state = ckpt_io.load_checkpoint(run_dir / "last.pt")
    check_resume_config(state["config"], asdict(cfg))
    t = cfg.train
    wanted = t.epochs if t.epochs is not None else t.iterations
    reached = summary["epochs"] if t.epochs is not None else summary["steps"]
    return summary if summary.get("status") == "completed" and reached >= wanted else None


def train(cfg: Config, run_dir: str | Path, overrides: list[str] | None = None,
          job_index: int | None = None, dist: Dist = distributed.SINGLE) -> dict[str, Any]:
    """Trains as `cfg` says, writing logs and checkpoints to run_dir; returns the summary.

    Raises Interrupted after saving last.pt when a stop signal arrives, DivergenceError when the
    loss stops being finite. Under torchrun, `dist` names this process; rank 0 alone writes."""
    overrides = list(overrides or [])
    cfg = screened(cfg)
    check_model(cfg.model, cfg.data)
    if cfg.train.batch_size % dist.world:
        raise ValueError(f"train.batch_size={cfg.train.batch_size} is the global batch; it must divide evenly "
                         f"over the {dist.world} processes")
    device = resolve_device(cfg.device, dist.local_rank if dist.active else job_index)
    if device.type == "cuda":  # a packed sweep job on GPU i: streams and graph capture use the current device
        torch.cuda.set_device(device)
    distributed.init(dist, device.type == "cuda")
    run_dir = Path(distributed.broadcast(str(run_dir), dist))
    done = _finished(cfg, run_dir)
    if done is not None:
        print(f"{run_dir} already holds this run, finished (test error {done['final_test_err']:.2f}%); skipped")
        return done
    config_dict = asdict(cfg)
    resume_from = _resume_path(cfg.resume, run_dir)
    seed_everything(cfg.seed)

    cuda = device.type == "cuda"
    amp, channels_last = cfg.train.amp and cuda, cfg.train.channels_last and cuda
    data = build_datasets(cfg.data, cfg.seed)
    sampler = EpochSampler(len(data.train), cfg.seed, cfg.train.batch_size, dist.rank, dist.world,
                           replacement=cfg.data.sampler == "replacement")
    train_loader, eval_loaders = _loaders(cfg, data, sampler, device, cfg.train.batch_size // dist.world,
                                          channels_last)
    model = make_model(cfg.model, cfg.data)
    if cfg.train.sync_bn and dist.active:
        model = distributed.convert_sync_bn(model)
    if cuda:
        torch.backends.cudnn.benchmark = True
    model = model.to(device, memory_format=torch.channels_last if channels_last else torch.preserve_format)
    optimizer = build_optimizer(model, cfg.optim)
    base_lr = cfg.optim.lr
    if cfg.optim.lr_reference_batch:  # Goyal et al. 2017: LR proportional to the global batch
        base_lr *= cfg.train.batch_size / cfg.optim.lr_reference_batch
    # The wrapped and compiled modules share their parameters with `model`, which checkpoints
    # save and rank 0 evaluates.
    step_model = model
    if dist.active:
        from torch.nn.parallel import DistributedDataParallel

        step_model = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    if cfg.train.compile != "none":
        # Static shapes: one graph for the full batch, one for an epoch's short last batch, one for
        # evaluation; without dynamic=False the second shape would make every batch use a slower
        # dynamic-shape graph.
        step_model = torch.compile(step_model, mode=cfg.train.compile, dynamic=False)
    step_class = GraphedTrainStep if _cuda_graphs(cfg, device, dist) else TrainStep
    step_fn = step_class(step_model, optimizer, device=device, amp=amp)
    steps_per_epoch = len(train_loader)
    num_epochs, total_steps = _plan(cfg, steps_per_epoch)
    lr_fn = partial(lr_at, base_lr=base_lr, sched=cfg.sched, steps_per_epoch=steps_per_epoch,
                    total_steps=total_steps)
    reset_at = partial(drops_at, sched=cfg.sched, steps_per_epoch=steps_per_epoch) if cfg.sched.reset_state \
        else (lambda step: False)

    epoch, step, history, partial_epoch = 0, 0, [], EpochTotals()
    best: dict[str, Any] = {"err": None, "epoch": None}
    train_seconds, train_images = 0.0, 0
    if resume_from is not None:
        state = ckpt_io.load_checkpoint(resume_from)
        check_resume_config(state["config"], config_dict)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        epoch, step, history, best = state["epoch"], state["step"], state["history"], state["best"]
        # The saved partial-epoch sums are global; rank 0 carries them, the others add theirs.
        partial_epoch = EpochTotals(**state["epoch_totals"])
        if not dist.is_main:
            partial_epoch = EpochTotals(steps=partial_epoch.steps)
        train_seconds, train_images = state["train_seconds"], state["train_images"]
        rngs = state.get("rng_ranks") or [state["rng"]]
        ckpt_io.set_rng_state(rngs[dist.rank] if len(rngs) == dist.world else state["rng"], device)
        print(f"resumed from {resume_from} at epoch {epoch + 1}, iteration {step}", flush=True)

    def save(totals: EpochTotals, names: list[str]) -> None:
        """Every rank's RNG state, so a resumed DDP run continues each rank's dropout stream."""
        rngs = distributed.gather(ckpt_io.rng_state(device), dist)
        if not dist.is_main:
            return
        state = {"format": ckpt_io.FORMAT, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                 "epoch": epoch, "step": step, "epoch_totals": asdict(totals), "best": best, "history": history,
                 "rng": rngs[0], "rng_ranks": rngs, "train_seconds": train_seconds, "train_images": train_images,
                 "config": config_dict}
        for name in names:
            ckpt_io.save_checkpoint(state, run_dir / name)

    logger = RunLogger(run_dir, history, enabled=dist.is_main)
    if dist.is_main:
        ckpt_io.remove_stale_temporaries(run_dir)
    select = "val" if "val" in eval_loaders else "test"
    top5 = wants_top5(cfg.data)
    progress = cfg.train.progress and sys.stderr.isatty() and dist.is_main
    wall0 = time.perf_counter()
    epochs_bar = tqdm(total=num_epochs, initial=epoch, desc="epochs", disable=not progress, dynamic_ncols=True)
    try:
        with GracefulStop() as local_stop:
            stop = local_stop
            if dist.active:
                # The ranks agree on a stop through an all-reduce, with a host sync: every 20th
                # reading only, so every rank stops at the same step, at most 20 steps late.
                readings = itertools.count(1)
                stop = lambda: next(readings) % 20 == 0 and distributed.any_rank(local_stop(), dist, device)  # noqa: E731
            while epoch < num_epochs and step < total_steps:
                sampler.set_epoch(epoch, start=partial_epoch.steps * cfg.train.batch_size)
                epoch_start_step = step - partial_epoch.steps
                totals, stopped = train_epoch(step_fn, train_loader, lr_fn=lr_fn, step=step,
                                              max_steps=total_steps, totals=partial_epoch,
                                              channels_last=channels_last, progress=progress,
                                              stop=stop, desc=f"epoch {epoch + 1}/{num_epochs}",
                                              reset_at=reset_at)
                step = epoch_start_step + totals.steps
                totals = _global_totals(totals, dist, device)
                if stopped and totals.steps < steps_per_epoch and step < total_steps:
                    save(totals, ["last.pt"])
                    raise _interrupted(local_stop, epoch, step, run_dir, overrides)
                epoch += 1
                partial_epoch = EpochTotals()
                train_seconds += totals.seconds
                train_images += totals.images
                scalars = {"train/loss": totals.loss, "train/err": totals.err, "lr": lr_fn(step - 1),
                           "perf/img_per_s": totals.images / totals.seconds, "perf/epoch_s": totals.seconds}
                improved = False
                if dist.is_main and (epoch % cfg.train.eval_every == 0 or epoch == num_epochs or step >= total_steps):
                    record: dict[str, Any] = {"epoch": epoch, "step": step, "lr": scalars["lr"],
                                              "train_loss": totals.loss, "train_err": totals.err}
                    for name, loader in eval_loaders.items():
                        res = evaluate(model if dist.active else step_model, loader, device=device, amp=amp,
                                       channels_last=channels_last, top5=top5)
                        for k, v in res.items():
                            scalars[f"{name}/{k}"] = record[f"{name}_{k}"] = v
                    improved = best["err"] is None or record[f"{select}_err"] < best["err"]
                    if improved:
                        best = {"err": record[f"{select}_err"], "epoch": epoch, "test_err": record["test_err"]}
                    history.append(record)
                    logger.record(record)
                    _report(epochs_bar, record, select, totals)
                logger.scalars(scalars, epoch)
                epochs_bar.update(1)
                save(EpochTotals(), ["last.pt"] + ["best.pt"] * improved
                     + [f"epoch_{epoch:04d}.pt"] * bool(cfg.train.keep_last))
                if cfg.train.keep_last and dist.is_main:
                    ckpt_io.keep_recent(run_dir, cfg.train.keep_last)
                if stop() and epoch < num_epochs and step < total_steps:
                    raise _interrupted(local_stop, epoch, step, run_dir, overrides)
    finally:
        epochs_bar.close()
        logger.flush()

    final = history[-1] if history else {}
    summary = {
        "status": "completed",
        "overrides": overrides,
        "experiment": cfg.experiment,
        "model": model_label(cfg.model),
        "data": cfg.data.name,
        "seed": cfg.seed,
        "screening": cfg.train.screening,
        "params": count_params(model),
        "epochs": final.get("epoch", 0),
        "steps": step,
        "final_test_err": final.get("test_err"),
        "best_test_err": best.get("test_err"),
        "best_epoch": best["epoch"],
        "best_on": select,
        "wall_time_s": time.perf_counter() - wall0,
        "img_per_s": train_images / train_seconds if train_seconds else None,
    }
    if "test_err5" in final:
        summary["final_test_err5"] = final["test_err5"]
    results = {k: summary[k] for k in ("final_test_err", "best_test_err") if summary[k] is not None}
    logger.hparams(config_dict, results)
    logger.summary(summary)
    logger.close()
    return summary


def _report(bar: tqdm, record: dict[str, Any], select: str, totals: EpochTotals) -> None:
    bar.write(f"epoch {record['epoch']}  train err {totals.err:.2f}%  {select} err {record[f'{select}_err']:.2f}%  "
              f"({totals.images / totals.seconds:.0f} img/s)", file=sys.stdout)


def _interrupted(stop: GracefulStop, epoch: int, step: int, run_dir: Path, overrides: list[str]) -> Interrupted:
    # Under DDP another rank may have got the signal; SIGTERM is what torchrun passes on.
    signum = stop.signum or signal.SIGTERM
    return Interrupted(f"interrupted by {signal.Signals(signum).name} in epoch {epoch + 1} at iteration {step}; the "
                       f"state is saved in {run_dir / 'last.pt'}. Resume with: "
                       f"{_resume_hint(overrides, run_dir / 'last.pt')}", signum, stop.previous(signum))


def _global_totals(totals: EpochTotals, dist: Dist, device: torch.device) -> EpochTotals:
    if not dist.active:
        return totals
    loss_sum, wrong, images = distributed.sum_over_ranks([totals.loss_sum, totals.wrong, totals.images], dist, device)
    return EpochTotals(loss_sum=loss_sum, wrong=round(wrong), images=round(images), steps=totals.steps,
                       seconds=totals.seconds)


def evaluate_checkpoint(cfg: Config) -> dict[str, float]:
    """`mode=eval`: the model comes from the checkpoint's own config; the data from cfg."""
    device = resolve_device(cfg.device)
    state = ckpt_io.load_checkpoint(cfg.ckpt)
    saved_model = ModelConfig(**state["config"]["model"])
    model = make_model(saved_model, cfg.data)
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as exc:
        raise CheckpointError(f"{cfg.ckpt} does not fit its model config ({str(exc).splitlines()[0]})") from exc
    model.to(device)
    data = build_datasets(cfg.data, cfg.seed)
    loader = make_loader(data.evals["test"], cfg.train.eval_batch_size, num_workers=cfg.data.num_workers,
                         pin_memory=device.type == "cuda")
    res = evaluate(model, loader, device=device, amp=cfg.train.amp and device.type == "cuda",
                   top5=wants_top5(cfg.data))
    saved_data = state["config"]["data"]["name"]
    if saved_data != cfg.data.name:
        print(f"note: the checkpoint was trained on {saved_data}; evaluating on {cfg.data.name}")
    print(f"{cfg.ckpt}: epoch {state['epoch']}, test loss {res['loss']:.4f}, test err {res['err']:.2f}%")
    print(json.dumps({"ckpt": str(cfg.ckpt), "epoch": state["epoch"], **{f"test_{k}": v for k, v in res.items()}}))
    return res
