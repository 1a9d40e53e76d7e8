"""Normalisation, padding and sampling as the reference code does them (docs/fidelity.md), the same
on the loader path and the device-batch path."""

import itertools

import pytest
import torch

from resnet_train.config import DataConfig
from resnet_train.data import (
    DeviceBatches,
    EpochSampler,
    Normalization,
    Split,
    TensorImages,
    Transformed,
    make_loader,
    random_crop_flip,
    train_transform,
)


def images(n: int = 64, seed: int = 0) -> Split:
    g = torch.Generator().manual_seed(seed)
    return Split(torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=g), torch.arange(n) % 10)


def test_pixel_normalisations_follow_he2015_and_gcr():
    split = images()
    x = split.images.double()
    pixel = Normalization.for_data(DataConfig(normalize="pixel"), split)
    torch.testing.assert_close(pixel.mean.double(), x.mean(0) / 255, rtol=0, atol=1e-6)
    assert pixel.std.flatten().tolist() == [1.0]
    gcr = Normalization.for_data(DataConfig(normalize="pixel_global_std"), split)
    torch.testing.assert_close(gcr.mean, pixel.mean)
    # data/cifar-dataset.lua:37-39: mean = data:mean(1), std = data:std() over every raw value (N - 1).
    assert gcr.std.shape == (1, 1, 1)
    assert abs(gcr.std.item() - x.std().item() / 255) < 1e-6
    channel = Normalization.for_data(DataConfig(mean=[0.5, 0.4, 0.3], std=[0.2, 0.2, 0.1]), split)
    assert channel.mean.flatten().tolist() == pytest.approx([0.5, 0.4, 0.3])


def test_pixel_normalisation_refuses_image_folders():
    with pytest.raises(Exception, match="data.normalize=pixel needs an in-memory dataset"):
        Normalization.for_data(DataConfig(normalize="pixel"), None)


def candidates(normed: torch.Tensor, raw: torch.Tensor, norm, pad_mode: str) -> torch.Tensor:
    """Every crop and flip a transform may produce (162, C, H, W), computed the reference way:
    normalise, then pad with 0 (fb.resnet.torch, gcr) or reflect; black pads the raw image, then
    normalises."""
    draws = list(itertools.product(range(9), range(9), (False, True)))
    offsets = torch.tensor([[dy for dy, _, _ in draws], [dx for _, dx, _ in draws]])
    flips = torch.tensor([flip for _, _, flip in draws])
    if pad_mode == "black":
        return norm(random_crop_flip((raw[None] / 255).expand(len(draws), -1, -1, -1), 4, pad_mode, offsets, flips))
    return random_crop_flip(normed[None].expand(len(draws), -1, -1, -1), 4, pad_mode, offsets, flips)


def matches_one(out: torch.Tensor, cands: torch.Tensor) -> bool:
    return bool(torch.isclose(out.expand_as(cands), cands, atol=1e-5).flatten(1).all(1).any())


@pytest.mark.parametrize("normalize,pad_mode", [("channel", "zero"), ("channel", "black"), ("channel", "reflect"),
                                                ("pixel", "zero"), ("pixel_global_std", "zero")])
def test_loader_and_device_paths_pad_and_normalise_alike(normalize, pad_mode):
    split = images(16)
    cfg = DataConfig(normalize=normalize, pad_mode=pad_mode)
    norm = Normalization.for_data(cfg, split)
    loader = Transformed(TensorImages(split), train_transform(cfg, norm), seed=0)
    sampler = EpochSampler(16, seed=0, global_batch=8)
    device_x = torch.cat([x for x, _ in DeviceBatches(split, cfg, 8, torch.device("cpu"), sampler=sampler,
                                                       norm=norm)])
    order = sampler.indices().tolist()
    for k, i in enumerate(order[:6]):
        raw = split.images[i].float()
        cands = candidates(norm(raw / 255), raw, norm, pad_mode)
        assert matches_one(loader[(0, i)][0], cands), f"loader, image {i}"
        assert matches_one(device_x[k], cands), f"device batches, image {i}"


