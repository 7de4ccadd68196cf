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
from checkout_cam.engine import InferenceEngine
from checkout_cam.fleet.lane_stats import lane_stats
from checkout_cam.fleet.publisher import publisher_for_serve
from checkout_cam.modes import build_parts, stop_on_signals
from checkout_cam.notify import SystemdNotifier
from checkout_cam.pipeline import Pipeline
from checkout_cam.sinks import EventLogSink, StderrEventSink

logger = logging.getLogger(__name__)


def run_serve(cfg: Config, *, stop: threading.Event | None = None, notifier: SystemdNotifier | None = None,
              http: str | None = None) -> int:
    """``http``: HOST:PORT for the web page and API ("" = http.listen or the default); None = only if
    http.listen is set."""
    t_start = time.monotonic()
    stop = stop or threading.Event()
    listen = None
    if http is not None or cfg.http.listen is not None:
        from checkout_cam.web.server import resolve_listen
        listen = resolve_listen(cfg, http or None)  # refuse an exposed address before loading the model
    if threading.current_thread() is threading.main_thread():
        stop_on_signals(stop)
    notifier = notifier or SystemdNotifier()
    # A source that is a file is paced like a camera: serve is for live input.
    parts = build_parts(cfg, stop, realtime=True)
    offset = time.time() - time.monotonic()  # monotonic capture times -> wall clock for the log
    log = EventLogSink(cfg.serve.log_path, max_bytes=cfg.serve.log_max_bytes, backups=cfg.serve.log_backups,
                       source=parts.source.name, model=parts.classifier.info(),
                       policy=parts.policy.policy_dict(), wall_clock_offset=offset,
                       identity=parts.identity)
    # MQTT (mqtt.host set): one more sink, committing to the durable outbox; resolutions go into the log.
    mqtt = publisher_for_serve(cfg, record_of=log.record, on_resolution=log.write_record)
    # The lane's frames go through the one inference engine (HTTP photos share it, after the lane).
    engine = InferenceEngine.from_config(parts.classifier, cfg)
    web = None
    if listen is not None:
        from checkout_cam.web.service import LaneWeb
        web = LaneWeb(cfg, parts, engine, listen, wall_clock_offset=offset)
    pipeline = Pipeline(parts.source, engine.lane(parts.identity.lane_id), parts.policy, cfg,
                        sinks=[log, StderrEventSink()] + ([mqtt] if mqtt else []) + ([web.feed] if web else []),
                        stop=stop)
    untrained = "" if parts.classifier.trained else " UNTRAINED model:"
    logger.info("serving%s %s on %s, events to %s", untrained, parts.classifier.name, parts.source.name,
                cfg.serve.log_path)
    # Unhealthy after this long without a loop iteration; the watchdog then lapses.
    max_silence = (notifier.watchdog_interval or 30.0) / 2 + cfg.source.stall_timeout_s
    with log, (mqtt or contextlib.nullcontext()), engine, \
            (web.serving(pipeline, stop) if web else contextlib.nullcontext()):
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
