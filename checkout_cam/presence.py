"""Is something in the scanning area? A background model of the empty lane, learned and kept up to date.

The review policy asks this once per frame, in frame order; the answer
depends only on the frames and their times, so a replay gives the same items.

Why our own model and not OpenCV's MOG2/KNN subtractors: those learn whatever
stays in view at one rate, so they either absorb an item held for a while or
follow slow light too slowly, and they cannot tell "nothing learned yet" from
"empty". What a checkout lane needs is three facts, each with its reason:

* **The empty lane is what stays still.** A hand-held item is never still for
  long (box.mp4's longest still stretch is 1.5 s at 2 levels, cup.mp4's 0.4 s).
  A scene whose 64-px thumbnail stays within ``still_threshold`` of one
  reference for ``background_learn_s`` becomes the background (the overall
  brightness change is taken out first, so drifting light is still). Before that,
  nothing is known: the lane counts as occupied once anything has moved (so a
  lane that starts with an item in view finds that item), and as empty while
  nothing moves (so an empty lane at start gives no item).
* **Light drifts slowly.** While empty, the background follows the frames with
  a time constant of ``background_adapt_s`` seconds; behind an item, its
  overall brightness follows the part of the lane still visible (a ramp leaves it behind
  by rate x time constant: 5 s keeps 2 levels/s under 10 levels).
* **A scene that changed and stayed is the new background.** When the lane
  looks occupied but has been still for ``background_relearn_s`` (an item
  left lying, a moved camera, the item that was in view at start leaving), the
  still scene is learned as empty. The presence that led up to it ends where
  the stillness began, not when it was noticed.

Occupied means the mean absolute difference from the background is at least
``empty_threshold`` levels (the setting the first-frame reference used).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import cv2
import numpy as np

from checkout_cam.config import ReviewConfig
from checkout_cam.preprocess import roi_thumbnail

logger = logging.getLogger(__name__)

# A pixel whose largest channel differs by more than this from the background belongs to the foreground
# (for the item's colour signature; the presence test itself uses the mean difference).
FOREGROUND_LEVEL = 25.0
# Fewer foreground pixels than this share of the thumbnail: too little to judge an item's colours by.
MIN_FOREGROUND_SHARE = 0.03


@dataclass(frozen=True)
class Presence:
    """The answer for one frame."""

    occupied: bool
    diff: float                    # mean |thumbnail - background| in levels (0 while no background)
    known: bool                    # a background has been learned
    ended_before: tuple[int, float] | None = None   # (frame id, time): a presence ended there (relearned)
    signature: np.ndarray | None = None             # the foreground's colour histogram, when there is one


class LaneBackground:
    def __init__(self, cfg: ReviewConfig, roi: list[float] | None = None):
        self.cfg = cfg
        self.roi = roi
        self._bg: np.ndarray | None = None
        self._still_ref: np.ndarray | None = None
        self._still_since: tuple[int, float] | None = None    # first frame of the current still stretch
        self._before_still: tuple[int, float] | None = None   # the frame just before it
        self._last: tuple[int, float] | None = None
        self._moved = False     # anything moved since the start (or since the background was lost)
        self._prev_t: float | None = None

    @property
    def known(self) -> bool:
        return self._bg is not None

    def set(self, image: np.ndarray) -> None:
        """Take ``image`` as the empty lane (the `b` key, or a test)."""
        self._bg = roi_thumbnail(image, self.roi).astype(np.float32)
        logger.info("background set (%dx%d thumbnail of the scanning area)", self._bg.shape[1], self._bg.shape[0])

    def reset(self) -> None:
        """Forget stillness (after an outage the scene may have changed); keep the background."""
        self._still_ref = self._still_since = self._before_still = None
        self._last = self._prev_t = None

    def update(self, image: np.ndarray, frame_id: int, t: float) -> Presence:
        thumb = roi_thumbnail(image, self.roi).astype(np.float32)
        c = self.cfg
        if self._bg is not None and self._bg.shape != thumb.shape:
            logger.warning("the scanning area's thumbnail changed shape (%s -> %s, a resolution change): "
                           "the background is learned again", self._bg.shape, thumb.shape)
            self._bg, self._moved = None, False
            self.reset()
        if self._still_ref is None or self._still_ref.shape != thumb.shape or \
                _change(thumb, self._still_ref) > c.still_threshold:
            if self._still_ref is not None:
                self._moved = True
            self._still_ref = thumb
            self._still_since, self._before_still = (frame_id, t), self._last
        self._last = (frame_id, t)
        still_for = t - self._still_since[1]
        ended_before = None
        if self._bg is None:
            if still_for >= c.background_learn_s:
                self._bg = thumb.copy()
                ended_before = self._before_still if self._moved else None
                logger.info("background learned at frame %d: the scanning area was still for %.1f s",
                            frame_id, still_for)
            else:
                self._prev_t = t
                return Presence(occupied=self._moved, diff=0.0, known=False)
        diff = float(np.abs(thumb - self._bg).mean())
        occupied = diff >= c.empty_threshold
        if occupied and still_for >= c.background_relearn_s:
            logger.info("frame %d: the scanning area changed and stayed still for %.1f s; learned as empty",
                        frame_id, still_for)
            self._bg = thumb.copy()
            ended_before = self._before_still
            diff = float(np.abs(thumb - self._bg).mean())
            occupied = False
        if self._prev_t is not None:
            alpha = min(1.0, max(0.0, t - self._prev_t) / max(c.background_adapt_s, 1e-6))
            if not occupied:
                self._bg += alpha * (thumb - self._bg)
            else:
                # Behind an item the light goes on drifting: follow the overall change of the lane
                # that is still visible, so the lane is empty again when the item leaves.
                d = thumb - self._bg
                lane = np.abs(d).max(axis=2) < FOREGROUND_LEVEL
                if lane.mean() > 0.2:
                    self._bg += alpha * float(np.median(d[lane]))
        self._prev_t = t
        return Presence(occupied=occupied, diff=diff, known=True, ended_before=ended_before,
                        signature=self._signature(thumb) if occupied else None)

    def _signature(self, thumb: np.ndarray) -> np.ndarray | None:
        """Colour histogram (12 hues x 4 saturations x 4 values) of the pixels that differ from the
        background: hue tells products apart better than BGR levels (on ten grocery photos the median
        pair distance is 0.64 in HSV, 0.42 in BGR), and a histogram does not care where in the area the
        item is held or how it is turned."""
        mask = np.abs(thumb - self._bg).max(axis=2) > FOREGROUND_LEVEL
        if mask.mean() < MIN_FOREGROUND_SHARE:
            return None
        hsv = cv2.cvtColor(np.clip(thumb, 0, 255).astype(np.uint8), cv2.COLOR_BGR2HSV)[mask].astype(np.int64)
        bins = ((hsv[:, 0] * 12 // 180) * 4 + hsv[:, 1] * 4 // 256) * 4 + hsv[:, 2] * 4 // 256
        hist = np.bincount(bins, minlength=192).astype(np.float64)
        return hist / hist.sum()


def _change(a: np.ndarray, b: np.ndarray) -> float:
    """Mean absolute change with the overall brightness change taken out: light drifting (or a camera's
    exposure moving) leaves a scene still; something moving in it does not."""
    d = a - b
    return float(np.abs(d - float(np.median(d))).mean())


def signature_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Total variation between two colour histograms: 0 same colours, 1 none shared."""
    return 0.5 * float(np.abs(a - b).sum())
