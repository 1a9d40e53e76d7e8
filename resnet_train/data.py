"""Datasets, transforms and loaders.

In-memory datasets (CIFAR, SVHN, the shipped sample, synthetic) are held as one uint8 tensor
of shape (N, 3, H, W); ImageFolder trees are read from disk. Every dataset yields uint8 images
that torchvision's transforms (ImageFolder trees: fb.resnet.torch's, `transforms.py`) turn into
normalised float tensors.
"""

from __future__ import annotations

import multiprocessing
import os
import pickle
import signal
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, Sampler
from torchvision.transforms import v2

from . import transforms as fb
from .config import DataConfig
from .interrupt import GracefulStop


class DataError(Exception):
    """A dataset that is missing, unreadable or inconsistent with its config."""


@dataclass
class Split:
    images: torch.Tensor  # uint8, (N, 3, H, W)
    labels: torch.Tensor  # int64, (N,)


class TensorImages(Dataset):
    def __init__(self, split: Split):
        self.split = split

    def __len__(self) -> int:
        return len(self.split.labels)

    def __getitem__(self, i: int):
        return self.split.images[i], int(self.split.labels[i])


class Transformed(Dataset):
    """Applies `transform` to each (image, label) of `base`. With `seed` set, each sample's
    random augmentation is drawn from a generator seeded by (seed, epoch, index) alone, so it
    does not depend on the number of loader workers, on which worker takes the sample, or on
    where in the epoch a resumed run starts. The key is an index, or (epoch, index[, draw]) as
    EpochSampler yields it: the epoch travels with the key, so persistent workers see it; a
    sampler that draws with replacement adds the draw's position, so repeats differ."""

    def __init__(self, base: Dataset, transform, seed: int | None = None):
        self.base = base
        self.transform = transform
        self.seed = seed

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, key: int | tuple[int, ...]):
        epoch, i, *draw = key if isinstance(key, tuple) else (0, key)
        image, label = self.base[i]
        if self.seed is None:
            return self.transform(image), label
        # torchvision's transforms draw from the default CPU generator: seed it for this sample
        # and give it back its state (torch.manual_seed and fork_rng cost 100x more).
        gen = torch.default_generator
        saved = gen.get_state()
        gen.manual_seed(_mix(self.seed, epoch, i, *draw))
        try:
            return self.transform(image), label
        finally:
            gen.set_state(saved)


def _mix(*values: int) -> int:
    h = 0x9E3779B97F4A7C15
    for v in values:
        h = (h ^ (v + 0x9E3779B97F4A7C15 + (h << 6) + (h >> 2))) & 0x7FFFFFFFFFFFFFFF
    return h


