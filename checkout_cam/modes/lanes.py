"""Several lanes in one `serve`: one process, one model, one batching inference engine.

``serve.lanes`` lists the lanes; each runs as its own ``Pipeline`` (the
single-lane machinery, unchanged) with the Config of ``config.lane_config``:
its own capture thread, latest-frame queue, motion gate, review policy, event
log (and MQTT publisher), stats. What they share is the model, behind the one
``InferenceEngine``: a lane's worker hands its frame to the engine and waits;
frames waiting from several lanes go into one model call.

- **A failing camera never slows the others.** A camera that drops is retried
  by its own capture thread with backoff; its worker just waits for frames,
  and the engine serves whoever has one.
- **Fairness.** Each lane has at most one frame in flight (its worker waits
  for the result, its latest-frame queue keeps only the newest frame
  meanwhile) and the engine takes the lanes' frames round-robin into each
  call, so a frame waits behind at most one model call: no lane can starve,
  however busy the others are.
- **Health.** The watchdog is pinged only while every lane's threads loop and
  the engine thread does (``LaneSet.health``); a lane whose camera is offline
  is reported, not restarted (restarting would not bring the camera back).
- **The web layer** (``serve --http``): one server, its /predict on the same
  engine (after the lanes' frames), and each lane its own live view, status
  and recent events (``/?lane=ID``, ``/lanes/ID/stream.mjpg``,
  ``/api/lanes/ID``); the page's overview shows every lane at once.
- **MQTT**: each lane publishes as a single lane does (its own outbox under
  ``mqtt.state_dir``/lane_id, events, outages and stats).
- **Per lane ROI.** Each lane crops its own scanning area before the model
  (``LaneModel``), in its capture thread as a single lane does.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from checkout_cam.config import Config, lane_config
from checkout_cam.engine import EngineClient, InferenceEngine
from checkout_cam.fleet.lane_stats import lane_stats
from checkout_cam.model import open_classifier
from checkout_cam.model.classifier import lane_threads
from checkout_cam.modes import lane_parts, serve_signals
from checkout_cam.modes.serve import lane_outputs
from checkout_cam.notify import SystemdNotifier
from checkout_cam.pipeline import Health, Pipeline
from checkout_cam.preprocess import Preprocessor
from checkout_cam.sinks import EventLogSink

logger = logging.getLogger(__name__)


class LaneModel(EngineClient):
    """A lane's handle on the shared model: the engine for inference, its own scanning area for
    preprocessing."""

    def __init__(self, engine: InferenceEngine, lane_id: str, roi):
        super().__init__(engine, lane_id)
        m = self.classifier.meta
        self._preprocess = Preprocessor(resize=m.resize_size, crop=m.input_size, mean=tuple(m.mean),
                                        std=tuple(m.std), roi=tuple(roi) if roi is not None else None)

    @property
    def preprocess(self):
        return self._preprocess


class ModelRate:
    """A sink that counts, per second of the run, the frames its lane processed and the results the
    model computed for them (gated, reused results are not model results)."""

    def __init__(self) -> None:
        self.start = time.monotonic()
        self.per_second: dict[int, list[int]] = {}   # second -> [processed, model results]
        self.name = "model rate"

    def __call__(self, frame, decision) -> None:
        r = decision.result
        if r.done:
            counts = self.per_second.setdefault(int(r.done - self.start), [0, 0])
            counts[0] += 1
            counts[1] += int(r.classification is not None and not r.reused)

    def moving(self) -> list[tuple[int, int]]:
        """(frames given a result, model results) in each whole second (the first and last are
        partial) in which the scene moved: the model ran more than the motion gate's once-a-second
        refresh (without gating, every second)."""
        seconds = [c for _, c in sorted(self.per_second.items())][1:-1]
        return [(processed, m) for processed, m in seconds if m >= 2]

    def close(self) -> None:
        pass


@dataclass
class Lane:
    lane_id: str
    cfg: Config
    pipeline: Pipeline
    log: EventLogSink
    mqtt: object | None = None
    rate: ModelRate = field(default_factory=ModelRate)
    first_result_logged: bool = False

    def summary(self, seconds: float) -> dict:
        """The lane's run in numbers (one JSON line at the end; the bench's `lanes` section reads it)."""
        p = self.pipeline
        captured = p.capture.meter.total
        moving = self.rate.moving()
        return {"lane_id": self.lane_id, "seconds": round(seconds, 1), "source": p.source.name,
                "captured": captured, "capture_fps": round(captured / seconds, 2) if captured and seconds else None,
                "processed": p.worker.processed, "model_runs": p.worker.model_runs,
                "model_results_per_s": round(p.worker.model_runs / seconds, 2) if seconds else None,
                # Each processed frame has a current result: the model's, or with gating the previous
                # one because the scanning area had not changed.
                "results_per_s_moving_median": _median([r for r, _ in moving]),
                "model_results_per_s_moving_median": _median([m for _, m in moving]),
                "moving_seconds": len(moving), "counted_seconds": max(0, len(self.rate.per_second) - 2),
                "latency_p50_ms": _r(p.run_latency_ms.get(50)), "latency_p95_ms": _r(p.run_latency_ms.get(95)),
                "model_latency_p50_ms": _r(p.model_latency_ms.get(50)),
                "model_latency_p95_ms": _r(p.model_latency_ms.get(95)),
                "dropped": p.frames.dropped, "items": p.items, "flagged": p.flagged, "errors": p.worker.errors,
                "gating": p.gate is not None, "online": p.source.online}


def _median(xs: list[int]) -> float | None:
    if not xs:
        return None
    s = sorted(xs)
    n = len(s)
    return float(s[n // 2]) if n % 2 else (s[n // 2 - 1] + s[n // 2]) / 2


def _r(v: float) -> float | None:
    return None if v != v else round(v, 1)


class LaneSet:
    """Every lane of one `serve`, around the one engine. A context manager: lanes and engine close in
    ``finally``."""

    def __init__(self, cfg: Config, stop: threading.Event, *, wall_clock_offset: float | None = None,
                 listen: tuple[str, int, str | None] | None = None):
        """``listen``: (host, port, token) of the web page and API (``serve --http``), or None."""
        self.cfg = cfg
        self.stop = stop
        self.classifier = open_classifier(cfg.model.path, threads=lane_threads(cfg.model.path, cfg.model.threads))
        # Up to one frame per lane in a call (a lane has one in flight); HTTP photos fill a call up to
        # http.max_batch, after the lanes' frames.
        self.engine = InferenceEngine(self.classifier, max_batch=max(cfg.http.max_batch, len(cfg.serve.lanes)),
                                      poll_s=cfg.pipeline.queue_timeout_s,
                                      shutdown_timeout_s=cfg.pipeline.shutdown_timeout_s, stop=stop)
        self.batch_sizes: dict[int, int] = {}
        self.engine.add_observer(self._count_batch)
        offset = time.time() - time.monotonic() if wall_clock_offset is None else wall_clock_offset
        self.lanes: list[Lane] = []
        clf = self.classifier
        self.web = None
        if listen is not None:
            from checkout_cam.web.service import LaneWeb
            self.web = LaneWeb(cfg, self.engine, listen)
        for lane in cfg.serve.lanes:
            lcfg = lane_config(cfg, lane)
            # A file stands in for a camera: paced at its fps (serve is for live input).
            parts = lane_parts(lcfg, clf, stop, realtime=True)
            out = lane_outputs(lcfg, parts, offset, self.web)
            rate = ModelRate()
            pipeline = Pipeline(parts.source, LaneModel(self.engine, lane.lane_id, lcfg.preprocess.roi), parts.policy,
                                lcfg, sinks=out.sinks() + [rate], stop=stop)
            self.lanes.append(Lane(lane.lane_id, lcfg, pipeline, out.log, out.mqtt, rate))

    def _count_batch(self, report) -> None:
        self.batch_sizes[report.images] = self.batch_sizes.get(report.images, 0) + 1

    def engine_healthy(self, max_silence_s: float) -> bool:
        """The engine thread is alive and looping (a model call in progress counts as looping)."""
        e = self.engine
        return e.is_alive() and (e.busy or time.monotonic() - e.heartbeat < max_silence_s)

    def engine_summary(self) -> dict:
        lane = self.engine.status()["lane"]
        return {**lane, "batch_sizes": dict(sorted(self.batch_sizes.items()))}

    def __enter__(self) -> "LaneSet":
        self._stack = contextlib.ExitStack()
        self._stack.__enter__()
        try:
            for lane in self.lanes:
                self._stack.enter_context(lane.log)
                if lane.mqtt is not None:
                    self._stack.enter_context(lane.mqtt)
            self.engine.warm_up()   # the first lane's first frame should not pay the model's setup
            self._stack.enter_context(self.engine)
            for lane in self.lanes:
                lane.rate.start = time.monotonic()
                lane.pipeline.start()
            if self.web is not None:
                self._stack.enter_context(self.web.serving({lane.lane_id: lane.pipeline for lane in self.lanes},
                                                           self.stop))
        except BaseException:
            self._stack.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc) -> None:
        try:
            self.shutdown()
        finally:
            self._stack.__exit__(*exc)

    def shutdown(self) -> bool:
        """Stop every lane (each closes its open item), then the engine. True when all stopped."""
        if getattr(self, "_shut", None) is not None:
            return self._shut
        self.stop.set()
        ok = True
        for lane in self.lanes:
            ok = lane.pipeline.shutdown() and ok
        self._shut = self.engine.close() and ok
        return self._shut

    def health(self, max_silence_s: float | None = None) -> tuple[Health, dict[str, Health]]:
        """The service's health: alive only while every lane's threads loop and the engine does."""
        per_lane = {lane.lane_id: lane.pipeline.health(max_silence_s) for lane in self.lanes}
        reasons = [f"{lid}: {r}" for lid, h in per_lane.items() for r in h.reasons]
        silence = max_silence_s if max_silence_s is not None else 2 * self.cfg.source.stall_timeout_s
        engine_ok = self.engine_healthy(silence)
        if not engine_ok:
            reasons.append("the inference engine has stopped looping")
        alive = engine_ok and all(h.alive for h in per_lane.values())
        online = all(h.camera_online for h in per_lane.values())
        return Health(ok=not reasons, alive=alive, camera_online=online, reasons=tuple(reasons)), per_lane

    def status_text(self, health: Health) -> str:
        offline = [lane.lane_id for lane in self.lanes if not lane.pipeline.source.online]
        head = f"{len(self.lanes)} lanes, " + (f"OFFLINE: {', '.join(offline)}" if offline else "all cameras online")
        problems = [r for r in health.reasons if "offline" not in r]
        return "; ".join([head, *problems])

    def publish_stats(self) -> None:
        """Each lane's stats to its MQTT ``stats`` topic (lanes without MQTT: nothing)."""
        for lane in self.lanes:
            if lane.mqtt is not None:
                lane.mqtt.publish_stats(lane_stats(lane.pipeline, lane.pipeline.policy.identity, lane.mqtt))

    def stats_lines(self) -> list[str]:
        lines = [f"{lane.lane_id}: {lane.pipeline.stats_line()}" + (f", {lane.mqtt.stats_text()}" if lane.mqtt else "")
                 for lane in self.lanes]
        e = self.engine_summary()
        lines.append(f"engine: {e['images']} images in {e['batches']} calls (sizes {e['batch_sizes']}), "
                     f"queue p95 {e['queue_ms_p95']} ms, call p50 {e['model_ms_p50']} ms")
        return lines


