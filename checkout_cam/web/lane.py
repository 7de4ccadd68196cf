"""How the web layer sees a running lane: a sink, a status reader, and the shared live picture.

- ``LaneFeed`` is a pipeline sink (``(frame, decision) -> None``): it keeps the
  newest (frame, decision) by reference (no copy, no drawing on the
  inference thread) and the recent item events as ``schema.ItemRecord``s, the
  objects the event log writes.
- ``LaneReader`` reads a ``Pipeline``'s public status for /api/status, /readyz
  and /metrics.
- ``LiveView`` draws and JPEG-encodes the newest frame at most ``stream_fps``
  times a second, only while someone watches, in its own thread; every MJPEG
  viewer gets the same bytes (one encode per frame, however many viewers).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque

import cv2

from checkout_cam.frames import Frame
from checkout_cam.render import OverlayRenderer, Status, reason_words
from checkout_cam.review import Decision, ItemEvent
from checkout_cam.schema import ItemRecord, RunIdentity

logger = logging.getLogger(__name__)


class LaneFeed:
    """A sink keeping the newest frame and decision and the last ``keep`` item events."""

    name = "web feed"

    def __init__(self, *, identity: RunIdentity, source: str, model: dict, policy: dict,
                 wall_clock_offset: float | None, keep: int = 100):
        self.identity = identity
        self._record_args = dict(identity=identity, source=source, model=dict(model), policy=dict(policy),
                                 wall_clock_offset=wall_clock_offset)
        self._events: deque[ItemRecord] = deque(maxlen=keep)
        self._last_event: ItemEvent | None = None
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._frame: Frame | None = None
        self._decision: Decision | None = None
        self.seq = 0   # bumps with every frame handed over

    def __call__(self, frame: Frame, decision: Decision | None) -> None:
        with self._cond:
            self._frame, self._decision = frame, decision
            self.seq += 1
            self._cond.notify_all()
        if decision is not None and decision.closed is not None:
            self.close_event(decision.closed)

    def close_event(self, event: ItemEvent | None) -> None:
        if event is None or event is self._last_event:
            return
        self._last_event = event
        record = event.record(**self._record_args)
        with self._lock:
            self._events.append(record)

    def latest(self) -> tuple[Frame | None, Decision | None, int]:
        with self._lock:
            return self._frame, self._decision, self.seq

    def wait_newer(self, seq: int, timeout: float) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: self.seq != seq, timeout)

    def events(self, limit: int) -> list[ItemRecord]:
        with self._lock:
            items = list(self._events)
        return items[-limit:] if limit > 0 else []


class LaneReader:
    """The status of one running pipeline, as the API and the metrics show it."""

    def __init__(self, pipeline, lane_id: str):
        self.pipeline = pipeline
        self.lane_id = lane_id

    def status(self) -> Status:
        return self.pipeline.status()

    def ready(self) -> tuple[bool, str]:
        """(ready, why not): the first frame read, then the pipeline's own health reader (threads
        looping, camera online, no sink failing); without one, the camera's state."""
        p = self.pipeline
        if not p.first_frame.is_set():
            return False, f"waiting for the first frame from {p.source.name}"
        if p.finished:
            return False, "the lane's pipeline has stopped"
        health = getattr(p, "health", None)
        if callable(health):
            h = health()
            if not h.ok:
                return False, "; ".join(h.reasons) or "unhealthy"
            return True, "ok"
        if not p.source.online:
            return False, f"camera offline: {p.source.name} delivers no frames (reconnecting)"
        return True, "ok"

    def health(self) -> dict | None:
        health = getattr(self.pipeline, "health", None)
        return health().to_dict() if callable(health) else None

    def counters(self) -> dict:
        p = self.pipeline
        s = p.status()
        w = p.worker
        return {"camera_fps": s.camera_fps, "inference_fps": s.inference_fps,
                "camera_online": 0.0 if s.offline else 1.0,
                "latency_p50_ms": 0.0 if s.latency_ms != s.latency_ms else s.latency_ms,
                "latency_p95_ms": p.latency_ms.get(95), "dropped": s.dropped, "processed": w.processed,
                "model_runs": w.model_runs, "reused": w.processed - w.model_runs, "errors": w.errors,
                "items": p.items, "flagged": p.flagged}


