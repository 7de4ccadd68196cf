"""Replay: every frame of a recorded video, in order, into an annotated video and an event log."""

from __future__ import annotations

import logging
import sys
import threading
import time
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from checkout_cam.config import Config
from checkout_cam.errors import CheckoutCamError
from checkout_cam.frame_queue import END, Empty, Stopped
from checkout_cam.modes import build_parts, stop_on_signals
from checkout_cam.pipeline import Pipeline
from checkout_cam.sinks import EventLogSink, StderrEventSink, VideoWriterSink

logger = logging.getLogger(__name__)


@dataclass
class ReplaySummary:
    frames: int
    items: int
    flagged: int
    errors: int
    seconds: float
    model_runs: int
    lost_events: int = 0  # item events an event sink failed to take: the run must not exit 0

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0

    def line(self) -> str:
        lost = f", {self.lost_events} events NOT WRITTEN" if self.lost_events else ""
        return (f"replay: {self.frames} frames, {self.items} items ({self.flagged} flagged for review), "
                f"{self.errors} frame errors{lost}, model ran on {self.model_runs}, {self.seconds:.1f} s, "
                f"{self.fps:.1f} frames/s")


def run_replay(cfg: Config, *, out: str | Path | None = None, log: str | Path | None = None,
               progress: bool = True, stop: threading.Event | None = None, gating: bool = False) -> ReplaySummary:
    stop = stop or threading.Event()
    if threading.current_thread() is threading.main_thread():
        stop_on_signals(stop)
    if "://" in cfg.source.uri or cfg.source.uri.isdigit():
        raise CheckoutCamError(f"replay needs a video file, got {cfg.source.uri!r}; use `live` or `serve` "
                               f"for cameras and streams")
    parts = build_parts(cfg, stop, realtime=False)
    source = parts.source
    with ExitStack() as stack:
        sinks = [StderrEventSink()]
        if log:
            sinks.append(stack.enter_context(EventLogSink(
                log, max_bytes=cfg.serve.log_max_bytes, backups=cfg.serve.log_backups, source=source.name,
                model=parts.classifier.info(), policy=parts.policy.policy_dict(), wall_clock_offset=None,
                identity=parts.identity)))
        writer = None
        if out:
            writer = stack.enter_context(VideoWriterSink(out, fps=source.fps, size=(source.width, source.height),
                                                         renderer=parts.renderer))
        pipeline = Pipeline(source, parts.classifier, parts.policy, cfg, sinks=sinks, stop=stop, collect=True,
                            gating=gating)
        # In a terminal the bar redraws often; in a log file (CI, journald) a line every few seconds.
        bar = stack.enter_context(tqdm(total=source.frame_count, desc="replay", unit="frame",
                                       disable=not progress, file=sys.stderr, dynamic_ncols=True,
                                       mininterval=0.2 if sys.stderr.isatty() else 5.0))
        t0 = time.monotonic()  # processing time: after the model is loaded, like the naive loop's clock
        pipeline.start()
        frames = 0
        reached_end = False
        try:
            while True:
                try:
                    item = pipeline.decisions.get(timeout=0.5)
                except Empty:
                    if not pipeline.worker.is_alive() and not len(pipeline.decisions):
                        break
                    continue
                except Stopped:
                    break
                if item is END:
                    reached_end = True
                    break
                frame, decision = item
                if writer is not None:
                    writer(frame, decision)
                frames += 1
                bar.update()
                bar.set_postfix(items=pipeline.items, flagged=pipeline.flagged, refresh=False)
        finally:
            pipeline.shutdown()
    if not reached_end:
        logger.warning("replay interrupted after %d frames", frames)
    return ReplaySummary(frames, pipeline.items, pipeline.flagged, pipeline.worker.errors, time.monotonic() - t0,
                         pipeline.worker.model_runs, pipeline.sinks.lost_events)
