"""Decoding a recorded video with each frame's own presentation time, and an account of the damage.

Why PyAV (libavformat/libavcodec) and not ``cv2.VideoCapture``: measured on
box.mp4, cup.mp4, a VFR clip and an AVI whose header says 50 fps and twice
the frames it holds (``scripts/frame_times.py`` makes them and prints this):
OpenCV's ``CAP_PROP_POS_MSEC`` gives the same timestamps as PyAV on all four,
and a frame counter over the header fps is wrong by up to 4 s on the AVI and
1.3 s on the VFR clip. What OpenCV cannot do is the rest of an honest read:
its ``read()`` ends the video at the first packet that fails to decode (224 of
429 decodable frames of a box.mp4 with 100 KiB damaged), it cannot say how many
packets the file held, and it scales a mid-stream resolution change to the
first size without telling. PyAV decodes packet by packet, so a bad packet is
skipped and counted, as the ``ffmpeg`` tool does, and each frame keeps its size.

Timestamps: box.mp4's decoder delivers frames in display order but with the
packet timestamps shuffled (0, 0.101, 0.067, 0.134, 0.034 s ...; OpenCV gives the
same). Frames leave the decoder in presentation order, so the i-th frame out
gets the i-th smallest timestamp seen, over a look-ahead of ``REORDER_DEPTH``
frames: on box.mp4 that gives 0, 0.034, 0.067 ... and changes nothing on
files whose timestamps are already in order. A timestamp that goes backwards
even so (a concatenated stream restarting its clock) continues the timeline one
typical frame interval after the last frame and is logged as a discontinuity.
"""

from __future__ import annotations

import heapq
import logging
from collections import deque
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Iterator

import av
import numpy as np

from checkout_cam.errors import CheckoutCamError

logger = logging.getLogger(__name__)

# Frames held back to put shuffled timestamps in order (H.264 reorders at most 16; box.mp4 needs 4).
REORDER_DEPTH = 8
# How many individual damaged packets are logged before only the count goes on.
DAMAGE_LOG_LIMIT = 5

av.logging.set_level(None)  # libav's own stderr chatter; damage is counted and logged here instead


@dataclass
class DecodeReport:
    """What a pass over the file found: the figures replay prints and judges ``partial`` by."""

    packets: int = 0                 # non-empty video packets the demuxer gave (what the file holds)
    decoded: int = 0                 # frames delivered
    damaged: int = 0                 # packets that failed to decode and were skipped
    ended_early: bool = False        # the stream stopped well before its stated duration
    last_time: float | None = None   # seconds, the last delivered frame
    duration: float | None = None    # seconds, as the container states it
    size_changes: list[tuple[int, tuple[int, int], tuple[int, int]]] = field(default_factory=list)
    discontinuities: int = 0
    demux_error: str | None = None

    @property
    def partial(self) -> bool:
        """Fewer frames than the file holds, or a stream that ended early."""
        return self.damaged > 0 or self.ended_early or self.demux_error is not None

    def describe(self) -> str:
        parts = [f"decoded {self.decoded} of {self.packets} frames in the file"]
        if self.damaged:
            parts.append(f"{self.damaged} undecodable frames skipped")
        if self.ended_early:
            parts.append(f"the stream ended at {self.last_time or 0:.2f} s of a stated {self.duration:.2f} s")
        if self.demux_error:
            parts.append(f"reading stopped: {self.demux_error}")
        if self.size_changes:
            parts.append(f"{len(self.size_changes)} resolution change(s)")
        return ", ".join(parts)


