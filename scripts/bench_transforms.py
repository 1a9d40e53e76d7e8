"""Milliseconds per image of the ImageNet transforms on one CPU core: fb.resnet.torch's as
resnet_train computes them (data=imagefolder) beside torchvision's look-alikes, and JPEG decoding.
Divide a loader worker's 1000 ms by the sum to get its images per second. Each case first runs
--warmup times untimed: a worker's steady state, in which the resampler's taps for every crop
length it meets are cached.

    python scripts/bench_transforms.py [--size 500x375] [--repeats 5] [--warmup 500]
"""

from __future__ import annotations

import argparse
import io
import time

import numpy as np
import torch
from PIL import Image
from torchvision.transforms import v2

from resnet_train.config import DataConfig
from resnet_train.data import eval_transform, train_transform


def smooth_jpeg(width: int, height: int) -> bytes:
    """A JPEG of a smooth random image (a photo's spectrum more than white noise's), quality 90."""
    walk = np.cumsum(np.cumsum(np.random.default_rng(0).normal(size=(height, width, 3)), 0), 1)
    pixels = ((walk - walk.min()) / (walk.max() - walk.min()) * 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="500x375", help="WIDTHxHEIGHT (500x375 is a common ImageNet size)")
    parser.add_argument("--repeats", type=int, default=5, help="rounds of 40 calls; the median round is printed")
    parser.add_argument("--warmup", type=int, default=500, help="untimed calls of each case first")
    args = parser.parse_args()
    torch.set_num_threads(1)
    data = smooth_jpeg(*map(int, args.size.split("x")))
    image = Image.open(io.BytesIO(data)).convert("RGB")
    cfg = DataConfig(name="imagefolder", image_size=224, augment="imagenet", color_jitter=0.4, lighting=0.1,
                     mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225])
    torchvision_train = v2.Compose([v2.ToImage(), v2.RandomResizedCrop(224, antialias=True), v2.RandomHorizontalFlip(),
                                    v2.ColorJitter(0.4, 0.4, 0.4), v2.ToDtype(torch.float32, scale=True),
                                    v2.Normalize(cfg.mean, cfg.std)])
    torchvision_eval = v2.Compose([v2.ToImage(), v2.Resize(256, antialias=True), v2.CenterCrop(224),
                                   v2.ToDtype(torch.float32, scale=True), v2.Normalize(cfg.mean, cfg.std)])
    ours_train, ours_eval = train_transform(cfg), eval_transform(cfg)
    cases = {"decode JPEG": lambda: Image.open(io.BytesIO(data)).convert("RGB"),
             "train, fb.resnet.torch (ours)": lambda: ours_train(image),
             "train, torchvision look-alike": lambda: torchvision_train(image),
             "eval, fb.resnet.torch (ours)": lambda: ours_eval(image),
             "eval, torchvision look-alike": lambda: torchvision_eval(image)}
    for fn in cases.values():
        for _ in range(args.warmup):
            fn()
    rounds: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(args.repeats):  # interleaved, so a noisy machine slows every case alike
        for name, fn in cases.items():
            start = time.perf_counter()
            for _ in range(40):
                fn()
            rounds[name].append((time.perf_counter() - start) / 40 * 1e3)
    print(f"{args.size} image, 1 thread, torch {torch.__version__}")
    for name, ms in rounds.items():
        print(f"{name:32s} {np.median(ms):6.2f} ms/image")


if __name__ == "__main__":
    main()
