"""Typed config schema, registered in Hydra's ConfigStore, and the value checks that a type
alone cannot express. Everything below this module receives these plain dataclasses."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field, replace
from typing import Any, Optional

from .models import ModelError, ModelSpec

NORMALIZATIONS = ("channel", "pixel", "pixel_global_std")
SAMPLERS = ("shuffle", "replacement")

MODES = ("train", "eval", "info", "analyze")
DEVICES = ("auto", "cpu", "cuda")
OPTIMIZERS = ("sgd", "adam", "rmsprop", "adagrad", "adadelta")
SCHEDULES = ("multistep", "step", "cosine", "constant")
SCHEDULE_UNITS = ("epochs", "iterations")
WARMUP_MODES = ("constant", "linear")
DATASETS = ("cifar10", "cifar100", "svhn", "imagefolder", "synthetic", "cifar10_sample")
AUGMENTATIONS = ("cifar", "imagenet", "none")
PAD_MODES = ("zero", "black", "reflect")
CROP_ASPECTS = ("uniform", "squared")
COMPILE_MODES = ("none", "default", "reduce-overhead", "max-autotune")
GRAD_NORM_GROUPS = ("stage", "unit")


# The model section is the model layer's own spec: its fields, defaults and rules live there.
ModelConfig = ModelSpec


@dataclass
class OptimConfig:
    name: str = "sgd"  # sgd | adam | rmsprop | adagrad | adadelta
    lr: float = 0.1
    weight_decay: float = 1e-4
    # fb.resnet.torch decays every parameter; false exempts BN parameters and biases.
    decay_bn_and_bias: bool = True
    momentum: float = 0.9  # sgd; rmsprop
    nesterov: bool = False  # sgd
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])  # adam
    alpha: float = 0.99  # rmsprop smoothing
    rho: float = 0.9  # adadelta
    eps: float = 1e-8  # adam, rmsprop, adagrad; adadelta uses 1e-6 in its file
    # Linear scaling rule (Goyal et al. 2017): with a value B, the LR becomes lr * batch_size / B.
    # Pair it with a warm-up (sched.warmup) for large batches.
    lr_reference_batch: Optional[int] = None

    def base_lr(self, batch_size: int) -> float:
        """The LR the schedule starts from for this global batch (images per iteration)."""
        return self.lr * batch_size / self.lr_reference_batch if self.lr_reference_batch else self.lr


@dataclass
class SchedConfig:
    name: str = "multistep"  # multistep | step | cosine | constant
    unit: str = "epochs"  # epochs | iterations: the unit of milestones and step_size
    # The one convention for every schedule: a milestone m is m completed units, so with
    # unit=epochs the LR drops at the start of epoch m counted from 0 (epoch m + 1 counted from 1,
    # as Lua code counts). fb.resnet.torch's "x0.1 from epoch 81" is milestone 80.
    # Fractions of an epoch are allowed: train.screening puts an epoch recipe's drops at their share
    # of the shortened run, which is whole epochs.
    milestones: list[float] = field(default_factory=lambda: [80, 121])
    gamma: float = 0.1  # LR factor at each milestone or step
    step_size: float = 30  # step: decay every step_size units
    min_lr: float = 0.0  # cosine floor
    warmup: int = 0  # length of the warm-up, in iterations (whatever the unit)
    warmup_lr: float = 0.01
    warmup_mode: str = "constant"  # constant: warmup_lr throughout; linear: warmup_lr -> lr
    # multistep and step: clear the optimizer's state (momentum buffers) at each drop, as WRN's
    # train.lua builds a fresh optimizer state there.
    reset_state: bool = False


@dataclass
class DataConfig:
    name: str = "cifar10"
    root: str = "data"
    download: bool = False
    num_classes: int = 10
    image_size: int = 32  # pixels, training crop size
    # channel: (x - mean) / std with the per-channel values below (fb.resnet.torch); pixel: minus
    # the training set's mean image (He 2015); pixel_global_std: minus the mean image, divided by
    # one std of all training pixels (gcr/torch-residual-networks, the Torch blog's code).
    normalize: str = "channel"
    mean: list[float] = field(default_factory=lambda: [0.4914, 0.4822, 0.4465])  # per channel, 0..1 scale
    std: list[float] = field(default_factory=lambda: [0.2470, 0.2435, 0.2616])
    augment: str = "cifar"  # cifar: pad + random crop + flip; imagenet: random-resized crop + flip
    pad: int = 4  # pixels, cifar augmentation
    # zero: pad the normalised image with 0, so the border is the mean (fb.resnet.torch, gcr);
    # black: pad the raw image with 0 before normalising (torchvision on uint8); reflect (WRN).
    pad_mode: str = "zero"
    # shuffle: a permutation per epoch; replacement: every batch drawn uniformly with replacement
    # (gcr's sampler). An epoch is ceil(N / batch_size) batches either way, the last one short
    # when shuffling (fb.resnet.torch keeps it), unless drop_last: floor(N / batch_size) full
    # batches, the images left over unseen that epoch (WRN's torchnet 'skip-last').
    sampler: str = "shuffle"
    drop_last: bool = False
    color_jitter: float = 0.0  # imagenet augmentation: brightness, contrast and saturation strength
    lighting: float = 0.0  # imagenet augmentation: std of AlexNet's PCA lighting noise
    # imagenet augmentation, the crop's aspect ratio: uniform: w/h = a, a uniform in [3/4, 4/3]
    # (fb.resnet.torch from d4b9406, 2016-02-19); squared: w/h = a^2, as the code before that fix
    # drew it, the code of fb.resnet.torch's released ResNet-18, -34, -50 and -101.
    crop_aspect: str = "uniform"
    val_size: int = 0  # training images held out as validation (He 2015 used 5000)
    # SVHN only: train on train_32x32.mat and extra_32x32.mat together (73,257 + 531,131 images), the
    # usual SVHN protocol; false trains on train_32x32.mat alone.
    extra: bool = False
    num_workers: int = 2
    # Keep an in-memory dataset on the device as uint8 and augment it there per batch; null: on
    # CUDA (the fast path), off on CPU (the plain per-image torchvision path, the reference).
    on_gpu: Optional[bool] = None
    # Images. Synthetic: how many to make (required). Other in-memory sets: keep a fixed random
    # subset of this size (for quick runs and tests); null keeps them all.
    train_size: Optional[int] = None
    test_size: Optional[int] = None


@dataclass
class TrainConfig:
    epochs: Optional[int] = 164  # length in epochs; set null to use iterations
    iterations: Optional[int] = None  # length in iterations (He 2015: 64000)
    batch_size: int = 128
    eval_every: int = 1  # epochs
    progress: bool = True  # tqdm bars (off when stderr is not a terminal)
    amp: bool = True  # bf16 autocast; CUDA only (CPU runs stay fp32)
    channels_last: bool = True  # NHWC memory layout for the model and inputs; CUDA only
    # none | default | reduce-overhead | max-autotune (torch.compile; the last two replay CUDA graphs)
    compile: str = "none"
    # Capture forward, loss and backward of each step in one CUDA graph and replay it (one CUDA
    # process only). Off until measured on a GPU: no session has had one yet.
    cuda_graphs: bool = False
    eval_batch_size: int = 500
    sync_bn: bool = False  # under DDP: BN statistics over the global batch
    keep_last: int = 0  # also keep the last N end-of-epoch checkpoints as epoch_NNNN.pt
    # Fraction of the recipe's length, to screen a suite's orderings cheaply (e.g. 0.25): epochs
    # or iterations scaled and rounded, every milestone and step_size with them (see screened);
    # the warm-up (iterations) stays. Reports keep such runs apart from full ones.
    screening: float = 1.0
    # Every N iterations, log to TensorBoard the gradient norm of each part of the network
    # (grad_norm/...), by stage or by residual unit; 0: off. The run's weights are the same either way.
    grad_norm_every: int = 0
    grad_norm_by: str = "stage"  # stage | unit


@dataclass
class Config:
    mode: str = "train"  # train | eval | info | analyze
    seed: int = 0
    # Train the K runs seed, seed+1, ..., seed+K-1 at once as one K-member network (members.py),
    # each in its own folder seedN below the run folder, each exactly the run seed=N alone.
    seeds: int = 1
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    ckpt: Optional[str] = None  # mode=eval and mode=analyze: a checkpoint, or a folder (every last.pt under it)
    resume: Optional[str] = None  # auto or a path to last.pt
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    sched: SchedConfig = field(default_factory=SchedConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    experiment: Optional[str] = None  # set by experiment/ files, used to group runs in reports


def screened(cfg: Config) -> Config:
    """The run that train.screening asks for: the recipe's length scaled and rounded (whole epochs
    or iterations, at least one), and its schedule with it. Milestones and step_size in iterations
    are rounded likewise; in epochs they are not rounded but scaled by the run's actual share of
    the recipe, so that each LR drop stays at its fraction of the run: WRN's milestones [59, 119,
    159] of 200 epochs become [0.885, 1.785, 2.385] of a 1/64 run's 3, where rounding would merge
    them into [1, 2, 2]."""
    f = cfg.train.screening
    if f == 1.0:
        return cfg

    def scale(value: float) -> int:
        return max(1, round(value * f))

    t, s = cfg.train, cfg.sched
    train = replace(t, epochs=scale(t.epochs) if t.epochs is not None else None,
                    iterations=scale(t.iterations) if t.iterations is not None else None)
    if s.unit == "epochs":
        share = train.epochs / t.epochs if t.epochs is not None else f
        sched = replace(s, milestones=[round(m * share, 6) for m in s.milestones],
                        step_size=round(s.step_size * share, 6))
    else:
        sched = replace(s, milestones=[scale(m) for m in s.milestones], step_size=scale(s.step_size))
    return replace(cfg, train=train, sched=sched)


def sweep_subdir(num: int, swept: str) -> str:
    """A sweep job's folder: its number, then the values it sweeps ("/" in a value made safe)."""
    return f"{num}_{swept.replace('/', '-')}" if swept else str(num)


