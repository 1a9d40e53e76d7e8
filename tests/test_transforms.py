"""fb.resnet.torch's ImageNet transforms against the Lua and C they follow (resnet_train/transforms.py)."""

import math

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms import v2

from resnet_train import transforms as fb
from resnet_train.config import DataConfig
from resnet_train.data import eval_transform, train_transform


def torch7_scale_line(src: np.ndarray, dst_len: int) -> np.ndarray:
    """torch/image@5aa1881 generic/image.c:154-211 (Main_scaleCubic_rowcol) for a float tensor,
    transcribed loop for loop."""
    src = src.astype(np.float32)
    src_len = len(src)
    dst = np.zeros(dst_len, np.float32)
    if dst_len == src_len:
        return src.copy()
    scale = np.float32(src_len - 1) if dst_len == 1 else np.float32(src_len - 1) / np.float32(dst_len - 1)
    for di in range(dst_len - 1):
        si_f = np.float32(di) * scale
        si_i = int(si_f)
        x = np.float32(si_f - si_i)
        p1, p2 = src[si_i], src[si_i + 1]
        p0 = src[si_i - 1] if si_i > 0 else 2 * p1 - p2
        p3 = src[si_i + 2] if si_i + 2 < src_len else 2 * p2 - p1
        a1, a2, a3 = p2 - p0, 2 * p0 - 5 * p1 + 4 * p2 - p3, 3 * (p1 - p2) + p3 - p0
        dst[di] = p1 + 0.5 * x * (a1 + x * (a2 + x * a3))
    dst[dst_len - 1] = src[src_len - 1]
    return dst


def torch7_scale(image: np.ndarray, width: int, height: int) -> np.ndarray:
    """image.c:277-338: every row to `width`, then every column to `height`."""
    rows = np.stack([[torch7_scale_line(r, width) for r in channel] for channel in image])
    return np.stack([np.stack([torch7_scale_line(c, height) for c in channel.T], 1) for channel in rows])


@pytest.mark.parametrize("size, out", [((7, 5), (9, 13)), ((13, 17), (4, 6)), ((6, 6), (6, 11)), ((9, 4), (1, 1)),
                                        ((2, 3), (5, 2))])
def test_scale_is_torch7s_bicubic(size, out):
    image = torch.rand(3, *size, generator=torch.Generator().manual_seed(0))
    ours = fb.scale(image, width=out[1], height=out[0])
    assert ours.shape == (3, *out)
    np.testing.assert_allclose(ours.numpy(), torch7_scale(image.numpy(), out[1], out[0]), rtol=0, atol=2e-6)
    assert torch.equal(fb.scale(image, width=out[1], height=out[0]), ours)  # the cached taps stay as computed


def test_scale_aligns_corners_and_does_not_antialias():
    """Unlike torchvision's Resize (a = -0.75, half-pixel centres, antialiasing when shrinking):
    the corners map to the corners, and shrinking a one-pixel checkerboard by 2 samples it."""
    ramp = torch.arange(10.0).expand(3, 4, 10)
    assert torch.allclose(fb.scale(ramp, 19, 4)[0, 0], torch.arange(0, 9.5, 0.5))  # linear stays linear
    checker = (torch.arange(9)[:, None] + torch.arange(9)) % 2
    small = fb.scale(checker.float().expand(3, 9, 9), 5, 5)
    assert torch.equal(small, torch.zeros(3, 5, 5))  # every sample lands on an even pixel


def test_scale_sets_the_shorter_side():
    image = torch.rand(3, 200, 333)
    assert fb.Scale(256)(image).shape == (3, 256, 426)  # 333 / 200 * 256 = 426.2, truncated
    assert fb.Scale(256)(image.transpose(1, 2)).shape == (3, 426, 256)
    already = torch.rand(3, 256, 300)
    assert fb.Scale(256)(already) is already


