"""Where decisions go: the JSON-lines event log, log lines for journald, an annotated video.

A sink is any callable ``(frame, decision) -> None``. The pipeline calls each
sink once per frame, in order, with the most recent decision (None before the
first result), so the same decision, and the item event it closed, can arrive
for several frames: the event sinks write each closed event once.
``close_event`` takes the event ``ReviewPolicy.close()`` returns at shutdown.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
import time
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Callable, Iterable

import cv2
import numpy as np

from checkout_cam.errors import CheckoutCamError
from checkout_cam.frames import Frame
from checkout_cam.render import OverlayRenderer, Status, replay_now
from checkout_cam.review import Decision, ItemEvent, Outage, format_time
from checkout_cam.schema import ItemRecord, OutageRecord, RunIdentity

logger = logging.getLogger(__name__)

Sink = Callable[[Frame, "Decision | None"], None]

# A sink failing on every frame would log 30 tracebacks a second: repeat at most this often.
FAILURE_LOG_INTERVAL_S = 10.0


def sink_name(sink) -> str:
    return getattr(sink, "name", None) or getattr(sink, "__name__", None) or type(sink).__name__


class _OnceEach:
    """Remembers the last event handled, so an event repeated with its decision is handled once."""

    def __init__(self) -> None:
        self._last: ItemEvent | None = None

    def first_time(self, event: ItemEvent | None) -> bool:
        if event is None or event is self._last:
            return False
        self._last = event
        return True


class EventLogSink:
    """One JSON line per closed item event, flushed as written, rotated by size.

    ``events.jsonl`` grows to ``max_bytes`` (a single longer line still goes
    in whole), then becomes ``events.jsonl.1`` and older ones shift up to
    ``.N`` (``backups``); the oldest is deleted. With ``backups=0`` the log
    starts afresh and the lines before are lost (a warning says so).

    ``reopen()`` (serve calls it on SIGHUP, the logrotate convention) closes
    the file and opens ``path`` again; a log deleted or moved away while
    running is noticed before the next line and reopened too, so lines never
    go to a file nobody can see. A write that fails (disk full) raises, so the
    sink group counts it; the next line tries again on a fresh file handle.
    """

    def __init__(self, path: str | Path, *, max_bytes: int, backups: int, source: str, model: dict,
                 policy: dict, wall_clock_offset: float | None, identity: RunIdentity | None = None):
        self.path = Path(path)
        self.identity = identity or RunIdentity()
        self.name = f"event log {self.path}"
        self.max_bytes = max_bytes
        self.backups = backups
        self.source, self.model, self.policy = source, dict(model), dict(policy)
        self.wall_clock_offset = wall_clock_offset
        self.written = 0
        self._once = _OnceEach()
        self._last_outage: Outage | None = None
        # Item lines come from the inference thread, resolutions from MQTT's; serve's main thread reopens.
        self._lock = threading.Lock()
        self._closed = False
        self._file = self._open("ab")
        self._size = self._file.seek(0, os.SEEK_END)

    def _open(self, mode: str):
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            return open(self.path, mode)
        except (FileExistsError, NotADirectoryError):
            blocker = next((p for p in self.path.parents if p.exists() and not p.is_dir()), self.path.parent)
            raise CheckoutCamError(f"cannot open the event log {self.path}: {blocker} is a file, not a "
                                   f"folder; choose another path (serve.log_path in config.yaml, or --log)") from None
        except IsADirectoryError:
            raise CheckoutCamError(f"cannot open the event log {self.path}: it is a directory; give a file "
                                   f"name such as {self.path / 'events.jsonl'}") from None
        except OSError as exc:
            raise CheckoutCamError(f"cannot open the event log {self.path}: {exc.strerror or exc}; "
                                   f"choose a writable path (serve.log_path in config.yaml)") from None

    def reopen(self, why: str = "asked to") -> None:
        """Close the file and open ``path`` afresh (after logrotate moved it away)."""
        with self._lock:
            if self._closed:
                return
            self._reopen_locked(why)

    def _reopen_locked(self, why: str) -> None:
        if self._file is not None:
            try:
                self._file.close()
            except OSError as exc:  # what a failed flush left in the buffer is lost either way
                logger.warning("closing event log %s: %s", self.path, exc.strerror or exc)
        self._file = None
        self._file = self._open("ab")
        self._size = self._file.seek(0, os.SEEK_END)
        if self._size > 0:
            # A line torn by a failed write (disk full) must not swallow the next one.
            with open(self.path, "rb") as f:
                f.seek(-1, os.SEEK_END)
                if f.read(1) != b"\n":
                    self._file.write(b"\n")
                    self._size += 1
        logger.info("event log %s reopened (%s)", self.path, why)

    def _moved_away(self) -> bool:
        """True when ``path`` no longer names the open file (deleted, or renamed by a rotation)."""
        try:
            return os.stat(self.path).st_ino != os.fstat(self._file.fileno()).st_ino
        except FileNotFoundError:
            return True
        except (OSError, ValueError):
            return False

    def __enter__(self) -> "EventLogSink":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __call__(self, frame: Frame, decision: Decision | None) -> None:
        if decision is not None and self._once.first_time(decision.closed):
            self._write(decision.closed)
        if decision is not None and decision.outage is not None and decision.outage is not self._last_outage:
            self.outage(decision.outage)

    def close_event(self, event: ItemEvent | None) -> None:
        """Write an event closed outside a decision (ReviewPolicy.close() at shutdown, camera lost)."""
        if self._once.first_time(event):
            self._write(event)

    def outage(self, outage: Outage) -> None:
        """One ``outage`` line: at its start (``end`` null) when the source reports it, and when frames
        return (with ``end`` and ``duration_s``)."""
        self._last_outage = outage
        self.write_record(self.outage_record(outage))

    def outage_record(self, outage: Outage) -> OutageRecord:
        """The typed ``outage`` line for an outage (times as the item lines have them)."""
        f = self.wall_clock_offset
        return OutageRecord(lane_id=self.identity.lane_id, run_id=self.identity.run_id, source=self.source,
                            start=format_time(outage.start, f),
                            end=None if outage.end is None else format_time(outage.end, f),
                            duration_s=outage.duration_s, reason=outage.reason, last_frame=outage.last_frame,
                            item_closed=outage.item_closed)

    def record(self, event: ItemEvent) -> ItemRecord:
        """The typed line this log writes for an event (MQTT publishes the same object)."""
        return event.record(identity=self.identity, source=self.source, model=self.model, policy=self.policy,
                            wall_clock_offset=self.wall_clock_offset)

    def _write(self, event: ItemEvent) -> None:
        self._write_line(self.record(event).to_dict(),
                         f"event {event.label!r} (frames {event.frame_start}-{event.frame_end})")
        self.written += 1

    def write_record(self, record) -> None:
        """Another schema record (a ``resolution``, an ``outage``) as one line of this log."""
        self._write_line(record.to_dict(), f"{record.TYPE} line")

    def _write_line(self, data: dict, what: str) -> None:
        # allow_nan=False: a line that is not JSON is worse than an error the sink group counts.
        line = (json.dumps(data, ensure_ascii=False, allow_nan=False) + "\n").encode("utf-8")
        with self._lock:
            if self._closed:
                raise CheckoutCamError(f"event log {self.path} is closed; {what} not written")
            if self._file is None:
                self._reopen_locked("after a failed write")
            elif self._moved_away():
                logger.warning("event log %s was deleted or moved away while open; opening it again",
                               self.path)
                self._reopen_locked("it was moved away")
            if self._size > 0 and self._size + len(line) > self.max_bytes:
                self._rotate()
            try:
                self._file.write(line)
                # Flushed per line: `tail -f` and a crash both see every event written so far.
                self._file.flush()
            except OSError as exc:
                self._drop_file()
                raise CheckoutCamError(f"event log {self.path}: writing {what} failed: "
                                       f"{exc.strerror or exc}") from None
            self._size += len(line)

    def _drop_file(self) -> None:
        """Forget a file handle whose buffer holds a failed write, so it is not retried half-way."""
        f, self._file = self._file, None
        try:
            f.close()
        except OSError:
            pass

    def _rotate(self) -> None:
        self._file.close()
        if self.backups == 0:
            logger.warning("event log %s reached %d bytes and log_backups is 0: starting it afresh, "
                           "earlier events are dropped", self.path, self._size)
            self._file = self._open("wb")
        else:
            for i in range(self.backups - 1, 0, -1):
                older = self.path.with_name(f"{self.path.name}.{i}")
                if older.exists():
                    os.replace(older, self.path.with_name(f"{self.path.name}.{i + 1}"))
            os.replace(self.path, self.path.with_name(f"{self.path.name}.1"))
            logger.info("event log %s rotated (%d bytes)", self.path, self._size)
            self._file = self._open("ab")
        self._size = 0

    def close(self) -> None:
        with self._lock:
            self._closed = True
            if self._file is not None and not self._file.closed:
                try:
                    self._file.close()
                except OSError as exc:
                    logger.error("closing event log %s failed: %s", self.path, exc.strerror or exc)


def describe(event: ItemEvent) -> str:
    """One human line per item: ``item "Granny Smith" 87% frames 12-40 REVIEW(low_margin)``."""
    verdict = f"REVIEW({','.join(event.review_reasons)})" if event.review else "OK"
    return (f'item "{event.label}" {event.confidence * 100:.0f}% frames {event.frame_start}-{event.frame_end} '
            f"{verdict}")


class StderrEventSink:
    """Logs each closed item event as one INFO line (journald keeps it under the service)."""

    name = "event lines"

    def __init__(self, *, log: logging.Logger | None = None, level: int = logging.INFO):
        self.log = log or logger
        self.level = level
        self._once = _OnceEach()

    def __call__(self, frame: Frame, decision: Decision | None) -> None:
        if decision is not None and self._once.first_time(decision.closed):
            self.log.log(self.level, "%s", describe(decision.closed))
        if decision is not None and decision.outage is not None and decision.outage is not getattr(self, "_last_outage", None):
            self._last_outage = decision.outage
            self.outage(decision.outage)

    def close_event(self, event: ItemEvent | None) -> None:
        if self._once.first_time(event):
            self.log.log(self.level, "%s", describe(event))

    def outage(self, outage: Outage) -> None:
        if outage.end is None:
            self.log.warning("camera lost (%s) after frame %s", outage.reason, outage.last_frame)
        else:
            self.log.warning("camera outage of %.1f s (%s) after frame %s", outage.duration_s, outage.reason,
                             outage.last_frame)


class VideoWriterSink:
    """Writes every frame, annotated, as H.264 (libx264 through PyAV, yuv420p, MP4 with the index at
    the front), which browsers play; OpenCV's mp4v is MPEG-4 Part 2, which they do not.

    Each frame is stamped with its own time (``Frame.time`` from the first
    frame: the presentation timestamp for recorded video, capture time for
    cameras), so the file has the input's duration and a variable frame rate
    where the input has one; ``fps`` is only the nominal rate written in the
    header. Staleness is judged with ``replay_now``, so the file shows what was
    current when each frame was taken. ``status`` (optional) gives the status
    line per frame. Frames of another size are scaled to ``size`` (the first
    one's) and the change is logged once per new size.
    """

    TIME_BASE = Fraction(1, 90000)   # the usual video clock: exact for 25/30/50/60 and for ms
    CONTAINERS = (".mp4", ".mov", ".mkv")

    def __init__(self, path: str | Path, *, fps: float, size: tuple[int, int], renderer: OverlayRenderer,
                 status: Callable[[Frame], Status | None] | None = None, crf: int = 23, preset: str = "veryfast"):
        self.path = Path(path)
        self.name = f"video {self.path}"
        self.size = (int(size[0]), int(size[1]))
        self.renderer = renderer
        self.status = status
        self.frames = 0
        self._sizes_warned: set[tuple[int, int]] = set()
        self._t0: float | None = None
        self._last_pts = -1
        self._last_time = 0.0
        if not fps or fps != fps or fps <= 0:
            raise CheckoutCamError(f"cannot write video {self.path}: fps must be > 0, got {fps} "
                                   f"(the source did not report its frame rate; give one explicitly)")
        if self.size[0] <= 0 or self.size[1] <= 0:
            raise CheckoutCamError(f"cannot write video {self.path}: size must be positive, got {size}")
        if self.path.suffix.lower() not in self.CONTAINERS:
            raise CheckoutCamError(f"cannot write video {self.path}: use a {', '.join(self.CONTAINERS)} name "
                                   f"(H.264 with each frame's own timestamp; AVI cannot carry a variable rate)")
        self.fps = float(fps)
        # H.264 in 4:2:0 needs even dimensions: an odd last row/column is dropped.
        self._enc_size = (self.size[0] - self.size[0] % 2, self.size[1] - self.size[1] % 2)
        import av   # PyAV (libav*): only the annotated video needs it, so a camera lane never loads it
        self._av = av
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._out = av.open(str(self.path), "w", options={"movflags": "+faststart"})
        except (OSError, av.error.FFmpegError) as exc:
            raise CheckoutCamError(f"cannot write video {self.path}: {getattr(exc, 'strerror', None) or exc}; "
                                   f"check the folder is writable") from None
        try:
            stream = self._out.add_stream("libx264", rate=Fraction(self.fps).limit_denominator(1001))
            stream.width, stream.height = self._enc_size
            stream.pix_fmt = "yuv420p"
            stream.time_base = self.TIME_BASE
            stream.codec_context.time_base = self.TIME_BASE
            # Two encoder threads: the model needs the other cores more than the encoder does.
            stream.options = {"crf": str(crf), "preset": preset, "threads": "2"}
            self._stream = stream
        except Exception:
            self._out.close()
            raise

    def __enter__(self) -> "VideoWriterSink":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __call__(self, frame: Frame, decision: Decision | None) -> None:
        if self._out is None:
            raise CheckoutCamError(f"video {self.path} is closed; frame {frame.frame_id} not written")
        status = self.status(frame) if self.status is not None else None
        image = self.renderer.annotate(frame, decision, status, now=replay_now(frame, decision))
        if (image.shape[1], image.shape[0]) != self.size:
            got = (image.shape[1], image.shape[0])
            if got not in self._sizes_warned:
                logger.warning("frame %d is %dx%d but video %s is %dx%d (the first frame's size): frames of "
                               "this size are scaled to it", frame.frame_id, *got, self.path, *self.size)
                self._sizes_warned.add(got)
            image = cv2.resize(image, self.size, interpolation=cv2.INTER_AREA)
        if self._enc_size != self.size:
            image = image[: self._enc_size[1], : self._enc_size[0]]
        if self._t0 is None:
            self._t0 = frame.time
        t = frame.time - self._t0
        pts = max(int(round(t / self.TIME_BASE)), self._last_pts + 1)   # strictly increasing, as muxers need
        self._last_pts, self._last_time = pts, t
        out = self._av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="bgr24")
        out.pts, out.time_base = pts, self.TIME_BASE
        for packet in self._stream.encode(out):
            self._out.mux(packet)
        self.frames += 1

    def close(self) -> None:
        if self._out is None:
            return
        try:
            for packet in self._stream.encode(None):
                self._out.mux(packet)
        finally:
            self._out.close()
            self._out = None
        logger.info("wrote %s (%d frames, %dx%d, H.264, %.2f s)", self.path, self.frames, *self._enc_size,
                    self._last_time)


@dataclass(frozen=True)
class SinkTrouble:
    """A sink whose last call failed: since when, how often, and the last error in words."""
    name: str
    failing_since: float      # time.monotonic() of the first failure of the current streak
    failures: int             # in this run, all streaks
    last_error: str


class SinkGroup:
    """Calls each sink in turn; one that fails is logged (sink and frame) and the others go on.

    It also keeps the health record every kind of sink shares (the event log,
    an MQTT publisher, a video file): failures per sink, whether each is
    failing now and since when (``troubles()``; a success ends the streak),
    and ``lost_events``: item events that a sink which logs events
    (one with ``close_event``) failed to take.
    """

    def __init__(self, sinks: Iterable[Sink], clock: Callable[[], float] = time.monotonic):
        self.sinks = list(sinks)
        self.failures: dict[str, int] = {}
        self.lost_events = 0
        self._clock = clock
        self._last_logged: dict[str, float] = {}
        self._failing: dict[str, tuple[float, str]] = {}   # name -> (since, last error)
        self._lock = threading.Lock()
        self._once = _OnceEach()

    @property
    def total_failures(self) -> int:
        return sum(self.failures.values())

    def troubles(self) -> list[SinkTrouble]:
        with self._lock:
            return [SinkTrouble(name, since, self.failures.get(name, 0), err)
                    for name, (since, err) in self._failing.items()]

    def _succeeded(self, sink) -> None:
        name = sink_name(sink)
        if name in self._failing:
            with self._lock:
                since, _ = self._failing.pop(name)
            logger.warning("sink %s works again after %.1f s of failures", name, self._clock() - since)

    def __enter__(self) -> "SinkGroup":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _failed(self, sink, what: str, *, lost_event: bool = False) -> None:
        name = sink_name(sink)
        now = self._clock()
        exc = sys.exc_info()[1]
        with self._lock:
            count = self.failures[name] = self.failures.get(name, 0) + 1
            since = self._failing.get(name, (now, ""))[0]
            self._failing[name] = (since, f"{type(exc).__name__}: {exc}" if exc else "failed")
            if lost_event:
                self.lost_events += 1
        if count == 1:
            logger.exception("sink %s failed on %s; the other sinks go on", name, what)
            self._last_logged[name] = now
        elif now - self._last_logged.get(name, 0.0) >= FAILURE_LOG_INTERVAL_S:
            logger.error("sink %s failed again on %s (%d failures so far)", name, what, count, exc_info=True)
            self._last_logged[name] = now

    def __call__(self, frame: Frame, decision: Decision | None) -> None:
        new_event = decision is not None and self._once.first_time(decision.closed)
        for sink in self.sinks:
            try:
                sink(frame, decision)
            except Exception:
                # An event sink writes each event once, on the call that first carries it.
                self._failed(sink, f"frame {frame.frame_id}",
                             lost_event=new_event and hasattr(sink, "close_event"))
            else:
                if new_event or not hasattr(sink, "close_event"):  # an event sink works only on events
                    self._succeeded(sink)

    def close_event(self, event: ItemEvent | None) -> None:
        """Hand the event closed at shutdown to every sink that logs events."""
        if event is None or not self._once.first_time(event):
            return
        for sink in self.sinks:
            handler = getattr(sink, "close_event", None)
            if handler is None:
                continue
            try:
                handler(event)
            except Exception:
                self._failed(sink, "the final event", lost_event=True)
            else:
                self._succeeded(sink)

    def outage(self, outage: Outage) -> None:
        """Hand an outage the source reported to every sink that logs outages."""
        for sink in self.sinks:
            handler = getattr(sink, "outage", None)
            if handler is None:
                continue
            try:
                handler(outage)
            except Exception:
                self._failed(sink, "an outage")

    def close(self) -> None:
        for sink in self.sinks:
            closer = getattr(sink, "close", None)
            try:
                if closer is not None:
                    closer()
                elif hasattr(sink, "__exit__"):
                    sink.__exit__(None, None, None)
            except Exception:
                logger.exception("sink %s failed to close", sink_name(sink))
