#!/usr/bin/env python3
"""Build resnet_train/assets/cifar10_sample.npz from the CIFAR-10 JPEG archive.

    python scripts/make_cifar10_sample.py ../shared/data/cifar10-jpeg.tar.xz

Takes the first 500 training and 100 test images of each class in file-name order (the same
choice every time) and stores their JPEG bytes unchanged, so the sample holds the real pixels
of the archive at a tenth of its size. Arrays: {split}_jpeg (all JPEG files concatenated),
{split}_offsets (N+1 byte offsets), {split}_labels; plus classes. Compressed: the JPEG headers repeat.
"""

import argparse
import tarfile
from collections import defaultdict
from pathlib import Path

import numpy as np

CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
PER_CLASS = {"train": 500, "test": 100}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("archive", type=Path)
    default_out = Path(__file__).resolve().parents[1] / "resnet_train/assets/cifar10_sample.npz"
    parser.add_argument("--out", type=Path, default=default_out)
    args = parser.parse_args()
    files: dict[tuple[str, int], list[tuple[str, bytes]]] = defaultdict(list)
    with tarfile.open(args.archive) as tar:
        for member in tar:
            if member.isfile() and member.name.endswith(".jpg"):
                split, cls, name = Path(member.name).parts[-3:]
                files[split, CLASSES.index(cls)].append((name, tar.extractfile(member).read()))
    arrays = {"classes": np.array(CLASSES)}
    for split, count in PER_CLASS.items():
        blobs, labels = [], []
        for label in range(len(CLASSES)):
            chosen = sorted(files[split, label])[:count]
            if len(chosen) < count:
                raise SystemExit(f"{split}/{CLASSES[label]} has only {len(chosen)} images")
            blobs += [data for _, data in chosen]
            labels += [label] * count
        arrays[f"{split}_jpeg"] = np.frombuffer(b"".join(blobs), dtype=np.uint8)
        arrays[f"{split}_offsets"] = np.cumsum([0] + [len(b) for b in blobs]).astype(np.int64)
        arrays[f"{split}_labels"] = np.array(labels, dtype=np.int64)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(args.out, **arrays)
    print(f"wrote {args.out} ({args.out.stat().st_size / 1e6:.1f} MB)")


if __name__ == "__main__":
    main()
