"""Wires one run: source -> frame queue -> inference worker -> review policy -> sinks.

One ``threading.Event`` stops everything. The review policy runs in the
inference thread, once per result and in order, so item events do not depend
on how fast anything is displayed. What the modes read back:

- ``latest()``: the newest frame and the newest decision (the live window);
- ``decisions``: every (frame, decision) pair in order, when ``collect`` is
  set (replay writes each one into the annotated video);
- ``status()``: camera fps, inference fps, latency, dropped frames, offline;
- ``health()``: ok or not, and why in words (threads, camera, sinks): what the
  systemd watchdog, ``/readyz`` and ``doctor`` read.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Sequence

from checkout_cam.config import Config
from checkout_cam.frame_queue import FrameQueue
from checkout_cam.frames import Frame
from checkout_cam.gating import MotionGate
from checkout_cam.model import Classifier
from checkout_cam.render import Status
from checkout_cam.results import InferenceResult
from checkout_cam.review import Decision, ItemEvent, ReviewPolicy
from checkout_cam.sinks import Sink, SinkGroup
from checkout_cam.sources import FrameSource
from checkout_cam.stats import LatencyHistogram, Percentiles
from checkout_cam.worker import CaptureThread, InferenceWorker

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Health:
    """How a running pipeline is, in one small value.

    ``ok``: everything works (what ``/readyz`` answers). ``alive``: the threads
    loop and no sink has been failing for longer than allowed: what the
    systemd watchdog is pinged on. A camera that is unplugged makes ``ok``
    false but not ``alive``: restarting the service would not bring it back.
    ``reasons`` says in words what is wrong.
    """

    ok: bool
    alive: bool
    camera_online: bool
    reasons: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return self.ok

    def to_dict(self) -> dict:
        return {"ok": self.ok, "alive": self.alive, "camera_online": self.camera_online,
                "reasons": list(self.reasons)}


class Pipeline:
    def __init__(self, source: FrameSource, classifier: Classifier, policy: ReviewPolicy, cfg: Config, *,
                 sinks: Sequence[Sink] = (), stop: threading.Event | None = None, collect: bool = False,
                 gating: bool | None = None):
        self.cfg = cfg
        self.source = source
        self.classifier = classifier
        self.stop_event = stop or threading.Event()
        poll = cfg.pipeline.queue_timeout_s
        self.frames = FrameQueue("live" if source.live else "replay", stop=self.stop_event, poll_s=poll)
        self.decisions = FrameQueue("replay", maxsize=32, stop=self.stop_event, poll_s=poll) if collect else None
        self.policy = policy
        self.sinks = SinkGroup(list(sinks))
        self.latency_ms = Percentiles()            # recent window of model results, for the status line
        self.run_latency_ms = LatencyHistogram()   # the whole run, every result
        self.model_latency_ms = LatencyHistogram()  # the whole run, results the model computed (not reused)
        self.items = 0
        self.flagged = 0
        self.outages = 0
        self.final_event: ItemEvent | None = None
        self.first_frame = threading.Event()
        self.first_result = threading.Event()
        self._retake_background = threading.Event()
        self._lock = threading.Lock()
        self._frame_cond = threading.Condition(self._lock)
        self._latest_frame: Frame | None = None
        self._latest_decision: Decision | None = None
        # Gating defaults on for live input only: replay is an audit and runs the model on every frame
        # unless asked (`replay --gating`).
        p = cfg.pipeline
        if gating is None:
            gating = p.motion_gating and source.live
        self.gate = MotionGate(p.motion_threshold, cfg.preprocess.roi, p.motion_max_reuse_s) if gating else None
        self.capture = CaptureThread(source, self.frames, self.stop_event, on_frame=self._on_frame,
                                     prepare=lambda f: classifier.preprocess([f.image]),
                                     outage_gap_s=cfg.review.outage_gap_s)
        self.worker = InferenceWorker(classifier, self.frames, self.stop_event, self._on_result,
                                      top_k=cfg.model.top_k, poll_s=poll, on_end=self._on_worker_end,
                                      gate=self.gate, batch_size=1 if source.live else p.replay_batch_size,
                                      on_marker=self._on_camera_lost)

    # ------------------------------------------------------------ thread callbacks

    def _on_frame(self, frame: Frame) -> None:
        with self._frame_cond:
            self._latest_frame = frame
            self._frame_cond.notify_all()
        self.first_frame.set()

    def _on_result(self, frame: Frame, result: InferenceResult) -> None:
        if self._retake_background.is_set():
            self._retake_background.clear()
            self.policy.set_background(frame.image)
            logger.info("background re-taken at frame %d", frame.frame_id)
        decision = self.policy.update(frame, result)
        self.run_latency_ms.add(result.latency_ms)
        if not result.reused:
            # A reused result is ready in ~3 ms: counting it would hide how slow the model is.
            self.latency_ms.add(result.latency_ms)
            self.model_latency_ms.add(result.latency_ms)
        self._count(decision.closed)
        if decision.outage is not None:
            self.outages += 1
        with self._lock:
            self._latest_decision = decision
        self.first_result.set()
        self.sinks(frame, decision)
        if self.decisions is not None:
            self.decisions.put((frame, decision))  # replay: blocks, never drops

    def _on_camera_lost(self, marker) -> None:
        closed, outage = self.policy.camera_lost(marker.reason)
        self._count(closed)
        if closed is not None:
            self.sinks.close_event(closed)   # written now: a kill during the outage loses nothing
        if outage is not None:
            self.sinks.outage(outage)

    def _on_worker_end(self) -> None:
        # Close the item still in front of the camera, so nothing is lost at shutdown or end of video.
        try:
            self.final_event = self.policy.close()
            self._count(self.final_event)
            if self.final_event is not None:
                self.sinks.close_event(self.final_event)
        except Exception:
            logger.exception("closing the open item event failed")
        finally:
            if self.decisions is not None:
                self.decisions.put_end()

    def _count(self, event: ItemEvent | None) -> None:
        if event is not None:
            self.items += 1
            self.flagged += int(event.review)

    # ------------------------------------------------------------ control

    def start(self) -> "Pipeline":
        self.worker.start()
        self.capture.start()
        return self

    def retake_background(self) -> None:
        """Use the next inferred frame as the empty-scene reference (the `b` key)."""
        self._retake_background.set()

    def stop(self) -> None:
        self.stop_event.set()

    def join(self, timeout: float | None = None) -> bool:
        """Wait for both threads; log any that did not stop in time. True when all stopped."""
        timeout = self.cfg.pipeline.shutdown_timeout_s if timeout is None else timeout
        deadline = time.monotonic() + timeout  # one budget for all threads: SIGTERM must end in seconds
        ok = True
        for thread in (self.worker, self.capture):
            if thread.ident is None:
                continue
            thread.join(max(0.0, deadline - time.monotonic()))
            if thread.is_alive():
                ok = False
                logger.error("%s thread did not stop within %.1f s", thread.name, timeout)
        return ok

    def shutdown(self) -> bool:
        self.stop()
        ok = self.join()
        self.sinks.close()
        return ok

    @property
    def finished(self) -> bool:
        return not self.worker.is_alive() and self.worker.ident is not None

    # ------------------------------------------------------------ what the modes read

    def latest(self) -> tuple[Frame | None, Decision | None]:
        with self._lock:
            return self._latest_frame, self._latest_decision

    def wait_frame(self, after_id: int | None, timeout: float) -> Frame | None:
        """The newest frame once it is newer than ``after_id`` (None on timeout)."""
        with self._frame_cond:
            self._frame_cond.wait_for(lambda: self._latest_frame is not None and (
                after_id is None or self._latest_frame.frame_id != after_id), timeout)
            frame = self._latest_frame
        return frame if frame is not None and (after_id is None or frame.frame_id != after_id) else None

    def status(self, paused: bool = False) -> Status:
        now = time.monotonic()
        p50 = self.latency_ms.get(50)
        return Status(camera_fps=self.capture.meter.rate(now), inference_fps=self.worker.meter.rate(now),
                      latency_ms=p50, dropped=self.frames.dropped, offline=not self.source.online,
                      paused=paused)

    def healthy(self, max_silence_s: float) -> bool:
        """What the watchdog pings on: ``health(max_silence_s).alive``."""
        return self.health(max_silence_s).alive

    def health(self, max_silence_s: float | None = None, *, now: float | None = None) -> Health:
        """Threads alive and looping, camera online, no sink failing for long (``serve.sink_unhealthy_after_s``).

        ``max_silence_s`` (default: 2 x ``source.stall_timeout_s``) is how long a thread may go
        without a loop iteration; capture may be quiet while its camera is offline.
        """
        now = time.monotonic() if now is None else now
        max_silence_s = 2 * self.cfg.source.stall_timeout_s if max_silence_s is None else max_silence_s
        reasons: list[str] = []
        alive = True
        started = self.worker.ident is not None
        online = self.source.online
        capture_died = started and not self.capture.is_alive() and not self.stop_event.is_set() and (
            self.capture.error is not None or self.source.live)  # a live source never ends by itself
        if capture_died:
            alive = False
            reasons.append("the capture thread has stopped" + (
                f" ({type(self.capture.error).__name__}: {self.capture.error})" if self.capture.error else ""))
        elif started and online and now - self.capture.heartbeat >= max_silence_s:
            alive = False
            reasons.append(f"no frame captured for {now - self.capture.heartbeat:.0f} s")
        if started and not self.worker.is_alive():
            alive = False
            reasons.append("the inference thread has stopped")
        elif started and now - self.worker.heartbeat >= max_silence_s:
            alive = False
            reasons.append(f"the inference thread has not looped for {now - self.worker.heartbeat:.0f} s")
        if not online:
            reasons.append(f"camera {self.source.name} is offline")
        grace = self.cfg.serve.sink_unhealthy_after_s
        for t in self.sinks.troubles():
            failing_for = max(0.0, now - t.failing_since)
            if failing_for >= grace:
                alive = False  # the watchdog lapses: systemd restarts the service
            reasons.append(f"sink {t.name} has been failing for {failing_for:.0f} s ({t.failures} "
                           f"failures; last: {t.last_error})")
        if self.sinks.lost_events:
            reasons.append(f"{self.sinks.lost_events} item event(s) were not written by every event sink")
        return Health(ok=not reasons, alive=alive, camera_online=online, reasons=tuple(reasons))

    @property
    def errors(self) -> int:
        """Inference failures plus sink failures: the stats line's `errors`."""
        return self.worker.errors + self.sinks.total_failures

    @property
    def model_share(self) -> float:
        """Share of processed frames that reached the model (1.0 without motion gating)."""
        w = self.worker
        return w.model_runs / w.processed if w.processed else 1.0

    def _model_share(self) -> str:
        return "every frame" if self.gate is None else f"{self.model_share:.0%} of frames"

    def stats_line(self, camera_online: bool | None = None) -> str:
        """``camera_online`` overrides the source's state (the final line, after the camera is closed)."""
        s = self.status()
        online = self.source.online if camera_online is None else camera_online
        errors = f"errors {self.errors}"
        if self.sinks.total_failures:
            errors += (f" (inference {self.worker.errors}, sinks {self.sinks.total_failures}; "
                       f"{self.sinks.lost_events} events lost)")
        return (f"camera {s.camera_fps:.1f} fps, inference {s.inference_fps:.1f} fps, latency p50 "
                f"{self.latency_ms.get(50):.0f} ms p95 {self.latency_ms.get(95):.0f} ms, dropped "
                f"{s.dropped}, model ran on {self._model_share()}, items {self.items} ({self.flagged} flagged), "
                f"outages {self.outages}, {errors}, camera {'online' if online else 'OFFLINE'}")
