import pickle
from urllib.error import URLError

import numpy as np
import pytest
import torch
from PIL import Image

from resnet_train.config import DataConfig
from resnet_train.data import DataError, build_datasets, hold_out, read_sample, subset


def write_cifar(root, name="cifar10", per_file=8):
    rng = np.random.default_rng(0)
    if name == "cifar10":
        files = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
        folder, key = root / "cifar-10-batches-py", "labels"
    else:
        folder, files, key = root / "cifar-100-python", ["train", "test"], "fine_labels"
    folder.mkdir(parents=True)
    classes = 10 if name == "cifar10" else 100
    for f in files:
        batch = {"data": rng.integers(0, 256, (per_file, 3072), dtype=np.uint8),
                 key: list(rng.integers(0, classes, per_file))}
        with open(folder / f, "wb") as fh:
            pickle.dump(batch, fh)
    return folder


def test_reads_cifar10_in_torchvision_layout(tmp_path):
    folder = write_cifar(tmp_path)
    ds = build_datasets(DataConfig(name="cifar10", root=str(tmp_path), augment="none"), seed=0)
    assert len(ds.train) == 40 and len(ds.evals["test"]) == 8
    x, y = ds.train[0]
    assert x.shape == (3, 32, 32) and x.dtype == torch.float32 and 0 <= y < 10
    # The first image's first row of red values round-trips from the official R,G,B plane layout.
    raw = pickle.load(open(folder / "data_batch_1", "rb"))["data"][0]
    plain = build_datasets(DataConfig(name="cifar10", root=str(tmp_path), augment="none", mean=[0] * 3,
                                      std=[1 / 255] * 3), seed=0)
    assert torch.allclose(plain.train[0][0][0, 0], torch.tensor(raw[:32], dtype=torch.float32), atol=1e-3)


def test_reads_cifar100_fine_labels(tmp_path):
    write_cifar(tmp_path, "cifar100")
    ds = build_datasets(DataConfig(name="cifar100", root=str(tmp_path), num_classes=100), seed=0)
    assert len(ds.train) == 8 and ds.num_classes == 100


def write_svhn(root, sizes=(("train", 12), ("test", 5))):
    """SVHN's .mat files (32x32x3xN images, labels 1..10 with 10 for the digit 0); returns the images."""
    from scipy.io import savemat

    rng = np.random.default_rng(0)
    images = {}
    for split, n in sizes:
        y = np.array([[10]] + [[int(v)] for v in rng.integers(1, 11, n - 1)], dtype=np.uint8)
        images[split] = rng.integers(0, 256, (32, 32, 3, n), dtype=np.uint8)
        savemat(root / f"{split}_32x32.mat", {"X": images[split], "y": y})
    return images


def test_reads_svhn_mat_files_and_maps_label_10_to_0(tmp_path):
    write_svhn(tmp_path)
    ds = build_datasets(DataConfig(name="svhn", root=str(tmp_path), augment="none"), seed=0)
    assert len(ds.train) == 12 and len(ds.evals["test"]) == 5
    labels = ds.train.base.split.labels
    assert labels[0] == 0 and labels.max() <= 9


def test_svhn_extra_joins_the_training_set(tmp_path):
    images = write_svhn(tmp_path, (("train", 12), ("test", 5), ("extra", 7)))
    ds = build_datasets(DataConfig(name="svhn", root=str(tmp_path), augment="none", extra=True), seed=0)
    split = ds.train.base.split
    assert len(ds.train) == 19 and len(ds.evals["test"]) == 5 and split.labels[12] == 0  # extra's first: digit 0
    assert torch.equal(split.images[12], torch.from_numpy(images["extra"][..., 0].transpose(2, 0, 1)))
    (tmp_path / "extra_32x32.mat").unlink()
    with pytest.raises(DataError, match="SVHN file extra_32x32.mat not found .* data.download=true"):
        build_datasets(DataConfig(name="svhn", root=str(tmp_path), augment="none", extra=True), seed=0)


