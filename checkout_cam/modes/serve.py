"""Serve: the headless service. Item events to a rotated JSON-lines log and to stderr (journald).

Speaks the systemd notify protocol when NOTIFY_SOCKET is set: READY=1 once the
model is loaded and the pipeline started, whether or not the camera is there
yet (an unplugged camera is a state shown in STATUS=, not a failed start:
systemd would otherwise restart-loop the service, reloading the model each
time); WATCHDOG=1 while ``Pipeline.health().alive`` (a stalled thread, or a
sink failing for longer than ``serve.sink_unhealthy_after_s``, stops the pings
and systemd restarts it); STATUS= with the camera's state, the health reasons
and the stats; STOPPING=1 on the way out. SIGHUP reopens the event log (the
logrotate convention). A run in which an item event could not be written
exits 1, never 0.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from checkout_cam.config import Config
from checkout_cam.engine import InferenceEngine
from checkout_cam.fleet.lane_stats import lane_stats
from checkout_cam.fleet.publisher import MqttPublisher, publisher_for_serve
from checkout_cam.modes import build_parts, serve_signals
from checkout_cam.notify import SystemdNotifier
from checkout_cam.pipeline import Pipeline
from checkout_cam.sinks import EventLogSink, StderrEventSink
from checkout_cam.sources import CameraSource

if TYPE_CHECKING:
    from checkout_cam.web.lane import LaneFeed
    from checkout_cam.web.service import LaneWeb

logger = logging.getLogger(__name__)


class OutageToMqtt:
    """Each outage line of the event log also goes to MQTT's ``outage`` topic (through the outbox): at
    its start when the camera is lost, and when frames return."""

    name = "mqtt outages"

    def __init__(self, mqtt, log: EventLogSink):
        self.mqtt, self.log = mqtt, log
        self._last = None

    def __call__(self, frame, decision) -> None:
        if decision is not None and decision.outage is not None and decision.outage is not self._last:
            self.outage(decision.outage)

    def outage(self, outage) -> None:
        self._last = outage
        self.mqtt.publish_record("outage", self.log.outage_record(outage))


@dataclass
class LaneOutputs:
    """Where one lane's decisions go in `serve`: its event log, its MQTT publisher (mqtt.host set) with
    the outages beside it, and its web feed (--http); ``sinks()`` for its Pipeline."""

    log: EventLogSink
    mqtt: MqttPublisher | None = None
    feed: LaneFeed | None = None

    def sinks(self) -> list:
        extra = [self.mqtt, OutageToMqtt(self.mqtt, self.log)] if self.mqtt else []
        return [self.log, StderrEventSink(), *extra] + ([self.feed] if self.feed else [])


def lane_outputs(cfg: Config, parts, wall_clock_offset: float, web: "LaneWeb | None" = None) -> LaneOutputs:
    """The outputs of one lane (``cfg``: its config; ``parts``: its source, policy, overlay, identity)."""
    log = EventLogSink(cfg.serve.log_path, max_bytes=cfg.serve.log_max_bytes, backups=cfg.serve.log_backups,
                       source=parts.source.name, model=parts.classifier.info(),
                       policy=parts.policy.policy_dict(), wall_clock_offset=wall_clock_offset,
                       identity=parts.identity)
    # MQTT: one more sink, committing to the durable outbox; resolutions go into the log.
    mqtt = publisher_for_serve(cfg, record_of=log.record, on_resolution=log.write_record)
    feed = None
    if web is not None:
        # The attendant's answers (MQTT) show on the live picture and in the API.
        feed = web.add_lane(parts.identity, source=parts.source.name, policy=parts.policy, renderer=parts.renderer,
                            wall_clock_offset=wall_clock_offset,
                            resolutions=mqtt.recent_resolution if mqtt else None)
    return LaneOutputs(log, mqtt, feed)


def status_text(pipeline: Pipeline, health=None) -> str:
    """The STATUS= line: camera state first (what `systemctl status` readers look for), then why, then stats."""
    health = health or pipeline.health()
    camera = "camera online" if health.camera_online else f"camera {pipeline.source.name} OFFLINE (retrying)"
    problems = [r for r in health.reasons if "offline" not in r]
    return "; ".join([camera, *problems, pipeline.stats_line()])


def run_serve(cfg: Config, *, stop: threading.Event | None = None, notifier: SystemdNotifier | None = None,
              parts=None, http: str | None = None) -> int:
    """``http``: HOST:PORT for the web page and API ("" = http.listen or the default); None = only if
    http.listen is set."""
    t_start = time.monotonic()
    listen = None
    if http is not None or cfg.http.listen is not None:
        from checkout_cam.web.server import resolve_listen
        listen = resolve_listen(cfg, http or None)  # refuse an exposed address before loading the model
    if cfg.serve.lanes and parts is None:   # several lanes, one model: modes/lanes.py
        from checkout_cam.modes.lanes import run_lanes
        return run_lanes(cfg, stop=stop, notifier=notifier, listen=listen)
    stop = stop or threading.Event()
    reopen = serve_signals(stop)
    notifier = notifier or SystemdNotifier()
    # A source that is a file is paced like a camera: serve is for live input.
    parts = parts or build_parts(cfg, stop, realtime=True, lane=True)
    # Monotonic capture times -> wall clock for the log, with one offset taken at start: times never go
    # back and durations are exact whatever NTP does; a clock set after start is not followed (restart).
    offset = time.time() - time.monotonic()
    # The lane's frames go through the one inference engine (HTTP photos share it, after the lane).
    engine = InferenceEngine.from_config(parts.classifier, cfg)
    web = None
    if listen is not None:
        from checkout_cam.web.service import LaneWeb
        web = LaneWeb(cfg, engine, listen)
    out = lane_outputs(cfg, parts, offset, web)
    log, mqtt = out.log, out.mqtt
    pipeline = Pipeline(parts.source, engine.lane(parts.identity.lane_id), parts.policy, cfg, sinks=out.sinks(),
                        stop=stop)
    if not isinstance(parts.source, CameraSource):
        logger.info("source %s is a file played in real time: event times are the wall clock (UTC) when each "
                    "frame was shown; video_t_start/video_t_end in each line give the place in the file",
                    parts.source.name)
    untrained = "" if parts.classifier.trained else " UNTRAINED model:"
    logger.info("serving%s %s on %s, events to %s", untrained, parts.classifier.name, parts.source.name,
                cfg.serve.log_path)
    # Unhealthy after this long without a loop iteration; the watchdog then lapses.
    max_silence = (notifier.watchdog_interval or 30.0) / 2 + cfg.source.stall_timeout_s
    with log, (mqtt or contextlib.nullcontext()), engine, \
            (web.serving({parts.identity.lane_id: pipeline}, stop) if web else contextlib.nullcontext()):
        pipeline.start()
        final_stats = ""
        try:
            # The model is loaded and the threads run: ready, camera or not (STATUS= says which).
            notifier.ready(f"model {parts.classifier.name} loaded; waiting for camera {parts.source.name}")
            logger.info("model loaded; ready (camera %s: %s)", parts.source.name,
                        "waiting for the first frame" if not pipeline.first_frame.is_set() else "online")
            next_stats = time.monotonic() + cfg.serve.stats_interval_s
            first_frame_logged = first_result_logged = False
            last_online: bool | None = None
            while not stop.wait(0.1 if not first_result_logged else 0.5):
                if reopen.is_set():
                    reopen.clear()
                    log.reopen("SIGHUP")
                if not first_frame_logged and pipeline.first_frame.is_set():
                    first_frame_logged = True
                    logger.info("first frame read %.2f s after start", time.monotonic() - t_start)
                if not first_result_logged and pipeline.first_result.is_set():
                    first_result_logged = True
                    logger.info("first result %.2f s after start", time.monotonic() - t_start)
                if pipeline.finished:  # only a file source ends by itself
                    logger.info("source %s ended", parts.source.name)
                    break
                health = pipeline.health(max_silence)
                if health.alive:
                    notifier.watchdog()
                if health.camera_online != last_online:  # tell systemd at once, not at the next stats line
                    last_online = health.camera_online
                    notifier.status(status_text(pipeline, health))
                if time.monotonic() >= next_stats:
                    next_stats += cfg.serve.stats_interval_s
                    line = pipeline.stats_line()
                    if mqtt is not None:
                        line += f", {mqtt.stats_text()}"
                        mqtt.publish_stats(lane_stats(pipeline, parts.identity, mqtt))
                    logger.info("stats: %s", line)
                    if not health.ok:
                        logger.warning("unhealthy: %s", "; ".join(health.reasons))
                    notifier.status(status_text(pipeline, health))
        finally:
            notifier.stopping("closing the open item and flushing the event log")
            online = parts.source.online  # before shutdown closes the camera
            clean = pipeline.shutdown()
            final_stats = pipeline.stats_line(camera_online=online)  # after: counts the item closed at shutdown
            logger.info("stopped (%s): %s", "clean" if clean else "some threads did not stop", final_stats)
    if pipeline.capture.error is not None:
        # A live source never ends by itself: a capture thread that died is not a clean stop.
        logger.error("capture from %s failed (%s: %s); exiting with status 1", parts.source.name,
                     type(pipeline.capture.error).__name__, pipeline.capture.error)
        return 1
    lost = pipeline.sinks.lost_events
    if lost:
        logger.error("%d item event(s) were not written by every event sink (see the errors above); "
                     "exiting with status 1", lost)
        return 1
    return 0