def test_center_crop_rounds_its_offset_up():
    image = torch.arange(7 * 8.0).view(1, 7, 8)
    crop = fb.CenterCrop(4)(image)
    assert crop[0, 0, 0] == image[0, 2, 2]  # ceil(3 / 2) = 2 rows, ceil(4 / 2) = 2 columns
    assert fb.CenterCrop(2)(image)[0, 0, 0] == image[0, 3, 3]  # ceil(5 / 2), ceil(6 / 2)


@pytest.mark.parametrize("size", [(200, 333), (333, 200), (256, 300), (300, 256), (257, 1000), (1, 3)])
def test_scale_and_centre_crop_in_one_resamples_only_the_window_and_computes_the_same(size):
    image = torch.rand(3, *size, generator=torch.Generator().manual_seed(1))
    assert torch.equal(fb.ScaleCenterCrop(256, 224)(image), fb.CenterCrop(224)(fb.Scale(256)(image)))


def crop_box(out: torch.Tensor) -> tuple[float, float, float, float]:
    """The (x, y, w, h) a crop of a coordinate image came from: scaling keeps a linear ramp linear
    and maps corner to corner."""
    x0, x1 = out[0, 0, 0].item(), out[0, 0, -1].item()
    y0, y1 = out[1, 0, 0].item(), out[1, -1, 0].item()
    return x0, y0, x1 - x0 + 1, y1 - y0 + 1


@pytest.mark.parametrize("squared", [False, True], ids=["uniform", "squared"])
def test_random_sized_crop_draws_fb_resnet_torchs_boxes(squared):
    height, width = 150, 150  # square, so upright and sideways crops fit alike
    coords = torch.stack([torch.arange(width).float().expand(height, width),
                          torch.arange(height).float()[:, None].expand(height, width), torch.zeros(height, width)])
    crop = fb.RandomSizedCrop(24, squared=squared)
    torch.manual_seed(0)
    boxes = np.array([crop_box(crop(coords)) for _ in range(600)])
    x, y, w, h = boxes.T.round(3)
    assert np.all(w == np.round(w)) and np.all(x >= 0) and np.all(y >= 0)
    assert np.all(x + w <= width) and np.all(y + h <= height)
    area = w * h / (height * width)
    assert area.min() > 0.07 and area.max() <= 1
    aspect = w / h
    # The ratio is a, uniform in [3/4, 4/3], or a^2 (the code before d4b9406), before the coin flip,
    # so upright and sideways are alike and never beyond 4/3 or 16/9 either way (up to rounding).
    low, high = (9 / 16, 16 / 9) if squared else (3 / 4, 4 / 3)
    assert aspect.min() > low * 0.9 and aspect.max() < high / 0.9
    assert (aspect.max() > 1.5) == squared
    assert 0.4 < np.mean(aspect < 1) < 0.6


def test_random_sized_crop_falls_back_to_scale_and_centre_crop():
    image = torch.rand(3, 4, 400)  # no crop of 8% of the area fits 4 rows
    torch.manual_seed(0)
    out = fb.RandomSizedCrop(8)(image)
    assert torch.equal(out, fb.CenterCrop(8)(fb.Scale(8)(image)))
    assert out.shape == (3, 8, 8)


def grey(image: np.ndarray) -> np.ndarray:
    return 0.299 * image[0] + 0.587 * image[1] + 0.114 * image[2]


def test_color_jitter_blends_as_the_lua_without_clamping():
    """transforms.lua:205-290: blend(img, other, a) = a img + (1 - a) other, with other = black
    (brightness), the image's mean grey (contrast) or its grey image (saturation), in a random
    order, a uniform in [1 - 0.4, 1 + 0.4]."""
    image = torch.rand(3, 6, 5, generator=torch.Generator().manual_seed(1)) * 0.2 + 0.8
    for seed in range(6):
        torch.manual_seed(seed)
        order = torch.randperm(3).tolist()
        alphas = [0.6 + 0.8 * torch.rand(()).item() for _ in order]
        expected = image.numpy().astype(np.float64)
        for step, a in zip(order, alphas, strict=True):
            other = [0.0, grey(expected).mean(), grey(expected)][step]
            expected = a * expected + (1 - a) * other
        torch.manual_seed(seed)
        out = fb.ColorJitter(0.4)(image)
        np.testing.assert_allclose(out.numpy(), expected, atol=1e-5)
    assert out.max() > 1  # not clamped


