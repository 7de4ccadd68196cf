"""Motion gating: skip the model while the scanning area has not changed.

A self-checkout camera mostly looks at an empty or still counter; running
ResNet-18 on 30 identical frames a second burns the CPU the rest of the lane
needs. The gate compares each frame's scanning-area thumbnail with the one of
the last frame that was actually inferred (not the previous frame, so a slow
drift still adds up to a change), and lets the model run again at least every
``max_reuse_s`` so a change too small to cross the threshold cannot hide an
item for long. Time is ``Frame.time`` (video time in replay), so a gated
replay gives the same events however fast it runs.
"""

from __future__ import annotations

from typing import Sequence

import cv2
import numpy as np

from checkout_cam.frames import Frame
from checkout_cam.preprocess import roi_thumbnail


class MotionGate:
    def __init__(self, threshold: float, roi: Sequence[float] | None = None, max_reuse_s: float = 1.0):
        self.threshold = threshold
        self.roi = roi
        self.max_reuse_s = max_reuse_s
        self._reference: np.ndarray | None = None
        self._reference_time = 0.0
        self._thumb_of: Frame | None = None  # the frame whose thumbnail is in _thumb
        self._thumb: np.ndarray | None = None
        self.skipped = 0
        self.passed = 0

    def changed(self, frame: Frame) -> bool:
        """True when the model should run on this frame."""
        if self._reference is None or frame.time - self._reference_time >= self.max_reuse_s:
            self.passed += 1
            return True
        thumb = self._thumbnail(frame)
        if thumb.shape != self._reference.shape or float(cv2.absdiff(thumb, self._reference).mean()) > self.threshold:
            self.passed += 1
            return True
        self.skipped += 1
        return False

    def inferred(self, frame: Frame) -> None:
        """Record the frame the model just ran on as the new reference."""
        self._reference = self._thumbnail(frame)
        self._reference_time = frame.time

    def _thumbnail(self, frame: Frame) -> np.ndarray:
        # The worker asks changed() and then inferred() about the same frame: one thumbnail serves both.
        if self._thumb_of is not frame:
            self._thumb_of, self._thumb = frame, roi_thumbnail(frame.image, self.roi)
        return self._thumb