def override_keys(overrides: list[str]) -> dict[str, str | None]:
    """A command line's overrides as key -> value ("optim=adam" -> optim: adam; "~key" -> None)."""
    out: dict[str, str | None] = {}
    for o in overrides:
        key, _, value = o.lstrip("+~").partition("=")
        out[key] = None if o.startswith("~") else value
    return out


def register_configs() -> None:
    from hydra.core.config_store import ConfigStore
    from omegaconf import OmegaConf

    cs = ConfigStore.instance()
    cs.store(name="config_schema", node=Config)
    OmegaConf.register_new_resolver("sweep_subdir", sweep_subdir, replace=True)


def unknown_keys(tree: dict, schema: type = Config, prefix: str = "") -> list[str]:
    """Keys of a composed config that the schema does not have: Hydra lets `+key=value` add
    them, and they would be dropped without a word."""
    fields = {f.name: f for f in dataclasses.fields(schema)}
    out = []
    for key, value in tree.items():
        if key not in fields:
            out.append(f"{prefix}{key}")
        elif isinstance(value, dict) and dataclasses.is_dataclass(fields[key].default_factory):
            out += unknown_keys(value, fields[key].default_factory, f"{prefix}{key}.")
    return out


def _choice(key: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"{key}={value!r} is not valid; choose one of {', '.join(choices)}")