class EpochSampler(Sampler[int]):
    """An order fixed by (seed, epoch), which can start part-way through an epoch: a permutation
    (shuffle), or with `replacement` ceil(N / global_batch) full batches of indices drawn
    uniformly with replacement (gcr/torch-residual-networks data/cifar-dataset.lua@3d1ed05:90).
    With `drop_last` an epoch is floor(N / global_batch) batches: the permutation's last N mod
    global_batch images are not seen that epoch (torchnet's 'skip-last', as WRN's train.lua@ae6d0d0:
    142 batches; 390 batches of 128 on CIFAR instead of 391). Under DDP, process `rank` of `world`
    takes its share of every global batch of `global_batch` images, so N processes see together
    exactly the batches one process would."""

    def __init__(self, size: int, seed: int, global_batch: int, rank: int = 0, world: int = 1,
                 replacement: bool = False, drop_last: bool = False):
        self.size, self.seed, self.global_batch, self.rank, self.world = size, seed, global_batch, rank, world
        self.replacement = replacement
        if global_batch > size and not replacement:
            # A permutation holds each image once: the one batch would be the whole set, smaller than
            # the batch the run reports and scales its LR by. Drawn with replacement, it is full.
            raise DataError(f"train.batch_size={global_batch} is more than the {size} training images, which a "
                            f"shuffled epoch holds once each; set train.batch_size to at most {size}, or "
                            f"data.sampler=replacement")
        self.batches = size // global_batch if drop_last else -(-size // global_batch)
        if self.batches == 0:
            raise DataError(f"data.drop_last=true with {size} training images and train.batch_size={global_batch} "
                            f"leaves no full batch; set data.drop_last=false or a smaller batch")
        self.epoch, self.start = 0, 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        """start: images of this epoch's global order already consumed (a resumed run skips them)."""
        self.epoch, self.start = epoch, start

    def global_order(self) -> torch.Tensor:
        """The epoch's order over all processes, from `start` on."""
        g = torch.Generator().manual_seed(_mix(self.seed, self.epoch))
        draws = self.batches * self.global_batch
        if self.replacement:
            return torch.randint(self.size, (draws,), generator=g)[self.start:]
        return torch.randperm(self.size, generator=g)[:draws][self.start:]

    def share(self, global_batch: torch.Tensor) -> torch.Tensor:
        """This process's part of one global batch."""
        return global_batch.tensor_split(self.world)[self.rank] if self.world > 1 else global_batch

    def indices(self) -> torch.Tensor:
        return torch.cat([self.share(b) for b in self.global_order().split(self.global_batch)])

    def __iter__(self):
        if not self.replacement:
            return ((self.epoch, i) for i in self.indices().tolist())
        # The draw's position keys its augmentation, so an image drawn twice is augmented twice.
        order = self.global_order()
        positions = torch.arange(self.start, self.start + len(order))
        pairs = [(self.share(b), self.share(p)) for b, p in
                 zip(order.split(self.global_batch), positions.split(self.global_batch), strict=True)]
        return ((self.epoch, i, d) for b, p in pairs for i, d in zip(b.tolist(), p.tolist(), strict=True))

    def __len__(self) -> int:
        return len(self.indices())


# ---------------------------------------------------------------- readers