class VideoFile:
    """One open video file: stream facts, and ``frames()`` yielding (BGR image, seconds) in order."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        try:
            self._container = av.open(str(self.path))
        except (av.error.FFmpegError, OSError) as exc:
            raise CheckoutCamError(f"{self.path}: cannot open as video (unsupported format or corrupt): "
                                   f"{exc}") from None
        if not self._container.streams.video:
            self._container.close()
            raise CheckoutCamError(f"{self.path}: cannot open as video: the file has no video stream")
        self._stream = stream = self._container.streams.video[0]
        stream.thread_type = "AUTO"  # frame threads: decoding keeps pace with the model
        ctx = stream.codec_context
        self.width, self.height = int(ctx.width), int(ctx.height)
        if self.width <= 0 or self.height <= 0:
            self._container.close()
            raise CheckoutCamError(f"{self.path}: cannot open as video: no frame size in the stream")
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
        self.fps = float(rate) if rate and 0 < float(rate) < 1000 else None   # stated, for information
        self.frame_count = int(stream.frames) or None                        # stated, may be wrong
        if stream.duration is not None and stream.time_base is not None:
            self.duration = float(stream.duration * stream.time_base)
        elif self._container.duration:
            self.duration = self._container.duration / av.time_base
        else:
            self.duration = None
        self.report = DecodeReport(duration=self.duration)

    def close(self) -> None:
        if self._container is not None:
            self._container.close()
            self._container = None

    # ------------------------------------------------------------ decoding

    def _decoded(self) -> Iterator[av.VideoFrame]:
        """Every frame that decodes, skipping (and counting) packets that do not."""
        r, stream = self.report, self._stream
        try:
            for packet in self._container.demux(stream):
                if packet.size == 0 and packet.pts is None and packet.dts is None:
                    flush = True   # the demuxer's end-of-stream packet: drain the decoder
                elif packet.size == 0:
                    continue       # AVI's empty "skip" chunks hold no frame
                else:
                    flush = False
                    r.packets += 1
                try:
                    frames = packet.decode()
                except av.error.EOFError:
                    return
                except av.error.FFmpegError as exc:
                    r.damaged += 1
                    if r.damaged <= DAMAGE_LOG_LIMIT:
                        t = float(packet.pts * stream.time_base) if packet.pts is not None else None
                        logger.warning("%s: frame packet %d (%s) does not decode, skipped: %s", self.path,
                                       r.packets, f"at {t:.3f} s" if t is not None else "no timestamp", exc)
                    elif r.damaged == DAMAGE_LOG_LIMIT + 1:
                        logger.warning("%s: more undecodable frames; counting them without logging each",
                                       self.path)
                    continue
                yield from frames
                if flush:
                    return
        except av.error.FFmpegError as exc:   # the container itself gave out (truncated, garbage)
            r.demux_error = str(exc)
            logger.warning("%s: reading stopped after %d frames: %s", self.path, r.packets, exc)

    def frames(self) -> Iterator[tuple[np.ndarray, float]]:
        """(BGR uint8 image, presentation time in seconds from the file's first frame), in order."""
        r = self.report
        tb = self._stream.time_base or Fraction(1, 1000)
        images: deque[tuple[np.ndarray, float | None]] = deque()
        stamps: list[float] = []
        first: float | None = None
        last: float | None = None
        step = 1.0 / self.fps if self.fps else 1 / 30
        size = (self.width, self.height)
        offset = 0.0

        def emit() -> tuple[np.ndarray, float]:
            nonlocal first, last, offset, step
            image, _ = images.popleft()
            if not stamps:       # a frame without any timestamp: one interval after the last
                t = last + step if last is not None else 0.0
            else:
                raw = heapq.heappop(stamps)
                if first is None:
                    first = raw
                t = raw - first + offset
                if last is not None and t <= last:
                    # Still backwards after reordering: a restarted clock. Continue the timeline.
                    r.discontinuities += 1
                    logger.warning("%s: timestamp went back from %.3f to %.3f s; continuing at %.3f s",
                                   self.path, last, t, last + step)
                    offset += last + step - t
                    t = last + step
            if last is not None and 0 < t - last < 1.0:
                step = t - last   # the stream's own recent interval, for frames without a timestamp
            last = t
            return image, t

        for frame in self._decoded():
            w, h = frame.width, frame.height
            if (w, h) != size:
                logger.warning("%s: frame %d changes size from %dx%d to %dx%d; each frame is processed in its "
                               "own size", self.path, r.decoded + len(images), *size, w, h)
                r.size_changes.append((r.decoded + len(images), size, (w, h)))
                size = (w, h)
            ts = frame.pts if frame.pts is not None else frame.dts
            if ts is not None:
                heapq.heappush(stamps, float(ts * tb))
            images.append((frame.to_ndarray(format="bgr24"), None))
            if len(images) > REORDER_DEPTH:
                image, t = emit()
                r.decoded += 1
                r.last_time = t
                yield image, t
        while images:
            image, t = emit()
            r.decoded += 1
            r.last_time = t
            yield image, t
        r.damaged = max(r.damaged, r.packets - r.decoded)   # packets the decoder silently gave nothing for
        if self.duration and r.last_time is not None and r.last_time + 2 * step + 0.5 < self.duration:
            r.ended_early = True
        if r.decoded == 0 and r.packets == 0 and self.duration:
            r.ended_early = True
