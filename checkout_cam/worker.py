"""The two pipeline threads: capture (source -> frame queue) and inference (frame queue -> results).

Both poll a shared stop event; capture always sends END in ``finally`` so the
worker never waits on a producer that has gone; each keeps a heartbeat so a
watchdog can tell a stalled thread from an idle one.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from typing import Any, Callable

import torch

from checkout_cam.frame_queue import END, Empty, FrameQueue, Stopped
from checkout_cam.frames import Frame
from checkout_cam.model import Classifier
from checkout_cam.gating import MotionGate
from checkout_cam.results import Classification, InferenceResult
from checkout_cam.sources import CameraLost, FrameSource
from checkout_cam.stats import FrameRateMeter, RateMeter

logger = logging.getLogger(__name__)

ResultHandler = Callable[[Frame, InferenceResult], None]


class CaptureThread(threading.Thread):
    """Reads the source into the frame queue; ``on_frame`` sees every frame (the live display)."""

    def __init__(self, source: FrameSource, frames: FrameQueue, stop: threading.Event,
                 on_frame: Callable[[Frame], None] | None = None,
                 prepare: Callable[[Frame], Any] | None = None, outage_gap_s: float | None = None):
        super().__init__(name="capture", daemon=True)
        self.source = source
        self.frames = frames
        self.stop_event = stop
        self.on_frame = on_frame
        # Preprocessing here overlaps it with inference of the previous frame in the worker.
        self.prepare = prepare
        # A live source that loses its camera says so through the queue, in order with the frames.
        source.on_offline = lambda why: frames.put(CameraLost(why))
        # Live: a gap between frames the camera delivered is an outage (the inference worker sees fewer
        # frames than the camera sends, so only this thread can tell a gap from a dropped frame).
        self.outage_gap_s = outage_gap_s if source.live else None
        self.meter = FrameRateMeter()
        self.heartbeat = time.monotonic()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            last = None
            for frame in self.source:
                self.heartbeat = time.monotonic()
                if self.outage_gap_s is not None and last is not None and \
                        frame.timestamp - last > self.outage_gap_s:
                    self.frames.put(CameraLost(f"no frames for {frame.timestamp - last:.1f} s"))
                last = frame.timestamp
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
                 on_end: Callable[[], None] | None = None, gate: MotionGate | None = None,
                 batch_size: int = 1, on_marker: Callable[[CameraLost], None] | None = None):
        super().__init__(name="inference", daemon=True)
        self.classifier = classifier
        self.frames = frames
        self.stop_event = stop
        self.handle = handle
        self.top_k = top_k
        self.poll_s = poll_s
        self.on_end = on_end
        self.on_marker = on_marker
        self.gate = gate
        # Live keeps 1 (latency); replay batches frames that are already waiting (throughput).
        self.batch_size = max(1, batch_size)
        self._last: Classification | None = None
        self.meter = RateMeter()
        self.heartbeat = time.monotonic()
        self.errors = 0
        self.processed = 0
        self.model_runs = 0  # frames that reached the model (the rest reused a gated result)

    def infer_many(self, items: list[tuple[Frame, Any]]) -> list[InferenceResult]:
        """Results for consecutive (frame, preprocessed batch) items, in order.

        The motion gate decides first which frames need the model (its answer depends
        on the images and frame times only); those share one batched model call, and
        the rest reuse the classification of the nearest earlier inferred frame. If the
        batched call fails, each frame is retried alone, so one bad frame is isolated
        and logged with its id.
        """
        t0 = time.monotonic()
        need: list[int] = []
        for i, (frame, _) in enumerate(items):
            has_reference = self._last is not None or bool(need)
            if self.gate is None or not has_reference or self.gate.changed(frame):
                need.append(i)
                if self.gate is not None:
                    self.gate.inferred(frame)
        outcome: dict[int, Classification | str] = {}
        if need:
            self.model_runs += len(need)
            try:
                outcome.update(zip(need, self._classify([items[i] for i in need])))
            except Exception:
                if len(need) == 1:
                    outcome[need[0]] = self._failed(items[need[0]][0])
                else:
                    for i in need:
                        try:
                            outcome[i] = self._classify([items[i]])[0]
                        except Exception:
                            outcome[i] = self._failed(items[i][0])
        done = time.monotonic()
        ms = (done - t0) * 1e3
        results = []
        for i, (frame, _) in enumerate(items):
            got = outcome.get(i)
            if isinstance(got, Classification):
                self._last = got
            reused = i not in outcome
            if reused and self._last is None:
                got = "no earlier result to reuse"
            classification = self._last if reused else (got if isinstance(got, Classification) else None)
            results.append(InferenceResult(frame.frame_id, frame.timestamp, frame.video_time, classification, ms,
                                           done=done, reused=reused and classification is not None,
                                           error=None if classification is not None else got))
        return results

    def _classify(self, items: list[tuple[Frame, Any]]) -> list[Classification]:
        prepared = [b if b is not None else self.classifier.preprocess([f.image]) for f, b in items]
        batch = prepared[0] if len(prepared) == 1 else torch.cat(prepared)
        return self.classifier.infer(batch, self.top_k)

    def _failed(self, frame: Frame) -> str:
        self.errors += 1
        logger.exception("inference failed on frame %d from %s", frame.frame_id, frame.source)
        exc = sys.exc_info()[1]
        return f"{type(exc).__name__}: {exc}"

    def _marker(self, marker: CameraLost) -> None:
        if self.on_marker is None:
            return
        try:
            self.on_marker(marker)
        except Exception:
            logger.exception("handling the camera loss failed")

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
                if isinstance(item, CameraLost):
                    self._marker(item)
                    continue
                items, ended, marker = [item], False, None
                while len(items) < self.batch_size:  # replay: take what is already waiting
                    try:
                        more = self.frames.get(timeout=0)
                    except Empty:
                        break
                    if more is END:
                        ended = True
                        break
                    if isinstance(more, CameraLost):
                        marker = more   # handled after the frames before it
                        break
                    items.append(more)
                stopped = False
                for (frame, _), result in zip(items, self.infer_many(items)):
                    if not result.reused:
                        self.meter.tick(result.done)
                    self.processed += 1
                    try:
                        self.handle(frame, result)
                    except Stopped:
                        stopped = True
                        break
                    except Exception:
                        logger.exception("handling the result of frame %d failed", frame.frame_id)
                if marker is not None and not stopped:
                    self._marker(marker)
                if stopped or ended:
                    break
        except Stopped:
            pass
        finally:
            if self.on_end is not None:
                self.on_end()
            logger.debug("inference worker done after %d frames", self.processed)