def _positive(key: str, value: Any) -> None:
    if value is None or value <= 0:
        raise ValueError(f"{key} must be positive, got {value}")


def _non_negative(key: str, value: Any, unit: str = "") -> None:
    if value < 0:
        raise ValueError(f"{key} must be >= 0{unit}, got {value}")


def validate(cfg: Config) -> None:
    """Value checks that fail at start with one readable line (ValueError)."""
    _choice("mode", cfg.mode, MODES)
    if not (cfg.device.startswith("cuda:") and cfg.device[5:].isdigit()):
        _choice("device", cfg.device, DEVICES + ("cuda:N",))
    try:
        cfg.model.check(cfg.data.num_classes)
    except ModelError as exc:
        key = "data." if exc.key == "num_classes" else "model."
        raise ValueError(exc.describe(key)) from None
    o = cfg.optim
    _choice("optim.name", o.name, OPTIMIZERS)
    _positive("optim.lr", o.lr)
    _non_negative("optim.weight_decay", o.weight_decay)
    for key in ("momentum", "alpha", "rho"):
        if not 0.0 <= getattr(o, key) < 1.0:
            raise ValueError(f"optim.{key} is a decay rate in [0, 1), got {getattr(o, key)}")
    if len(o.betas) != 2 or not all(0.0 <= b < 1.0 for b in o.betas):
        raise ValueError(f"optim.betas are two decay rates in [0, 1) (Adam's beta1, beta2), got {list(o.betas)}")
    _positive("optim.eps", o.eps)
    if o.nesterov and (o.name != "sgd" or o.momentum == 0):
        raise ValueError(f"optim.nesterov=true is SGD's Nesterov momentum and needs optim.name=sgd with optim.momentum "
                         f"> 0, got optim.name={o.name}, optim.momentum={o.momentum}; set optim.nesterov=false")
    if o.lr_reference_batch is not None:
        _positive("optim.lr_reference_batch", o.lr_reference_batch)
    s = cfg.sched
    _choice("sched.name", s.name, SCHEDULES)
    _choice("sched.unit", s.unit, SCHEDULE_UNITS)
    _choice("sched.warmup_mode", s.warmup_mode, WARMUP_MODES)
    if s.name == "step":
        _positive("sched.step_size", s.step_size)
    if list(s.milestones) != sorted(s.milestones):
        raise ValueError(f"sched.milestones must be increasing, got {list(s.milestones)}")
    if s.milestones:
        _non_negative("sched.milestones", s.milestones[0], f" {s.unit}")
    if not 0.0 < s.gamma <= 1.0:
        raise ValueError(f"sched.gamma is the LR's factor at each drop, in (0, 1], got {s.gamma} (0.1: a tenth)")
    _non_negative("sched.warmup", s.warmup, " iterations")
    base_lr = o.base_lr(cfg.train.batch_size)
    if s.name == "cosine" and not 0.0 <= s.min_lr <= base_lr:
        raise ValueError(f"sched.min_lr={s.min_lr} is the floor the cosine falls to and must lie in [0, {base_lr:g}] "
                         f"(the base LR, optim.lr)")
    if s.warmup and not 0.0 <= s.warmup_lr <= base_lr:
        raise ValueError(f"sched.warmup_lr={s.warmup_lr} must lie in [0, {base_lr:g}] (the base LR, optim.lr) for a "
                         f"warm-up to lead up to it; lower it (He 2015: a tenth) or set sched.warmup=0")
    if s.reset_state and s.name not in ("multistep", "step"):
        raise ValueError(f"sched.reset_state=true clears the optimizer state at each LR drop, which sched.name="
                         f"{s.name} does not have; use sched=multistep or sched=step, or reset_state=false")
    d = cfg.data
    _choice("data.name", d.name, DATASETS)
    _choice("data.augment", d.augment, AUGMENTATIONS)
    _choice("data.pad_mode", d.pad_mode, PAD_MODES)
    _choice("data.normalize", d.normalize, NORMALIZATIONS)
    _choice("data.sampler", d.sampler, SAMPLERS)
    _choice("data.crop_aspect", d.crop_aspect, CROP_ASPECTS)
    if d.crop_aspect != "uniform" and d.augment != "imagenet":
        raise ValueError(f"data.crop_aspect={d.crop_aspect} shapes the random-sized crop of data.augment=imagenet, "
                         f"but data.augment={d.augment}; leave data.crop_aspect=uniform")
    if d.pad_mode == "black" and d.normalize != "channel":
        raise ValueError("data.pad_mode=black pads before normalising, which only data.normalize=channel allows "
                         "(a per-pixel mean would not line up with the shifted image); use data.pad_mode=zero")
    _positive("data.num_classes", d.num_classes)
    _positive("data.image_size", d.image_size)
    _non_negative("data.pad", d.pad, " pixels")
    for key in ("mean", "std"):
        if len(getattr(d, key)) != 3:
            raise ValueError(f"data.{key} takes 3 values, one per colour channel (0..1 scale), "
                             f"got {list(getattr(d, key))}")
    if min(d.std) <= 0:
        raise ValueError(f"data.std must be positive in every channel, got {list(d.std)}")
    _non_negative("data.color_jitter", d.color_jitter)
    _non_negative("data.lighting", d.lighting)
    if d.name == "synthetic" and (d.train_size is None or d.test_size is None):
        raise ValueError("data=synthetic needs data.train_size and data.test_size (images)")
    for key in ("train_size", "test_size"):
        if getattr(d, key) is not None:
            _positive(f"data.{key}", getattr(d, key))
    _non_negative("data.val_size", d.val_size)
    if d.extra and d.name != "svhn":
        raise ValueError(f"data.extra=true adds SVHN's extra images, but data.name={d.name}; use data=svhn, "
                         f"or leave data.extra=false")
    _non_negative("data.num_workers", d.num_workers)
    t = cfg.train
    if (t.epochs is None) == (t.iterations is None):
        raise ValueError("set exactly one of train.epochs and train.iterations (the other to null)")
    _positive("train.epochs" if t.epochs is not None else "train.iterations",
              t.epochs if t.epochs is not None else t.iterations)
    _positive("train.batch_size", t.batch_size)
    _choice("train.compile", t.compile, COMPILE_MODES)
    if t.cuda_graphs and t.compile in ("reduce-overhead", "max-autotune"):
        raise ValueError(f"train.cuda_graphs=true and train.compile={t.compile} both capture CUDA graphs, one inside "
                         f"the other; choose one (e.g. train.compile=default with train.cuda_graphs=true)")
    if t.cuda_graphs and cfg.model.bn_momentum is None:
        raise ValueError("model.bn_momentum=null (BN statistics averaged over each epoch) weighs each batch by a count "
                         "read on the host, which a captured CUDA graph cannot do; set train.cuda_graphs=false")
    _positive("train.eval_batch_size", t.eval_batch_size)
    _positive("train.eval_every", t.eval_every)
    _non_negative("train.keep_last", t.keep_last)
    _non_negative("train.grad_norm_every", t.grad_norm_every, " iterations (0: off)")
    _choice("train.grad_norm_by", t.grad_norm_by, GRAD_NORM_GROUPS)
    if not 0.0 < t.screening <= 1.0:
        raise ValueError(f"train.screening is a fraction of the recipe's length in (0, 1], got {t.screening} "
                         f"(e.g. train.screening=0.25)")
    if not isinstance(cfg.seeds, int) or cfg.seeds < 1:
        raise ValueError(f"seeds is how many seeds to train at once, a positive integer; got {cfg.seeds}")
    # numpy takes an unsigned 32-bit seed, and seeds=K also seeds seed+1 ... seed+K-1.
    if not 0 <= cfg.seed <= 2**32 - cfg.seeds:
        raise ValueError(f"seed must lie in [0, {2**32 - cfg.seeds}] with seeds={cfg.seeds} (numpy's seeds are "
                         f"unsigned 32-bit integers), got {cfg.seed}")
    if cfg.seeds > 1 and t.grad_norm_every:
        raise ValueError(f"train.grad_norm_every logs one network's gradients; with seeds={cfg.seeds} set it to 0, "
                         f"or train the seed to inspect with seeds=1")
    if cfg.seeds > 1 and cfg.resume not in (None, "auto"):
        raise ValueError(f"resume={cfg.resume} names one checkpoint; a seeds={cfg.seeds} run resumes all its members "
                         f"from its folder with resume=auto hydra.run.dir=FOLDER")
    if cfg.mode in ("eval", "analyze") and not cfg.ckpt:
        raise ValueError(f"mode={cfg.mode} needs a checkpoint: add ckpt=PATH/TO/last.pt, or ckpt=FOLDER for "
                         f"every run in it")
