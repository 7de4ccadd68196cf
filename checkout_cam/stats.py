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
