"""OpenCV BGR frames -> the normalized NCHW float batch a ResNet expects.

The recipe is torchvision's IMAGENET1K_V1 one (resize the short side to 256
with antialiasing, centre-crop 224, RGB, ImageNet mean/std), done on the uint8
BGR array without the PIL round trip: torch's antialiased uint8 bilinear
resize matches PIL to within one 0-255 level (mean 0.002 on grocery val,
scripts/preprocess_fidelity.py) and costs ~1 ms on a 720p frame instead of
~8-11 ms. The BGR->RGB swap happens on the 224x224 crop, not the full frame.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import cv2
import numpy as np
import torch
import torch.nn.functional as F


def roi_box(shape: tuple[int, ...], roi: Sequence[float] | None) -> tuple[int, int, int, int]:
    """The scanning area in pixels (x, y, w, h) for a frame shape; the whole frame when roi is None."""
    h, w = shape[:2]
    if roi is None:
        return 0, 0, w, h
    fx, fy, fw, fh = roi
    x0, y0 = int(round(fx * w)), int(round(fy * h))
    x1, y1 = int(round((fx + fw) * w)), int(round((fy + fh) * h))
    x0, y0 = min(max(x0, 0), w - 1), min(max(y0, 0), h - 1)
    x1, y1 = max(min(x1, w), x0 + 1), max(min(y1, h), y0 + 1)
    return x0, y0, x1 - x0, y1 - y0


def crop_roi(image: np.ndarray, roi: Sequence[float] | None) -> np.ndarray:
    """A view (no copy) of the scanning area of an image."""
    x, y, w, h = roi_box(image.shape, roi)
    return image[y:y + h, x:x + w]


def roi_thumbnail(image: np.ndarray, roi: Sequence[float] | None, width: int = 64) -> np.ndarray:
    """A small blurred colour copy of the scanning area, for cheap scene comparisons.

    Downscaling and blurring remove sensor noise and compression artefacts, so
    what differs between two thumbnails is what moved. Colour, not grey: a red
    carton on a grey counter can have the counter's brightness.
    """
    region = crop_roi(image, roi)
    h, w = region.shape[:2]
    tw = min(width, w)
    th = max(1, int(round(h * tw / w)))
    small = cv2.resize(region, (tw, th), interpolation=cv2.INTER_AREA)
    return cv2.GaussianBlur(small, (5, 5), 0)


def _resized_size(h: int, w: int, short: int) -> tuple[int, int]:
    # Same rounding as torchvision's Resize(int): the long side is truncated.
    if h <= w:
        return short, int(short * w / h)
    return int(short * h / w), short


@dataclass(frozen=True)
class Preprocessor:
    """Turns BGR uint8 images into a normalized float batch (N, 3, crop, crop)."""

    resize: int = 256
    crop: int = 224
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    roi: tuple[float, float, float, float] | None = None

    def crop_uint8(self, image: np.ndarray) -> torch.Tensor:
        """Resize + centre-crop one BGR image; returns a (3, crop, crop) uint8 tensor, still BGR."""
        region = crop_roi(image, self.roi)
        h, w = region.shape[:2]
        nh, nw = _resized_size(h, w, self.resize)
        if any(s < 0 for s in region.strides):  # torch cannot view negative strides
            region = np.ascontiguousarray(region)
        # A zero-copy view: HWC permuted to NCHW is channels_last, the resize's fast path.
        x = torch.from_numpy(region).permute(2, 0, 1).unsqueeze(0)
        if (nh, nw) != (h, w):
            x = F.interpolate(x, size=(nh, nw), mode="bilinear", antialias=True, align_corners=False)
        # Centre crop with torchvision's rounding; pad like torchvision if the image is tiny.
        if nh < self.crop or nw < self.crop:
            ph, pw = max(self.crop - nh, 0), max(self.crop - nw, 0)
            x = F.pad(x, (pw // 2, (pw + 1) // 2, ph // 2, (ph + 1) // 2))
            nh, nw = x.shape[-2:]
        top = int(round((nh - self.crop) / 2.0))
        left = int(round((nw - self.crop) / 2.0))
        return x[0, :, top:top + self.crop, left:left + self.crop]

    def __post_init__(self) -> None:
        # Normalization folded into one multiply-subtract, computed once, not per frame.
        object.__setattr__(self, "_scale", torch.tensor([1.0 / (255.0 * s) for s in self.std],
                                                        dtype=torch.float32).view(3, 1, 1))
        object.__setattr__(self, "_shift", torch.tensor([m / s for m, s in zip(self.mean, self.std)],
                                                        dtype=torch.float32).view(3, 1, 1))

    def __call__(self, images: Sequence[np.ndarray]) -> torch.Tensor:
        """Batch of BGR uint8 images -> normalized float32 tensor (N, 3, crop, crop), RGB order."""
        out = torch.empty((len(images), 3, self.crop, self.crop), dtype=torch.float32)
        for i, img in enumerate(images):
            bgr = self.crop_uint8(img)
            torch.mul(bgr.flip(0), self._scale, out=out[i]).sub_(self._shift)
        return out