def _peak_rss_mb() -> float | None:
    with contextlib.suppress(OSError, AttributeError):
        m = re.search(r"VmHWM:\s+(\d+) kB", Path("/proc/self/status").read_text())
        return round(int(m.group(1)) / 1024, 1)
    return None


def run_lanes(cfg: Config, *, stop: threading.Event | None = None, notifier: SystemdNotifier | None = None,
              max_seconds: float | None = None, listen: tuple[str, int, str | None] | None = None) -> int:
    """`serve` with ``serve.lanes``: every lane in this process, until SIGTERM (or ``max_seconds``);
    ``listen``: the web page and API's (host, port, token), or None."""
    t_start = time.monotonic()
    stop = stop or threading.Event()
    reopen = serve_signals(stop)
    notifier = notifier or SystemdNotifier()
    lanes = LaneSet(cfg, stop, listen=listen)
    clf = lanes.classifier
    logger.info("serving %d lanes%s with %s (%s), one engine: %s", len(lanes.lanes),
                "" if clf.trained else " with an UNTRAINED model", clf.name, getattr(clf, "runtime", clf.meta.precision),
                ", ".join(f"{lane.lane_id} <- {lane.pipeline.source.name} -> {lane.cfg.serve.log_path}"
                          for lane in lanes.lanes))
    max_silence = (notifier.watchdog_interval or 30.0) / 2 + cfg.source.stall_timeout_s
    failed = False
    with lanes:
        notifier.ready(f"model {clf.name} loaded; {len(lanes.lanes)} lanes started")
        logger.info("model loaded; ready (%d lanes)", len(lanes.lanes))
        next_stats = time.monotonic() + cfg.serve.stats_interval_s
        any_result = False
        last_online: bool | None = None
        while not stop.wait(0.1):
            now = time.monotonic()
            if max_seconds is not None and now - t_start >= max_seconds:
                break
            if reopen.is_set():
                reopen.clear()
                for lane in lanes.lanes:
                    lane.log.reopen("SIGHUP")
            for lane in lanes.lanes:
                if not lane.first_result_logged and lane.pipeline.first_result.is_set():
                    lane.first_result_logged = True
                    logger.info("%s: first result %.2f s after start", lane.lane_id, now - t_start)
                    if not any_result:
                        any_result = True
                        logger.info("first result %.2f s after start", now - t_start)
            if all(lane.pipeline.finished for lane in lanes.lanes):   # only file sources end by themselves
                logger.info("every lane's source ended")
                break
            health, _ = lanes.health(max_silence)
            if health.alive:
                notifier.watchdog()
            if health.camera_online != last_online:
                last_online = health.camera_online
                notifier.status(lanes.status_text(health))
            if now >= next_stats:
                next_stats += cfg.serve.stats_interval_s
                for line in lanes.stats_lines():
                    logger.info("stats: %s", line)
                lanes.publish_stats()
                if not health.ok:
                    logger.warning("unhealthy: %s", "; ".join(health.reasons))
                notifier.status(lanes.status_text(health))
        notifier.stopping("closing the open items and flushing the event logs")
        seconds = time.monotonic() - t_start
        clean = lanes.shutdown()
        logger.info("stopped (%s)", "clean" if clean else "some threads did not stop")
        for line in lanes.stats_lines():
            logger.info("final stats: %s", line)
        rss = _peak_rss_mb()
        for lane in lanes.lanes:
            logger.info("lane summary %s", json.dumps({**lane.summary(seconds - (lane.rate.start - t_start)),
                                                        "peak_rss_mb": rss}))
            if lane.pipeline.capture.error is not None:
                logger.error("%s: capture from %s failed (%s)", lane.lane_id, lane.pipeline.source.name,
                             lane.pipeline.capture.error)
                failed = True
            if lane.pipeline.sinks.lost_events:
                logger.error("%s: %d item event(s) were not written by every event sink", lane.lane_id,
                             lane.pipeline.sinks.lost_events)
                failed = True
        logger.info("engine summary %s", json.dumps(lanes.engine_summary()))
    return 1 if failed else 0
