"""Rates and latency percentiles over a sliding window, for the status line and stats logs."""

from __future__ import annotations

import threading
import time
from collections import deque


class RateMeter:
    """Events per second over the last ``window_s`` seconds (thread-safe)."""

    def __init__(self, window_s: float = 2.0):
        self.window_s = window_s
        self._ticks: deque[float] = deque()
        self._lock = threading.Lock()
        self.total = 0

    def tick(self, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        with self._lock:
            self._ticks.append(now)
            self.total += 1
            while self._ticks and now - self._ticks[0] > self.window_s:
                self._ticks.popleft()

    def rate(self, now: float | None = None) -> float:
        now = time.monotonic() if now is None else now
        with self._lock:
            while self._ticks and now - self._ticks[0] > self.window_s:
                self._ticks.popleft()
            if len(self._ticks) < 2:
                return 0.0
            span = max(now - self._ticks[0], self._ticks[-1] - self._ticks[0])
            return (len(self._ticks) - 1) / span if span > 0 else 0.0


class FrameRateMeter(RateMeter):
    """A source's frame rate from arrival times, robust to bursts.

    A stream delivers the frames it buffered while OpenCV probed it (or while
    the network stalled) all at once: counted as (n-1)/span that showed 127
    then 40 fps for 25 fps content. The median spacing of frames two apart
    ignores a burst that is less than half the window, and also reads a camera
    that hands over frames in pairs right.
    """

    def rate(self, now: float | None = None) -> float:
        now = time.monotonic() if now is None else now
        with self._lock:
            while self._ticks and now - self._ticks[0] > self.window_s:
                self._ticks.popleft()
            ticks = list(self._ticks)
        if len(ticks) < 5:
            return super().rate(now)
        gaps = sorted((b - a) / 2 for a, b in zip(ticks, ticks[2:]))
        median = gaps[len(gaps) // 2]
        if median <= 0:
            return super().rate(now)
        return 1.0 / median


class Percentiles:
    """Percentiles of the last ``size`` samples (thread-safe)."""

    def __init__(self, size: int = 300):
        self._values: deque[float] = deque(maxlen=size)
        self._lock = threading.Lock()

    def add(self, value: float) -> None:
        with self._lock:
            self._values.append(value)

    def get(self, q: float) -> float:
        with self._lock:
            values = sorted(self._values)
        if not values:
            return float("nan")
        idx = min(len(values) - 1, max(0, int(round(q / 100 * (len(values) - 1)))))
        return values[idx]


class LatencyHistogram:
    """Percentiles over a whole run in fixed memory: 0.5 ms bins up to ``max_ms``, above it one overflow bin.

    The sliding ``Percentiles`` window answers "how is it now" for the status line;
    this answers "how was the run" (a months-long service cannot keep every sample).
    """

    def __init__(self, max_ms: float = 5000.0, bin_ms: float = 0.5):
        self.bin_ms = bin_ms
        self._counts = [0] * (int(max_ms / bin_ms) + 1)
        self._lock = threading.Lock()
        self.count = 0

    def add(self, value_ms: float) -> None:
        if value_ms != value_ms:  # NaN: a result without a completion time
            return
        i = min(len(self._counts) - 1, max(0, int(value_ms / self.bin_ms)))
        with self._lock:
            self._counts[i] += 1
            self.count += 1

    def get(self, q: float) -> float:
        """The q-th percentile, as the upper edge of its bin (NaN before the first sample)."""
        with self._lock:
            counts, total = list(self._counts), self.count
        if not total:
            return float("nan")
        rank = max(1, int(round(q / 100 * total)))
        seen = 0
        for i, c in enumerate(counts):
            seen += c
            if seen >= rank:
                return (i + 1) * self.bin_ms
        return len(counts) * self.bin_ms
