"""fb.resnet.torch's ImageNet image transforms, as its code computes them.

fb.resnet.torch (facebookarchive/fb.resnet.torch@985e569) trains on
RandomSizedCrop(224) -> ColorJitter(0.4, 0.4, 0.4) -> Lighting(0.1) -> ColorNormalize -> flip and
evaluates on Scale(256) -> ColorNormalize -> CenterCrop(224) (datasets/imagenet.lua:80-103), with
the transforms of datasets/transforms.lua and Torch7's image.scale (torch/image@5aa1881). Where
torchvision's look-alikes compute something else, this module follows the Lua:
- resampling is Torch7's bicubic: Catmull-Rom, corner-aligned, border continued linearly, no
  antialiasing when shrinking (generic/image.c:140-211); torchvision's uses a = -0.75 and antialias;
- the crop's aspect ratio is uniform in [3/4, 4/3] with a coin flip for orientation, 10 tries,
  then Scale + CenterCrop (transforms.lua:130-163); torchvision's is log-uniform, and falls back to
  the whole image's centre;
- colour jitter works on float images without clamping, with ITU-R 601 grey (0.299, 0.587, 0.114)
  (transforms.lua:205-290); torchvision's clamps to [0, 1] after each step;
- the centre crop's offset is ceil((size_in - size) / 2) (transforms.lua:53-59).
Every transform takes and returns a float (3, H, W) image on 0..1 (before normalisation; the
first, RandomSizedCrop, also takes the uint8 image and converts only its crop) and draws from
torch's default generator, which `data.Transformed` seeds per sample.
"""

from __future__ import annotations

import functools
import math

import torch
from torchvision.transforms.v2.functional import to_dtype


