"""The two pipeline threads: capture (source -> frame queue) and inference (frame queue -> results).

Both poll a shared stop event; capture always sends END in ``finally`` so the
worker never waits on a producer that has gone; each keeps a heartbeat so a
watchdog can tell a stalled thread from an idle one.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any, Callable

from checkout_cam.frame_queue import END, Empty, FrameQueue, Stopped
from checkout_cam.frames import Frame
from checkout_cam.model import Classifier
from checkout_cam.gating import MotionGate
from checkout_cam.results import Classification, InferenceResult
from checkout_cam.sources import FrameSource
from checkout_cam.stats import RateMeter

logger = logging.getLogger(__name__)

ResultHandler = Callable[[Frame, InferenceResult], None]


class CaptureThread(threading.Thread):
    """Reads the source into the frame queue; ``on_frame`` sees every frame (the live display)."""

    def __init__(self, source: FrameSource, frames: FrameQueue, stop: threading.Event,
                 on_frame: Callable[[Frame], None] | None = None,
                 prepare: Callable[[Frame], Any] | None = None):
        super().__init__(name="capture", daemon=True)
        self.source = source
        self.frames = frames
        self.stop_event = stop
        self.on_frame = on_frame
        # Preprocessing here overlaps it with inference of the previous frame in the worker.
        self.prepare = prepare
        self.meter = RateMeter()
        self.heartbeat = time.monotonic()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            for frame in self.source:
                self.heartbeat = time.monotonic()
                self.meter.tick(frame.timestamp)
                if self.on_frame is not None:
                    self.on_frame(frame)
                self.frames.put((frame, self.prepare(frame) if self.prepare else None))
                if self.stop_event.is_set():
                    break
        except Stopped:
            pass
        except Exception as exc:  # a broken source must still end the stream cleanly
            self.error = exc
            logger.exception("capture from %s failed", self.source.name)
        finally:
            self.frames.put_end()
            self.source.close()
            logger.debug("capture thread done")


class InferenceWorker(threading.Thread):
    """Classifies each (frame, preprocessed batch) from the queue and hands (frame, result) to ``handle``.

    An exception on one frame is logged with its frame id and becomes an error
    result; the loop goes on. ``handle`` raising Stopped ends the worker. With
    a motion gate, a frame whose scanning area has not changed since the last
    inferred one reuses that classification (``reused=True``).
    """

    def __init__(self, classifier: Classifier, frames: FrameQueue, stop: threading.Event,
                 handle: ResultHandler, *, top_k: int = 3, poll_s: float = 0.1,
                 on_end: Callable[[], None] | None = None, gate: MotionGate | None = None):
        super().__init__(name="inference", daemon=True)
        self.classifier = classifier
        self.frames = frames
        self.stop_event = stop
        self.handle = handle
        self.top_k = top_k
        self.poll_s = poll_s
        self.on_end = on_end
        self.gate = gate
        self._last: Classification | None = None
        self.meter = RateMeter()
        self.heartbeat = time.monotonic()
        self.errors = 0
        self.processed = 0
        self.model_runs = 0  # frames that reached the model (the rest reused a gated result)

    def infer(self, frame: Frame, batch: Any = None) -> InferenceResult:
        t0 = time.monotonic()
        if self.gate is not None and self._last is not None and not self.gate.changed(frame):
            done = time.monotonic()
            return InferenceResult(frame.frame_id, frame.timestamp, frame.video_time, self._last,
                                   (done - t0) * 1e3, done=done, reused=True)
        self.model_runs += 1
        try:
            if batch is None:
                batch = self.classifier.preprocess([frame.image])
            classification = self.classifier.infer(batch, self.top_k)[0]
        except Exception as exc:
            self.errors += 1
            logger.exception("inference failed on frame %d from %s", frame.frame_id, frame.source)
            done = time.monotonic()
            return InferenceResult(frame.frame_id, frame.timestamp, frame.video_time, None,
                                   (done - t0) * 1e3, done=done, error=f"{type(exc).__name__}: {exc}")
        done = time.monotonic()
        if self.gate is not None:
            self.gate.inferred(frame)
        self._last = classification
        return InferenceResult(frame.frame_id, frame.timestamp, frame.video_time, classification,
                               (done - t0) * 1e3, done=done)

    def run(self) -> None:
        try:
            while not self.stop_event.is_set():
                self.heartbeat = time.monotonic()
                try:
                    item = self.frames.get(timeout=self.poll_s)
                except Empty:
                    continue
                if item is END:
                    break
                frame, batch = item
                result = self.infer(frame, batch)
                if not result.reused:
                    self.meter.tick(result.done)
                self.processed += 1
                try:
                    self.handle(frame, result)
                except Stopped:
                    break
                except Exception:
                    logger.exception("handling the result of frame %d failed", frame.frame_id)
        except Stopped:
            pass
        finally:
            if self.on_end is not None:
                self.on_end()
            logger.debug("inference worker done after %d frames", self.processed)
