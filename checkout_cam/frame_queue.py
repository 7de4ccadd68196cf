"""The hand-off between capture and inference, with the policy the mode needs.

live:   only the newest item waits; a put replaces the waiting item and counts
        it as dropped, so memory stays bounded however slow inference is.
replay: a bounded FIFO; put blocks while it is full, so every frame is
        processed, in order, and none is dropped.

Every blocking call polls the stop event, so nothing hangs on a full or
empty queue at shutdown. ``END`` marks the end of the stream.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from typing import Any, Literal

END = object()


class Empty(Exception):
    """No item arrived within the timeout."""


class Stopped(Exception):
    """The stop event was set while waiting."""


class FrameQueue:
    def __init__(self, mode: Literal["live", "replay"], maxsize: int = 8,
                 stop: threading.Event | None = None, poll_s: float = 0.1):
        if mode not in ("live", "replay"):
            raise ValueError(f"queue mode must be 'live' or 'replay', got {mode!r}")
        self.mode = mode
        self.maxsize = 1 if mode == "live" else max(1, maxsize)
        self._items: deque = deque()
        self._cond = threading.Condition()
        self._stop = stop or threading.Event()
        self._poll_s = poll_s
        self.dropped = 0
        self.put_count = 0

    def put(self, item: Any) -> None:
        """Live: replace what waits (counted as dropped). Replay: wait for room; raise Stopped on stop."""
        with self._cond:
            if self.mode == "live":
                # Markers (``sticky``, e.g. a lost camera) are never replaced by a newer frame.
                if self._items and self._items[-1] is not END and not getattr(self._items[-1], "sticky", False):
                    self._items.pop()
                    self.dropped += 1
            else:
                while len(self._items) >= self.maxsize:
                    if self._stop.is_set():
                        raise Stopped()
                    self._cond.wait(self._poll_s)
            self._items.append(item)
            self.put_count += 1
            self._cond.notify_all()

    def put_end(self) -> None:
        """The producer's last word: never blocks, never dropped, even when the queue is full."""
        with self._cond:
            self._items.append(END)
            self._cond.notify_all()

    def get(self, timeout: float | None = None) -> Any:
        """The next item (or END). Raises Empty after ``timeout`` s, Stopped if stop is set while empty."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while not self._items:
                if self._stop.is_set():
                    raise Stopped()
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise Empty()
                self._cond.wait(self._poll_s if remaining is None else min(self._poll_s, remaining))
            item = self._items.popleft()
            self._cond.notify_all()
            return item

    def __len__(self) -> int:
        with self._cond:
            return len(self._items)