# Computing the taps took most of a resample's time (dozens of small tensor ops); an axis's taps
# depend only on its two lengths, which repeat across crops and images. The cached tensors are shared:
# read them, never write them.
@functools.lru_cache(maxsize=4096)
def _cubic_taps(src_len: int, dst_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The source indices (dst_len, 4) and weights (dst_len, 4) of Torch7's bicubic resampling of
    one axis (image.c:154-211): output di sits at di * (src_len - 1) / (dst_len - 1) (float32), is
    interpolated from its 4 neighbours by Catmull-Rom, with the missing neighbour at either end
    continued linearly (p0 = 2 p1 - p2, p3 = 2 p2 - p1); the last output is the last input."""
    scale = torch.tensor(float(src_len - 1) / (dst_len - 1) if dst_len > 1 else float(src_len - 1),
                         dtype=torch.float32)
    pos = torch.arange(dst_len - 1, dtype=torch.float32) * scale
    i = pos.long()
    x = (pos - i).double()
    w = torch.stack([0.5 * (-x + 2 * x**2 - x**3), 1 + 0.5 * (3 * x**3 - 5 * x**2),
                     0.5 * (x + 4 * x**2 - 3 * x**3), 0.5 * (x**3 - x**2)], 1)
    first, last = i == 0, i + 2 >= src_len
    w[first, 1] += 2 * w[first, 0]
    w[first, 2] -= w[first, 0]
    w[first, 0] = 0
    w[last, 2] += 2 * w[last, 3]
    w[last, 1] -= w[last, 3]
    w[last, 3] = 0
    idx = (i[:, None] + torch.arange(-1, 3)).clamp(0, src_len - 1)
    idx = torch.cat([idx, torch.full((1, 4), src_len - 1)])
    w = torch.cat([w, torch.tensor([[0.0, 1.0, 0.0, 0.0]], dtype=torch.float64)])
    return idx, w.float()


def _scale_rows(image: torch.Tensor, dst_len: int, keep: slice) -> torch.Tensor:
    """Resamples dim -2 to dst_len and returns the output rows `keep`; gathering whole rows is 10x
    faster than gathering along the last dim."""
    src_len = image.shape[-2]
    if dst_len == src_len:
        return image[..., keep, :]
    if src_len == 1:
        return image.expand(*image.shape[:-2], dst_len, image.shape[-1])[..., keep, :]
    idx, w = _cubic_taps(src_len, dst_len)
    idx, w = idx[keep], w[keep]
    image = image.contiguous()
    out = image.index_select(-2, idx[:, 0]).mul_(w[:, 0, None])
    for k in range(1, 4):
        out.addcmul_(image.index_select(-2, idx[:, k]), w[:, k, None])
    return out


def scale(image: torch.Tensor, width: int, height: int, rows: slice = slice(None),
          cols: slice = slice(None)) -> torch.Tensor:
    """Torch7's image.scale(image, width, height, 'bicubic'), or of its result only the window
    [rows, cols]: each output pixel depends on its own taps alone, so a window costs only its own
    pixels. Torch7 resamples rows, then columns; the two passes are linear maps on different axes,
    so the order changes only float rounding, and the columns go first here, where the gather is
    cheap."""
    image = _scale_rows(image, height, rows)
    return _scale_rows(image.transpose(-1, -2), width, cols).transpose(-1, -2).contiguous()


def _shorter_side_to(height: int, width: int, size: int) -> tuple[int, int]:
    """(width, height) with the shorter side `size`, the other in proportion, rounded down
    (transforms.lua:36-50; a Lua number taken as a tensor size is truncated); an image whose
    shorter side is already `size` keeps its size."""
    if (width <= height and width == size) or (height <= width and height == size):
        return width, height
    if width < height:
        return size, int(height / width * size)
    return int(width / height * size), size


def _centre(length: int, size: int) -> slice:
    """The middle `size` of `length`, starting at ceil((length - size) / 2) (transforms.lua:53-59)."""
    start = math.ceil((length - size) / 2)
    return slice(start, start + size)


class Scale(torch.nn.Module):
    """The shorter side to `size`, the other in proportion (`_shorter_side_to`)."""

    def __init__(self, size: int):
        super().__init__()
        self.size = size

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        width, height = _shorter_side_to(*image.shape[-2:], self.size)
        return image if (height, width) == image.shape[-2:] else scale(image, width, height)


class CenterCrop(torch.nn.Module):
    def __init__(self, size: int):
        super().__init__()
        self.size = size

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        h, w = image.shape[-2:]
        return image[..., _centre(h, self.size), _centre(w, self.size)]


class ScaleCenterCrop(torch.nn.Module):
    """CenterCrop(crop)(Scale(size)(image)), resampling only the pixels the crop keeps."""

    def __init__(self, size: int, crop: int):
        super().__init__()
        self.size, self.crop = size, crop

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        width, height = _shorter_side_to(*image.shape[-2:], self.size)
        return scale(image, width, height, rows=_centre(height, self.crop), cols=_centre(width, self.crop))


def _as_float(image: torch.Tensor) -> torch.Tensor:
    return to_dtype(image, torch.float32, scale=True)


def _uniform(a: float, b: float) -> float:
    return a + (b - a) * torch.rand(()).item()


class RandomSizedCrop(torch.nn.Module):
    """A crop of 8-100% of the area with aspect ratio w/h uniform in [3/4, 4/3], turned upright or
    sideways with a coin flip, rescaled to size x size; after 10 crops that do not fit,
    Scale(size) + CenterCrop(size) (transforms.lua:130-163).

    squared=True draws as the code before d4b9406 ("Fix aspect ratio jitter", 2016-02-19), which
    trained the released ResNet-18/34/50/101: sides sqrt(area)·a and sqrt(area)/a, so w/h = a^2 in
    [9/16, 16/9], and offsets floor(U(0, n + 0.99)) (transforms.lua@6f9402d:131-150)."""

    def __init__(self, size: int, squared: bool = False):
        super().__init__()
        self.size, self.squared = size, squared
        self.fallback = ScaleCenterCrop(size, size)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """A float (3, H, W) image on 0..1, or a uint8 one: then only the crop is converted, as
        ToDtype(float32, scale=True) would convert it."""
        height, width = image.shape[-2:]
        for _ in range(10):
            area = _uniform(0.08, 1.0) * height * width
            aspect = _uniform(3 / 4, 4 / 3)
            if self.squared:
                w, h = round(math.sqrt(area) * aspect), round(math.sqrt(area) / aspect)
            else:
                w, h = round(math.sqrt(area * aspect)), round(math.sqrt(area / aspect))
            if torch.rand(()).item() < 0.5:
                w, h = h, w
            if h <= height and w <= width:
                y, x = self._offset(height - h), self._offset(width - w)
                return scale(_as_float(image[..., y:y + h, x:x + w]), self.size, self.size)
        return self.fallback(_as_float(image))

    def _offset(self, room: int) -> int:
        if self.squared:
            return math.floor(_uniform(0, room + 0.99))
        return int(torch.randint(0, room + 1, ()).item())  # Lua's torch.random(0, room)


def _grey(image: torch.Tensor) -> torch.Tensor:
    return 0.299 * image[0] + 0.587 * image[1] + 0.114 * image[2]


class ColorJitter(torch.nn.Module):
    """Brightness, contrast and saturation in a random order, each blending the image with black,
    its mean grey level, or its grey image by a factor uniform in [1 - strength, 1 + strength];
    nothing is clamped (transforms.lua:205-290)."""

    def __init__(self, strength: float):
        super().__init__()
        self.strength = strength

    def blend(self, image: torch.Tensor, other: torch.Tensor | float) -> torch.Tensor:
        alpha = _uniform(1 - self.strength, 1 + self.strength)
        return image.mul(alpha).add_(other * (1 - alpha))

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        steps = (lambda im: self.blend(im, 0.0),  # brightness
                 lambda im: self.blend(im, _grey(im).mean().item()),  # contrast
                 lambda im: self.blend(im, _grey(im)))  # saturation
        for k in torch.randperm(3).tolist():
            image = steps[k](image)
        return image


class Lighting(torch.nn.Module):
    """AlexNet's PCA colour noise (Krizhevsky et al. 2012, Sec. 4.1): add eigvec @ (alpha * eigval)
    to every pixel, alpha ~ N(0, std), with fb.resnet.torch's ImageNet eigen-pairs
    (datasets/imagenet.lua:71-78; transforms.lua:183-203)."""

    EIGVAL = torch.tensor([0.2175, 0.0188, 0.0045])
    EIGVEC = torch.tensor([[-0.5675, 0.7192, 0.4009],
                           [-0.5808, -0.0045, -0.8140],
                           [-0.5836, -0.6948, 0.4203]])

    def __init__(self, std: float):
        super().__init__()
        self.std = std

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        alpha = torch.randn(3) * self.std
        rgb = self.EIGVEC @ (alpha * self.EIGVAL)
        return image + rgb.view(3, 1, 1).to(image.dtype)