def test_reads_image_folder_with_imagenet_transforms(tmp_path):
    for split in ("train", "val"):
        for cls in ("cat", "dog"):
            (tmp_path / split / cls).mkdir(parents=True)
            for i in range(3):
                Image.new("RGB", (40 + i, 36), (i * 40, 80, 120)).save(tmp_path / split / cls / f"{i}.png")
    cfg = DataConfig(name="imagefolder", root=str(tmp_path), num_classes=2, image_size=24, augment="imagenet")
    ds = build_datasets(cfg, seed=0)
    assert ds.train[0][0].shape == (3, 24, 24) and ds.evals["test"][5][0].shape == (3, 24, 24)
    with pytest.raises(DataError, match="2 class folders.*data.num_classes=1000"):
        build_datasets(DataConfig(name="imagefolder", root=str(tmp_path), num_classes=1000, image_size=24,
                                  augment="imagenet"), seed=0)


@pytest.mark.parametrize("name", ["cifar10", "cifar100", "svhn", "imagefolder"])
def test_missing_files_name_the_path_and_the_fixes(tmp_path, name):
    missing = tmp_path / "nowhere"
    with pytest.raises(DataError) as err:
        build_datasets(DataConfig(name=name, root=str(missing), augment="none"), seed=0)
    assert str(missing) in str(err.value) and "data.root=" in str(err.value)
    if name != "imagefolder":
        assert "data.download=true" in str(err.value)


def test_download_failure_is_one_clear_error(tmp_path, monkeypatch):
    import torchvision.datasets as tvd

    def offline(*args, **kwargs):
        raise URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(tvd, "CIFAR10", offline)
    with pytest.raises(DataError, match="could not download cifar10 .*URLError.*without a network"):
        build_datasets(DataConfig(name="cifar10", root=str(tmp_path), download=True), seed=0)


def test_corrupt_and_truncated_files_are_named(tmp_path):
    folder = write_cifar(tmp_path)
    data = (folder / "data_batch_2").read_bytes()
    (folder / "data_batch_2").write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match="data_batch_2 is truncated or corrupt"):
        build_datasets(DataConfig(name="cifar10", root=str(tmp_path)), seed=0)
    (folder / "data_batch_2").write_bytes(b"not a pickle at all")
    with pytest.raises(DataError, match="data_batch_2 is truncated or corrupt"):
        build_datasets(DataConfig(name="cifar10", root=str(tmp_path)), seed=0)


def test_shipped_sample_is_real_balanced_cifar10():
    train, test = read_sample()
    assert train.images.shape == (5000, 3, 32, 32) and test.images.shape == (1000, 3, 32, 32)
    assert torch.bincount(train.labels).tolist() == [500] * 10
    assert torch.bincount(test.labels).tolist() == [100] * 10
    mean = train.images.float().mean((0, 2, 3)) / 255
    assert torch.allclose(mean, torch.tensor([0.4913, 0.4821, 0.4465]), atol=0.01)  # shared/data README


def test_hold_out_and_subset_are_fixed_and_disjoint():
    train, _ = read_sample()
    kept, val = hold_out(train, 500)
    assert len(kept.labels) == 4500 and len(val.labels) == 500
    kept2, val2 = hold_out(train, 500)
    assert torch.equal(val.images, val2.images)
    as_rows = {bytes(img.numpy()) for img in val.images}
    assert not any(bytes(img.numpy()) in as_rows for img in kept.images[:500])
    small = subset(train, 1000)
    assert len(small.labels) == 1000 and torch.bincount(small.labels).min() > 60
    with pytest.raises(DataError, match="leaves no training images"):
        hold_out(train, 5000)


def test_synthetic_is_seeded():
    cfg = DataConfig(name="synthetic", train_size=16, test_size=4, augment="none")
    a, b = build_datasets(cfg, seed=1), build_datasets(cfg, seed=1)
    assert torch.equal(a.train.base.split.images, b.train.base.split.images)
    assert len(a.train) == 16 and len(a.evals["test"]) == 4