def decision_dict(decision: Decision | None, stale_after_ms: float, now: float | None = None) -> dict | None:
    """The current decision for the page: Top-3 under OK/REVIEW with the reason, or None when stale/empty."""
    if decision is None:
        return None
    now = time.monotonic() if now is None else now
    age_ms = (now - decision.result.timestamp) * 1e3
    shown = decision.smoothed
    return {"frame_id": decision.frame_id, "empty": decision.empty, "item": decision.item,
            "review": decision.review, "review_reasons": list(decision.reasons),
            "reason_words": reason_words(decision.reasons), "age_ms": round(age_ms, 1),
            "stale": age_ms > stale_after_ms,
            "top": shown.to_list() if shown is not None else [],
            "error": decision.result.error}


class LiveView:
    """The annotated live picture as JPEG bytes, encoded once per frame and shared by every viewer."""

    def __init__(self, feed: LaneFeed, renderer: OverlayRenderer, reader: LaneReader | None = None, *,
                 fps: float = 15.0, quality: int = 80, max_viewers: int = 4, stop: threading.Event | None = None):
        self.feed = feed
        self.renderer = renderer
        self.reader = reader
        self.interval = 1.0 / fps
        self.params = [cv2.IMWRITE_JPEG_QUALITY, int(quality)]
        self.max_viewers = max_viewers
        self.stop_event = stop or threading.Event()
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._viewers = 0
        self._jpeg: bytes | None = None
        self._jpeg_seq = -1     # feed seq it was drawn from
        self.version = 0        # bumps with every new JPEG
        self.encoded = 0
        self._thread: threading.Thread | None = None
        self._wanted = threading.Event()

    # ------------------------------------------------------------ viewers

    def join_viewer(self) -> bool:
        """Count a new MJPEG viewer; False when the cap is reached (the caller answers 503)."""
        with self._lock:
            if self._viewers >= self.max_viewers:
                return False
            self._viewers += 1
        self._ensure_thread()
        self._wanted.set()
        return True

    def leave_viewer(self) -> None:
        with self._lock:
            self._viewers = max(0, self._viewers - 1)

    @property
    def viewers(self) -> int:
        return self._viewers

    def wait_jpeg(self, after_version: int, timeout: float) -> tuple[bytes | None, int]:
        """The newest JPEG once it is newer than ``after_version`` (or the same one on timeout)."""
        with self._cond:
            self._cond.wait_for(lambda: self.version != after_version or self.stop_event.is_set(), timeout)
            return self._jpeg, self.version

    def latest_jpeg(self, raw: bool = False) -> bytes | None:
        """The newest frame as JPEG now (for /latest.jpg): the shared one if it is current."""
        frame, decision, seq = self.feed.latest()
        if frame is None:
            return None
        if raw:
            return self._encode(frame.image)
        with self._lock:
            if self._jpeg is not None and self._jpeg_seq == seq:
                return self._jpeg
        return self._publish(frame, decision, seq)

    # ------------------------------------------------------------ encoding

    def _draw(self, frame: Frame, decision: Decision | None):
        status = None
        if self.reader is not None:
            try:
                status = self.reader.status()
            except Exception:
                logger.debug("status for the live view failed", exc_info=True)
        return self.renderer.annotate(frame, decision, status)

    def _encode(self, image) -> bytes:
        ok, buf = cv2.imencode(".jpg", image, self.params)
        if not ok:
            raise RuntimeError("JPEG encoding failed")
        return buf.tobytes()

    def _publish(self, frame: Frame, decision: Decision | None, seq: int) -> bytes:
        data = self._encode(self._draw(frame, decision))
        with self._cond:
            if seq != self._jpeg_seq:
                self._jpeg, self._jpeg_seq = data, seq
                self.version += 1
                self.encoded += 1
                self._cond.notify_all()
            return self._jpeg

    def _ensure_thread(self) -> None:
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="live-view", daemon=True)
                self._thread.start()

    def _run(self) -> None:
        next_t = time.monotonic()
        seq = -1
        while not self.stop_event.is_set():
            if not self._viewers:  # nobody watching: draw nothing
                self._wanted.clear()
                self._wanted.wait(0.5)
                continue
            if not self.feed.wait_newer(seq, 0.5):
                continue
            now = time.monotonic()
            if now < next_t:
                self.stop_event.wait(next_t - now)
            next_t = max(next_t + self.interval, time.monotonic())
            frame, decision, seq = self.feed.latest()
            if frame is None:
                continue
            try:
                self._publish(frame, decision, seq)
            except Exception:
                logger.exception("drawing the live view failed on frame %d", frame.frame_id)

    def close(self) -> None:
        self.stop_event.set()
        self._wanted.set()
        with self._cond:
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(2.0)

