"""Training augmentation for photos of products held at a counter or standing on a shelf.

Works on a whole batch of cached uint8 images at once (one ``affine_grid`` +
``grid_sample`` for crop, scale, rotation and flip, then colour jitter as
tensor arithmetic), so two CPU cores spend their time in the network rather
than in per-image Python.

What is varied, and why:

* random resized crop (25-100 % of the area, aspect 3:4-4:3): items are seen
  at different distances and partly outside the scanning area;
* small rotation (+-10 degrees): hand-held items are tilted, never upside down;
* horizontal flip: a mirrored apple is still an apple; a mirrored carton is not
  something a camera sees, but at the training resolutions its print is barely
  legible and colour and layout, which do survive mirroring, carry the class;
* no vertical flip: products are held and shelved upright;
* brightness, contrast and a little saturation: store and counter lighting
  differ; hue is left alone because it is what tells a red bell pepper from a
  yellow one and a Granny Smith from a Pink Lady.
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class AugmentConfig:
    scale: tuple[float, float] = (0.25, 1.0)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    rotate_deg: float = 10.0
    hflip: bool = True
    brightness: float = 0.25
    contrast: float = 0.25
    saturation: float = 0.2

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


def _uniform(n: int, low: float, high: float, gen: torch.Generator) -> torch.Tensor:
    return torch.rand(n, generator=gen) * (high - low) + low


def normalizer(mean: tuple[float, ...], std: tuple[float, ...]):
    """uint8 or [0, 1] float RGB batch -> normalized float batch, channels_last."""
    mean_t = torch.tensor(mean).view(1, 3, 1, 1)
    std_t = torch.tensor(std).view(1, 3, 1, 1)

    def normalize(x: torch.Tensor) -> torch.Tensor:
        if x.dtype == torch.uint8:
            x = x.float().div_(255.0)
        return ((x - mean_t) / std_t).contiguous(memory_format=torch.channels_last)
    return normalize


class TrainAugment:
    """Cached uint8 RGB batch (N, 3, C, C) -> augmented, normalized float batch (N, 3, S, S)."""

    def __init__(self, out_size: int, mean: tuple[float, ...], std: tuple[float, ...],
                 cfg: AugmentConfig = AugmentConfig()):
        self.size = out_size
        self.cfg = cfg
        self.normalize = normalizer(mean, std)

    def geometry(self, n: int, gen: torch.Generator) -> torch.Tensor:
        """(N, 2, 3) affine maps from output to input coordinates (both in [-1, 1])."""
        c = self.cfg
        area = _uniform(n, *c.scale, gen)
        log_ratio = _uniform(n, math.log(c.ratio[0]), math.log(c.ratio[1]), gen)
        ratio = torch.exp(log_ratio)
        # Half-extents of the crop in normalized units; the image spans [-1, 1].
        w = torch.sqrt(area * ratio).clamp(max=1.0)
        h = torch.sqrt(area / ratio).clamp(max=1.0)
        cx = (torch.rand(n, generator=gen) * 2 - 1) * (1 - w)
        cy = (torch.rand(n, generator=gen) * 2 - 1) * (1 - h)
        angle = _uniform(n, -c.rotate_deg, c.rotate_deg, gen) * (math.pi / 180)
        flip = torch.ones(n)
        if c.hflip:
            flip = torch.where(torch.rand(n, generator=gen) < 0.5, -1.0, 1.0)
        cos, sin = torch.cos(angle), torch.sin(angle)
        theta = torch.empty(n, 2, 3)
        theta[:, 0, 0] = w * cos * flip
        theta[:, 0, 1] = -h * sin
        theta[:, 0, 2] = cx
        theta[:, 1, 0] = w * sin * flip
        theta[:, 1, 1] = h * cos
        theta[:, 1, 2] = cy
        return theta

    def colour(self, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        """Brightness, contrast and saturation jitter on a [0, 1] float batch."""
        c = self.cfg
        n = x.shape[0]
        b = _uniform(n, 1 - c.brightness, 1 + c.brightness, gen).view(n, 1, 1, 1)
        k = _uniform(n, 1 - c.contrast, 1 + c.contrast, gen).view(n, 1, 1, 1)
        s = _uniform(n, 1 - c.saturation, 1 + c.saturation, gen).view(n, 1, 1, 1)
        x = x * b
        gray = (0.299 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3])
        x = (x - gray.mean(dim=(2, 3), keepdim=True)) * k + gray.mean(dim=(2, 3), keepdim=True)
        gray = (0.299 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3])
        x = (x - gray) * s + gray
        return x.clamp_(0.0, 1.0)

    def __call__(self, batch: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        n = batch.shape[0]
        x = batch.float().div_(255.0)
        grid = F.affine_grid(self.geometry(n, gen), [n, 3, self.size, self.size], align_corners=False)
        # Reflection fills the corners a rotated or edge crop reaches past the photo with
        # plausible texture instead of black wedges the model could learn to key on.
        x = F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
        return self.normalize(self.colour(x, gen))