def test_zero_padding_gives_the_mean_border_black_the_raw_zero():
    split = Split(torch.full((1, 3, 32, 32), 200, dtype=torch.uint8), torch.zeros(1, dtype=torch.long))
    sampler = EpochSampler(1, seed=0, global_batch=1)
    for pad_mode, border in (("zero", 0.0), ("black", None)):
        cfg = DataConfig(pad_mode=pad_mode, mean=[0.5] * 3, std=[0.25] * 3)
        norm = Normalization.for_data(cfg, split)
        seen = set()
        for epoch in range(12):  # some epoch shifts the image, so a border shows
            sampler.set_epoch(epoch)
            x = next(iter(DeviceBatches(split, cfg, 1, torch.device("cpu"), sampler=sampler, norm=norm)))[0][0]
            seen |= {round(v, 4) for v in torch.unique(x).tolist()}
        inside = (200 / 255 - 0.5) / 0.25
        expected_border = border if border is not None else (0 - 0.5) / 0.25
        assert seen == {round(inside, 4), expected_border}, pad_mode


def test_sampling_with_replacement_as_gcr():
    s = EpochSampler(50, seed=3, global_batch=8, replacement=True)
    s.set_epoch(1)
    order = s.indices()
    assert len(order) == 56  # ceil(50 / 8) full batches
    assert order.min() >= 0 and order.max() < 50 and len(set(order.tolist())) < 50  # repeats occur
    assert torch.equal(order, s.indices())  # fixed by (seed, epoch)
    s.set_epoch(2)
    assert not torch.equal(order, s.indices())
    s.set_epoch(1, start=16)
    assert torch.equal(s.indices(), order[16:])  # a resumed run continues the same draws
    keys = list(s)
    assert keys[0] == (1, int(order[16]), 16)  # each draw carries its position: repeats augment anew
    ranks = [EpochSampler(50, seed=3, global_batch=8, rank=r, world=2, replacement=True) for r in range(2)]
    for r in ranks:
        r.set_epoch(1)
    joined = torch.stack([r.indices().view(-1, 4) for r in ranks], 1).flatten()
    assert torch.equal(joined, order)


def test_drop_last_skips_the_permutations_tail_as_torchnet():
    """WRN's train.lua@ae6d0d0:134-142: shuffle, then batch(128, 'skip-last'): floor(N / batch)
    full batches of the epoch's permutation; what is left over is not seen that epoch."""
    keep, drop = EpochSampler(50, seed=3, global_batch=8), EpochSampler(50, seed=3, global_batch=8, drop_last=True)
    for s in (keep, drop):
        s.set_epoch(1)
    assert len(keep) == 50 and len(drop) == 48
    assert torch.equal(drop.indices(), keep.indices()[:48])  # the same permutation, its tail cut
    drop.set_epoch(2)
    assert set(drop.indices().tolist()) != set(keep.indices().tolist()[:48])  # another tail each epoch
    drop.set_epoch(1, start=16)
    assert torch.equal(drop.indices(), keep.indices()[16:48])  # a resumed run continues it
    split = images(50)
    batches = list(DeviceBatches(split, DataConfig(), 8, torch.device("cpu"), sampler=drop))
    assert [len(y) for _, y in batches] == [8] * 4
    loader = make_loader(Transformed(TensorImages(split), train_transform(DataConfig(), None), seed=0), 8,
                         num_workers=0, pin_memory=False, sampler=drop)
    assert len(loader) == 4 and [len(y) for _, y in loader] == [8] * 4


def test_device_batches_under_ddp_share_the_single_process_draws():
    """Each rank augments its own images: rank r takes its share of global batch k's draws."""
    split = images(32)
    cfg = DataConfig()
    single = EpochSampler(32, seed=5, global_batch=8)
    single.set_epoch(3)
    one = [x for x, _ in DeviceBatches(split, cfg, 8, torch.device("cpu"), sampler=single, seed=5)]
    parts = []
    for r in range(2):
        s = EpochSampler(32, seed=5, global_batch=8, rank=r, world=2)
        s.set_epoch(3)
        parts.append([x for x, _ in DeviceBatches(split, cfg, 4, torch.device("cpu"), sampler=s, seed=5)])
    for k, x in enumerate(one):
        torch.testing.assert_close(torch.cat([parts[0][k], parts[1][k]]), x)
    assert not torch.equal(parts[0][0], parts[1][0])
