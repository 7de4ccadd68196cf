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
    video_seconds: float = 0.0
    decode: str = ""            # the decoder's account (VideoFile DecodeReport.describe())
    partial: bool = False       # fewer frames than the file holds, or the stream ended early
    outages: int = 0

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0

    def line(self) -> str:
        lost = f", {self.lost_events} events NOT WRITTEN" if self.lost_events else ""
        return (f"replay: {self.frames} frames, {self.items} items ({self.flagged} flagged for review), "
                f"{self.errors} frame errors{lost}, model ran on {self.model_runs}, {self.seconds:.1f} s, "
                f"{self.fps:.1f} frames/s; {self.video_seconds:.2f} s of video"
                + (f", {self.outages} outage(s)" if self.outages else "")
                + (f"; PARTIAL: {self.decode}" if self.partial else ""))


def check_log_path(log: str | Path, append: bool) -> None:
    """An existing, non-empty event log is refused unless ``append``: two audits in one file are only
    told apart by run_id, and overwriting one by accident loses it."""
    path = Path(log)
    if not append and path.exists() and path.stat().st_size > 0:
        raise CheckoutCamError(f"event log {path} already exists; give a new --log path, or --append to add "
                               f"this run to it (each line carries its run_id)")


def run_replay(cfg: Config, *, out: str | Path | None = None, log: str | Path | None = None,
               progress: bool = True, stop: threading.Event | None = None, gating: bool = False,
               append: bool = False) -> ReplaySummary:
    stop = stop or threading.Event()
    if threading.current_thread() is threading.main_thread():
        stop_on_signals(stop)
    if "://" in cfg.source.uri or cfg.source.uri.isdigit():
        raise CheckoutCamError(f"replay needs a video file, got {cfg.source.uri!r}; use `live` or `serve` "
                               f"for cameras and streams")
    if log:
        check_log_path(log, append)
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
        # Progress in video seconds: a header's frame count can be wrong (an AVI claiming twice its frames),
        # its duration far less often. In a terminal the bar redraws often; in a log file a line every 5 s.
        duration = getattr(source, "duration", None)
        bar = stack.enter_context(tqdm(total=round(duration, 2) if duration else None, desc="replay", unit="s",
                                       disable=not progress, file=sys.stderr, dynamic_ncols=True,
                                       bar_format="{l_bar}{bar}| {n:.1f}/{total_fmt} s of video [{elapsed}<{remaining}{postfix}]"
                                       if duration else None,
                                       mininterval=0.2 if sys.stderr.isatty() else 5.0))
        t0 = time.monotonic()  # processing time: after the model is loaded, like the naive loop's clock
        pipeline.start()
        frames = 0
        video_seconds = 0.0
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
                if frame.video_time is not None:
                    bar.update(max(0.0, round(frame.video_time - video_seconds, 6)))
                    video_seconds = frame.video_time
                else:
                    bar.update()
                bar.set_postfix(items=pipeline.items, flagged=pipeline.flagged, refresh=False)
        finally:
            pipeline.shutdown()
    if not reached_end:
        logger.warning("replay interrupted after %d frames", frames)
    report = getattr(source, "report", None)
    partial = bool(report is not None and report.partial and reached_end)
    if partial:
        logger.warning("%s is damaged or incomplete: %s", source.name, report.describe())
    return ReplaySummary(frames, pipeline.items, pipeline.flagged, pipeline.worker.errors, time.monotonic() - t0,
                         pipeline.worker.model_runs, pipeline.sinks.lost_events, video_seconds=video_seconds,
                         decode=report.describe() if report is not None else "", partial=partial,
                         outages=getattr(pipeline, "outages", 0))
