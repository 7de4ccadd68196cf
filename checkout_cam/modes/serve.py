"""Serve: the headless service. Item events to a rotated JSON-lines log and to stderr (journald).

Speaks the systemd notify protocol when NOTIFY_SOCKET is set: READY=1 once the
model is loaded and the first frame is read, WATCHDOG=1 while the pipeline is
alive (a stalled pipeline stops the pings and systemd restarts it), STOPPING=1
on the way out. A dropped camera is not a reason to exit: the source retries.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time

from checkout_cam.config import Config
from checkout_cam.fleet.lane_stats import lane_stats
from checkout_cam.fleet.publisher import publisher_for_serve
from checkout_cam.modes import build_parts, stop_on_signals
from checkout_cam.notify import SystemdNotifier
from checkout_cam.pipeline import Pipeline
from checkout_cam.sinks import EventLogSink, StderrEventSink
from checkout_cam.sources import CameraSource

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


def run_serve(cfg: Config, *, stop: threading.Event | None = None, notifier: SystemdNotifier | None = None) -> int:
    t_start = time.monotonic()
    stop = stop or threading.Event()
    if threading.current_thread() is threading.main_thread():
        stop_on_signals(stop)
    notifier = notifier or SystemdNotifier()
    # A source that is a file is paced like a camera: serve is for live input.
    parts = build_parts(cfg, stop, realtime=True)
    # Monotonic capture times -> wall clock for the log, with one offset taken at start: times never go
    # back and durations are exact whatever NTP does; a clock set after start is not followed (restart).
    offset = time.time() - time.monotonic()
    log = EventLogSink(cfg.serve.log_path, max_bytes=cfg.serve.log_max_bytes, backups=cfg.serve.log_backups,
                       source=parts.source.name, model=parts.classifier.info(),
                       policy=parts.policy.policy_dict(), wall_clock_offset=offset,
                       identity=parts.identity)
    # MQTT (mqtt.host set): one more sink, committing to the durable outbox; resolutions go into the log.
    mqtt = publisher_for_serve(cfg, record_of=log.record, on_resolution=log.write_record)
    extra = [mqtt, OutageToMqtt(mqtt, log)] if mqtt else []
    pipeline = Pipeline(parts.source, parts.classifier, parts.policy, cfg,
                        sinks=[log, StderrEventSink()] + extra, stop=stop)
    if not isinstance(parts.source, CameraSource):
        logger.info("source %s is a file played in real time: event times are the wall clock (UTC) when each "
                    "frame was shown; video_t_start/video_t_end in each line give the place in the file",
                    parts.source.name)
    untrained = "" if parts.classifier.trained else " UNTRAINED model:"
    logger.info("serving%s %s on %s, events to %s", untrained, parts.classifier.name, parts.source.name,
                cfg.serve.log_path)
    # Unhealthy after this long without a loop iteration; the watchdog then lapses.
    max_silence = (notifier.watchdog_interval or 30.0) / 2 + cfg.source.stall_timeout_s
    with log, (mqtt or contextlib.nullcontext()):
        pipeline.start()
        try:
            while not stop.is_set() and not pipeline.first_frame.wait(0.5):
                if pipeline.healthy(max_silence):
                    notifier.watchdog()
            if not stop.is_set():
                notifier.ready(f"serving {parts.source.name}")
                logger.info("first frame read; ready")
            next_stats = time.monotonic() + cfg.serve.stats_interval_s
            first_result_logged = False
            while not stop.wait(0.1 if not first_result_logged else 0.5):
                if not first_result_logged and pipeline.first_result.is_set():
                    first_result_logged = True
                    logger.info("first result %.2f s after start", time.monotonic() - t_start)
                if pipeline.finished:  # only a file source ends by itself
                    logger.info("source %s ended", parts.source.name)
                    break
                if pipeline.healthy(max_silence):
                    notifier.watchdog()
                if time.monotonic() >= next_stats:
                    next_stats += cfg.serve.stats_interval_s
                    line = pipeline.stats_line()
                    if mqtt is not None:
                        line += f", {mqtt.stats_text()}"
                        mqtt.publish_stats(lane_stats(pipeline, parts.identity, mqtt))
                    logger.info("stats: %s", line)
                    notifier.status(line)
        finally:
            notifier.stopping("closing the open item and flushing the event log")
            final_stats = pipeline.stats_line()  # before shutdown closes the camera
            clean = pipeline.shutdown()
            logger.info("stopped (%s): %s", "clean" if clean else "some threads did not stop", final_stats)
    return 0
