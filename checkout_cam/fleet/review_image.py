"""The picture an attendant sees for a flagged item: a small JPEG of the scanning area."""

from __future__ import annotations

from typing import Sequence

import cv2
import numpy as np

from checkout_cam.preprocess import crop_roi

MAX_BYTES = 50_000


def review_jpeg(image: np.ndarray, roi: Sequence[float] | None, *, max_px: int = 320,
                max_bytes: int = MAX_BYTES) -> bytes:
    """The scanning area (``preprocess.roi``) of a BGR frame, longest side ``max_px``, as JPEG under
    ``max_bytes`` (quality steps down until it fits; a busy scene still gets a picture)."""
    region = crop_roi(image, roi)
    h, w = region.shape[:2]
    scale = min(1.0, max_px / max(h, w))
    if scale < 1.0:
        region = cv2.resize(region, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
    data = b""
    for quality in (85, 70, 55, 40, 25, 10):
        ok, buf = cv2.imencode(".jpg", region, [cv2.IMWRITE_JPEG_QUALITY, quality])
        if ok:
            data = buf.tobytes()
            if len(data) <= max_bytes:
                return data
    small = cv2.resize(region, (max(1, region.shape[1] // 2), max(1, region.shape[0] // 2)))
    return review_jpeg(small, None, max_px=max_px, max_bytes=max_bytes) if min(small.shape[:2]) > 8 else data