_CIFAR = {
    "cifar10": ("CIFAR-10", "cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)], ["test_batch"], "labels"),
    "cifar100": ("CIFAR-100", "cifar-100-python", ["train"], ["test"], "fine_labels"),
}


def _missing(what: str, path: Path, can_download: bool) -> DataError:
    fixes = "point data.root=... at the folder that holds it"
    if can_download:
        fixes += ", or set data.download=true to fetch it (needs a network)"
    return DataError(f"{what} not found at {path}: {fixes}")


def _download(name: str, root: Path, splits: tuple[str, ...] = ("train", "test")) -> None:
    """Fetches a dataset through torchvision: CIFAR whole, SVHN's `splits`."""
    import torchvision.datasets as tvd

    cls = {"cifar10": tvd.CIFAR10, "cifar100": tvd.CIFAR100}.get(name)
    try:
        if cls is not None:
            cls(str(root), train=True, download=True)
        else:  # svhn
            for split in splits:
                tvd.SVHN(str(root), split=split, download=True)
    except Exception as exc:  # torchvision raises URLError, OSError or RuntimeError
        raise DataError(f"could not download {name} to {root} ({type(exc).__name__}: {exc}); without a network, "
                        f"copy the files there by hand and set data.root=...") from exc


def _read_pickle(path: Path) -> dict:
    try:
        with open(path, "rb") as f:
            return pickle.load(f, encoding="latin1")
    except FileNotFoundError:
        raise
    except Exception as exc:
        raise DataError(f"{path} is truncated or corrupt ({type(exc).__name__}: {exc}); delete it and "
                        f"unpack or download the dataset again") from exc


def read_cifar(name: str, root: Path, download: bool) -> tuple[Split, Split]:
    title, folder, train_files, test_files, label_key = _CIFAR[name]
    base = root / folder
    if download and not all((base / f).exists() for f in train_files + test_files):
        _download(name, root)

    def load(files: list[str]) -> Split:
        images, labels = [], []
        for f in files:
            try:
                batch = _read_pickle(base / f)
            except FileNotFoundError:
                raise _missing(f"{title} file {f}", base, can_download=True) from None
            try:
                images.append(np.asarray(batch["data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
                labels.append(np.asarray(batch[label_key], dtype=np.int64))
            except (KeyError, ValueError) as exc:
                raise DataError(f"{base / f} is not a {title} batch ({exc})") from exc
        return Split(torch.from_numpy(np.concatenate(images)), torch.from_numpy(np.concatenate(labels)))

    return load(train_files), load(test_files)


def read_svhn(root: Path, download: bool, extra: bool = False) -> tuple[Split, Split]:
    """SVHN's test set, and its training set (with `extra`, train and extra together)."""
    splits = ("train", "test", "extra") if extra else ("train", "test")
    files = {split: root / f"{split}_32x32.mat" for split in splits}
    if download and not all(p.exists() for p in files.values()):
        _download("svhn", root, splits)
    try:
        from scipy.io import loadmat
    except ImportError as exc:
        raise DataError("SVHN's .mat files need scipy: pip install 'resnet-train[svhn]'") from exc

    def load(path: Path) -> Split:
        if not path.exists():
            raise _missing(f"SVHN file {path.name}", path.parent, can_download=True)
        try:
            mat = loadmat(path)
            images = np.ascontiguousarray(mat["X"].transpose(3, 2, 0, 1), dtype=np.uint8)
            labels = mat["y"].astype(np.int64).reshape(-1)
        except Exception as exc:
            raise DataError(f"{path} is truncated or corrupt ({type(exc).__name__}: {exc})") from exc
        labels[labels == 10] = 0  # SVHN stores the digit 0 as label 10
        return Split(torch.from_numpy(images), torch.from_numpy(labels))

    train = load(files["train"])
    if extra:
        more = load(files["extra"])
        train = Split(torch.cat([train.images, more.images]), torch.cat([train.labels, more.labels]))
    return train, load(files["test"])


def read_sample() -> tuple[Split, Split]:
    """The CIFAR-10 subset shipped in resnet_train/assets (see scripts/make_cifar10_sample.py)."""
    import io

    from PIL import Image

    with resources.files("resnet_train").joinpath("assets/cifar10_sample.npz").open("rb") as f:
        z = np.load(f)

        def load(split: str) -> Split:
            buf, off = z[f"{split}_jpeg"].tobytes(), z[f"{split}_offsets"]
            images = np.stack([np.asarray(Image.open(io.BytesIO(buf[off[i]:off[i + 1]])).convert("RGB"))
                               for i in range(len(off) - 1)])
            return Split(torch.from_numpy(images).permute(0, 3, 1, 2).contiguous(),
                         torch.from_numpy(z[f"{split}_labels"]))

        return load("train"), load("test")


def make_synthetic(cfg: DataConfig, seed: int) -> tuple[Split, Split]:
    g = torch.Generator().manual_seed(seed)

    def make(n: int) -> Split:
        images = torch.randint(0, 256, (n, 3, cfg.image_size, cfg.image_size), dtype=torch.uint8, generator=g)
        return Split(images, torch.randint(0, cfg.num_classes, (n,), generator=g))

    return make(cfg.train_size), make(cfg.test_size)


def subset(split: Split, size: int | None) -> Split:
    """A fixed random subset (seed 0, the same in every run), so it keeps the class balance."""
    if size is None or size >= len(split.labels):
        return split
    keep = torch.randperm(len(split.labels), generator=torch.Generator().manual_seed(0))[:size]
    return Split(split.images[keep], split.labels[keep])


def hold_out(train: Split, val_size: int) -> tuple[Split, Split]:
    """Splits off val_size training images as validation (He 2015 Sec. 4.2: 45k/5k). The split
    uses a fixed seed, so every run of a sweep holds out the same images."""
    if val_size >= len(train.labels):
        raise DataError(f"data.val_size={val_size} leaves no training images (the set has {len(train.labels)})")
    perm = torch.randperm(len(train.labels), generator=torch.Generator().manual_seed(0))
    keep, val = perm[:-val_size], perm[-val_size:]
    return Split(train.images[keep], train.labels[keep]), Split(train.images[val], train.labels[val])


# ---------------------------------------------------------------- transforms

@dataclass
class Normalization:
    """x -> (x - mean) / std on images scaled to 0..1. `channel`: the config's per-channel mean
    and std (fb.resnet.torch datasets/cifar10.lua@985e569:38-41). `pixel`: the training set's mean
    image, no std (He 2015 Sec. 4.2). `pixel_global_std`: the mean image and one std of all raw
    training pixels (gcr/torch-residual-networks data/cifar-dataset.lua@3d1ed05:36-41)."""

    mean: torch.Tensor  # (3, 1, 1) or (3, H, W)
    std: torch.Tensor  # (3, 1, 1) or (1, 1, 1)

    @classmethod
    def for_data(cls, cfg: DataConfig, train: Split | None) -> Normalization:
        if cfg.normalize == "channel":
            return cls(torch.tensor(cfg.mean).view(3, 1, 1), torch.tensor(cfg.std).view(3, 1, 1))
        if train is None or cfg.augment == "imagenet":
            raise DataError(f"data.normalize={cfg.normalize} needs an in-memory dataset of equal-sized images "
                            f"(CIFAR, SVHN); use data.normalize=channel")
        total, total_sq = torch.zeros(train.images.shape[1:], dtype=torch.float64), 0.0
        for chunk in train.images.split(4096):  # in float64 chunks: 50k images as float32 would take 600 MB
            x = chunk.double()
            total += x.sum(0)
            total_sq += float((x * x).sum())
        n = len(train.images)
        mean = total / n
        if cfg.normalize == "pixel":
            std = torch.full((1, 1, 1), 255.0, dtype=torch.float64)
        else:  # Torch7's tensor:std(), with N - 1
            count = n * mean.numel()
            std = torch.tensor(((total_sq - float(total.sum()) ** 2 / count) / (count - 1)) ** 0.5).view(1, 1, 1)
        return cls((mean / 255).float(), (std / 255).float())

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        return (image - self.mean.to(image.device)) / self.std.to(image.device)


def _normalize(norm: Normalization):
    if norm.mean.shape[-1] == 1 and norm.std.shape[0] == 3:  # per channel: torchvision's own transform
        return v2.Normalize(norm.mean.flatten().tolist(), norm.std.flatten().tolist())
    return norm


def train_transform(cfg: DataConfig, norm: Normalization | None = None):
    norm = norm or Normalization.for_data(cfg, None)
    ops: list = [v2.ToImage()]
    if cfg.augment == "cifar":
        # He 2015 Sec. 4.2: pad 4 pixels, take a random 32x32 crop, flip horizontally. fb.resnet.torch
        # and gcr normalise first and pad with 0, so the border is the mean (pad_mode=zero); black
        # pads the raw image with 0 before normalising, as torchvision's RandomCrop on uint8.
        crop = v2.RandomCrop(cfg.image_size, padding=cfg.pad, padding_mode="reflect" if cfg.pad_mode == "reflect"
                             else "constant")
        if cfg.pad_mode == "black":
            return v2.Compose(ops + [crop, v2.RandomHorizontalFlip(), v2.ToDtype(torch.float32, scale=True),
                                     _normalize(norm)])
        return v2.Compose(ops + [v2.ToDtype(torch.float32, scale=True), _normalize(norm), crop,
                                 v2.RandomHorizontalFlip()])
    if cfg.augment == "imagenet":  # fb.resnet.torch datasets/imagenet.lua@985e569:82-92, in its order
        ops += [fb.RandomSizedCrop(cfg.image_size, squared=cfg.crop_aspect == "squared")]  # converts the crop
        ops += [fb.ColorJitter(cfg.color_jitter)] if cfg.color_jitter else []
        ops += [fb.Lighting(cfg.lighting)] if cfg.lighting else []
        return v2.Compose(ops + [_normalize(norm), v2.RandomHorizontalFlip()])
    return v2.Compose(ops + [v2.ToDtype(torch.float32, scale=True), _normalize(norm)])


def eval_transform(cfg: DataConfig, norm: Normalization | None = None):
    norm = norm or Normalization.for_data(cfg, None)
    ops: list = [v2.ToImage(), v2.ToDtype(torch.float32, scale=True)]
    if cfg.augment == "imagenet":  # imagenet.lua:95-99: the shorter side to 256, the centre 224 (scaled alike)
        ops += [fb.ScaleCenterCrop(cfg.image_size * 256 // 224, cfg.image_size)]
    return v2.Compose(ops + [_normalize(norm)])


# ---------------------------------------------------------------- device-resident batches

def draw_crop_flip(n: int, pad: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """The draws of torchvision's RandomCrop(size, padding=pad) + RandomHorizontalFlip() for n
    images: top-left offsets (2, n) uniform in [0, 2 * pad] per axis, and flips (n,) with
    probability 1/2. From a CPU generator, so they do not depend on the device."""
    return torch.randint(0, 2 * pad + 1, (2, n), generator=gen), torch.rand(n, generator=gen) < 0.5


def random_crop_flip(images: torch.Tensor, pad: int, pad_mode: str, offsets: torch.Tensor,
                     flips: torch.Tensor) -> torch.Tensor:
    """Pads, crops and flips a batch of float images (B, C, H, W) as `draw_crop_flip` drew, on the
    images' device. pad_mode zero and black pad with 0 (the caller normalises before or after),
    reflect mirrors the border."""
    b, _, h, w = images.shape
    offsets, flips = offsets.to(images.device), flips.to(images.device)
    if pad:
        images = F.pad(images, (pad, pad, pad, pad), mode="reflect" if pad_mode == "reflect" else "constant")
    rows = offsets[0][:, None] + torch.arange(h, device=images.device)
    cols = offsets[1][:, None] + torch.arange(w, device=images.device)
    cols = torch.where(flips[:, None], cols.flip(1), cols)
    batch = torch.arange(b, device=images.device)[:, None, None]
    # Advanced indexing puts the indexed dims first: (B, H, W, C); the permute back to
    # (B, C, H, W) leaves the data in channels_last order.
    return images[batch, :, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)


class DeviceBatches:
    """Batches cut from uint8 images held on the device (CIFAR: 150 MB; SVHN with its extra images:
    1.9 GB), converted, normalised and augmented there per batch (in the order train_transform
    uses): no loader workers and no host copies per step. The order comes from the same
    EpochSampler as the loader path; the augmentation of global batch k of an epoch from a
    generator seeded by (seed, epoch, k), of which each DDP process takes its own share, so a
    resumed or distributed run matches a single uninterrupted one."""

    def __init__(self, split: Split, cfg: DataConfig, batch_size: int, device: torch.device, *,
                 sampler: EpochSampler | None = None, seed: int = 0, norm: Normalization | None = None,
                 channels_last: bool = False):
        self.images = split.images.to(device)
        # One memory format for the whole run, training and evaluation alike: torch.compile and
        # cudnn.benchmark then see one layout.
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.labels = split.labels.to(device)
        self.batch_size, self.sampler, self.seed = batch_size, sampler, seed
        self.augment = sampler is not None and cfg.augment == "cifar"
        self.pad, self.pad_mode = cfg.pad, cfg.pad_mode
        norm = norm or Normalization.for_data(cfg, None)
        self.mean, self.std = norm.mean.to(device) * 255, norm.std.to(device) * 255

    def __len__(self) -> int:
        n = len(self.sampler) if self.sampler is not None else len(self.labels)
        return -(-n // self.batch_size)

    def _epoch(self) -> tuple[list[torch.Tensor], torch.Tensor | None, torch.Tensor | None]:
        """This process's batches of indices and, when augmenting, their crop and flip draws."""
        if self.sampler is None:
            return list(torch.arange(len(self.labels)).split(self.batch_size)), None, None
        s = self.sampler
        first = s.start // s.global_batch
        global_batches = s.global_order().split(s.global_batch)
        batches = [s.share(b) for b in global_batches]
        if not self.augment:
            return batches, None, None
        offsets, flips = [], []
        for k, b in enumerate(global_batches, start=first):
            o, f = draw_crop_flip(len(b), self.pad, torch.Generator().manual_seed(_mix(self.seed, s.epoch, k)))
            mine = s.share(torch.arange(len(b)))
            offsets.append(o[:, mine])
            flips.append(f[mine])
        return batches, torch.cat(offsets, 1), torch.cat(flips)

    def __iter__(self):
        device = self.images.device
        batches, offsets, flips = self._epoch()
        if offsets is not None:
            offsets, flips = offsets.to(device), flips.to(device)
        # The epoch's order and draws go to the device in one copy each: a copy from pageable host
        # memory per batch would wait for the GPU every step.
        batches = torch.cat(batches).to(device).split([len(b) for b in batches]) if batches else []
        start = 0
        for idx in batches:
            end = start + len(idx)
            x = self.images[idx].float()
            pad_raw = offsets is not None and self.pad_mode == "black"  # the order of train_transform
            if pad_raw:
                x = random_crop_flip(x, self.pad, self.pad_mode, offsets[:, start:end], flips[start:end])
            x = (x - self.mean) / self.std
            if offsets is not None and not pad_raw:
                x = random_crop_flip(x, self.pad, self.pad_mode, offsets[:, start:end], flips[start:end])
            start = end
            yield x.contiguous(memory_format=self.memory_format), self.labels[idx]


# ---------------------------------------------------------------- assembly

@dataclass
class Datasets:
    train: Dataset
    evals: dict[str, Dataset]  # "test", and "val" when data.val_size > 0
    num_classes: int
    norm: Normalization  # from the training images; the evaluation sets use it too

    def splits(self) -> dict[str, Split] | None:
        """The raw in-memory splits (train first), or None for datasets read from disk."""
        bases = {"train": self.train.base, **{k: v.base for k, v in self.evals.items()}}
        if not all(isinstance(b, TensorImages) for b in bases.values()):
            return None
        return {k: b.split for k, b in bases.items()}


def _image_folder(path: Path):
    from torchvision.datasets import ImageFolder

    if not path.is_dir():
        raise _missing("image folder", path, can_download=False)
    try:
        return ImageFolder(str(path))
    except (FileNotFoundError, RuntimeError) as exc:
        raise DataError(f"cannot read the image folder {path}: {exc}") from exc


def build_datasets(cfg: DataConfig, seed: int) -> Datasets:
    root = Path(cfg.root).expanduser()
    if cfg.name == "imagefolder":
        train = _image_folder(root / "train")
        test = _image_folder(root / "val")
        if len(train.classes) != cfg.num_classes or test.classes != train.classes:
            raise DataError(f"{root} has {len(train.classes)} class folders in train/ and {len(test.classes)} in val/, "
                            f"but data.num_classes={cfg.num_classes}; make them agree (e.g. data.num_classes="
                            f"{len(train.classes)})")
        if cfg.val_size:
            raise DataError("data.val_size works for in-memory datasets; an image folder has its own val/")
        norm = Normalization.for_data(cfg, None)
        test = Transformed(test, eval_transform(cfg, norm))
        return Datasets(Transformed(train, train_transform(cfg, norm), seed), {"test": test}, cfg.num_classes, norm)

    if cfg.name in _CIFAR:
        train, test = read_cifar(cfg.name, root, cfg.download)
    elif cfg.name == "svhn":
        train, test = read_svhn(root, cfg.download, cfg.extra)
    elif cfg.name == "cifar10_sample":
        train, test = read_sample()
    elif cfg.name == "synthetic":
        train, test = make_synthetic(cfg, seed)
    else:
        raise DataError(f"unknown dataset {cfg.name!r}")
    train, test = subset(train, cfg.train_size), subset(test, cfg.test_size)
    classes = int(train.labels.max()) + 1
    if classes > cfg.num_classes or train.images.shape[-1] != cfg.image_size and cfg.augment != "imagenet":
        raise DataError(f"{cfg.name} has labels up to {classes - 1} and {train.images.shape[-1]}-pixel images, "
                        f"but the config says num_classes={cfg.num_classes}, image_size={cfg.image_size}")
    evals = {"test": test}
    if cfg.val_size:
        train, evals["val"] = hold_out(train, cfg.val_size)
    norm = Normalization.for_data(cfg, train)
    return Datasets(Transformed(TensorImages(train), train_transform(cfg, norm), seed),
                    {k: Transformed(TensorImages(v), eval_transform(cfg, norm)) for k, v in evals.items()},
                    cfg.num_classes, norm)


def _init_worker(_worker_id: int) -> None:
    """Each loader worker leaves its parent's process group and ignores the signals a run stops on
    (GracefulStop.SIGNALS), SIGTERM aside: a signal meant for the run (Ctrl-C, `timeout`, a
    scheduler's warning) reaches the whole group, and a worker it killed would end the run with a
    traceback at whatever step was running, instead of the main process's graceful stop, which
    then shuts the workers down.
    The parent's own SIGTERM, sent to the worker alone, still ends it (torch's worker handler)."""
    import random

    os.setsid()
    for signum in GracefulStop.SIGNALS:
        if signum != signal.SIGTERM:
            signal.signal(signum, signal.SIG_IGN)
    # torch seeds each worker; numpy and random follow it, for any code that draws from them.
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


def _worker_context():
    """The platform's own start method for loader workers. A job of a packed sweep
    (hydra/launcher=joblib) runs in a loky worker whose default start method is loky's, which
    DataLoader's worker processes cannot use ('Process' object has no attribute 'env')."""
    if multiprocessing.get_start_method(allow_none=True) in (None, "fork", "spawn", "forkserver"):
        return None
    return multiprocessing.get_context(multiprocessing.get_all_start_methods()[0])


def make_loader(dataset: Dataset, batch_size: int, *, num_workers: int, pin_memory: bool,
                sampler: EpochSampler | None = None) -> DataLoader:
    """A training loader takes an EpochSampler; an evaluation loader keeps the stored order.
    Each loader has its own generator: otherwise every new epoch's iterator draws its workers'
    base seed from the global RNG, and a run resumed mid-epoch would see other dropout masks."""
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=num_workers,
                      pin_memory=pin_memory, worker_init_fn=_init_worker, persistent_workers=num_workers > 0,
                      generator=torch.Generator().manual_seed(0),
                      multiprocessing_context=_worker_context() if num_workers else None)


def build_loaders(cfg: DataConfig, data: Datasets, *, seed: int, sampler: EpochSampler, batch_size: int,
                  eval_batch_size: int, device: torch.device, channels_last: bool):
    """(train loader, {split: eval loader}): the plain path (per-image torchvision transforms in a
    DataLoader, the reference) or the fast path (device-resident batches, augmented per batch on
    the device), as data.on_gpu says."""
    splits = data.splits()
    on_gpu = cfg.on_gpu if cfg.on_gpu is not None else device.type == "cuda"
    if on_gpu and (splits is None or cfg.augment == "imagenet"):
        if cfg.on_gpu:
            raise ValueError("data.on_gpu=true needs an in-memory dataset with cifar or no augmentation")
        on_gpu = False
    if on_gpu:
        train = DeviceBatches(splits.pop("train"), cfg, batch_size, device, sampler=sampler, seed=seed,
                              norm=data.norm, channels_last=channels_last)
        return train, {k: DeviceBatches(v, cfg, eval_batch_size, device, norm=data.norm, channels_last=channels_last)
                       for k, v in splits.items()}
    pin = device.type == "cuda"
    train = make_loader(data.train, batch_size, num_workers=cfg.num_workers, pin_memory=pin, sampler=sampler)
    return train, {name: make_loader(ds, eval_batch_size, num_workers=cfg.num_workers, pin_memory=pin)
                   for name, ds in data.evals.items()}


def wants_top5(cfg: DataConfig) -> bool:
    """Top-5 error beside top-1 for 100 classes or more, and for ImageNet-style folders."""
    return cfg.num_classes >= 100 or (cfg.name == "imagefolder" and cfg.num_classes > 5)