def test_lighting_adds_one_colour_shift_along_the_pca_axes():
    torch.manual_seed(0)
    image = torch.rand(3, 8, 8)
    out = fb.Lighting(0.1)(image)
    shift = out - image
    assert torch.allclose(shift, shift[:, :1, :1].expand_as(shift))  # the same for every pixel
    coeffs = torch.linalg.solve(fb.Lighting.EIGVEC, shift[:, 0, 0]) / fb.Lighting.EIGVAL  # alpha ~ N(0, 0.1)
    assert coeffs.abs().max() < 0.5
    assert torch.equal(fb.Lighting(0.0)(image), image)


IMAGENET = DataConfig(name="imagefolder", image_size=224, augment="imagenet", color_jitter=0.4, lighting=0.1,
                      mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225])


def test_imagenet_transforms_run_in_fb_resnet_torchs_order():
    names = [type(t).__name__ for t in train_transform(IMAGENET).transforms]
    assert names == ["ToImage", "RandomSizedCrop", "ColorJitter", "Lighting", "Normalize", "RandomHorizontalFlip"]
    image = Image.new("RGB", (300, 200), (120, 60, 30))
    assert train_transform(IMAGENET)(image).shape == (3, 224, 224)
    out = eval_transform(IMAGENET)(image)
    assert out.shape == (3, 224, 224)
    # A flat image stays flat through Scale(256) + CenterCrop(224); its colour is just normalised.
    expected = (torch.tensor([120, 60, 30]) / 255 - torch.tensor(IMAGENET.mean)) / torch.tensor(IMAGENET.std)
    assert torch.allclose(out, expected.view(3, 1, 1).expand(3, 224, 224), atol=1e-5)


@pytest.mark.parametrize("size", [(300, 200), (4, 400)], ids=["crop", "fallback"])
def test_random_sized_crop_of_a_uint8_image_equals_that_of_the_float_image(size):
    """The training transform crops before converting to float (ToImage, then RandomSizedCrop)."""
    pixels = torch.randint(0, 256, (3, *size), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    outs = []
    for image in (pixels, pixels.float() / 255, v2.ToDtype(torch.float32, scale=True)(pixels)):
        torch.manual_seed(3)
        outs.append(fb.RandomSizedCrop(16)(image))
    assert outs[0].dtype == torch.float32 and torch.equal(outs[0], outs[2])
    torch.testing.assert_close(outs[0], outs[1], atol=1e-6, rtol=0)


def test_imagenet_evaluation_is_scale_then_centre_crop():
    cfg = DataConfig(name="imagefolder", image_size=28, augment="imagenet", mean=IMAGENET.mean, std=IMAGENET.std)
    pixels = np.random.default_rng(0).integers(0, 256, (45, 53, 3), dtype=np.uint8)
    out = eval_transform(cfg)(Image.fromarray(pixels))  # Scale(28 * 256 // 224 = 32), CenterCrop(28)
    image = torch.from_numpy(pixels).permute(2, 0, 1).float() / 255
    scaled = torch.from_numpy(torch7_scale(image.numpy(), math.floor(53 / 45 * 32), 32))  # 37 x 32
    expected = (scaled[:, 2:30, 5:33] - torch.tensor(cfg.mean).view(3, 1, 1)) / torch.tensor(cfg.std).view(3, 1, 1)
    torch.testing.assert_close(out, expected, atol=2e-5, rtol=0)  # offsets ceil(4 / 2), ceil(9 / 2) (round: 4)


@pytest.mark.slow
def test_bench_transforms_script_prints_each_case(tmp_path):
    import subprocess
    import sys

    from .conftest import ROOT

    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "bench_transforms.py"), "--size", "120x90",
                           "--repeats", "1", "--warmup", "2"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("120x90 image, 1 thread") and len(lines) == 6
    assert all(float(line.split()[-2]) > 0 for line in lines[1:])
