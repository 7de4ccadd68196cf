"""Where frames come from: video files, cameras and network streams, as iterators of Frame.

A source releases its capture when iteration ends or ``close()`` is called.
Live sources (cameras, streams, files with ``realtime``) never end on their
own because the camera dropped: they log it, report ``online = False``, and
reopen with backoff until the stop event is set.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
import threading
import time
from abc import ABC, abstractmethod
from pathlib import Path
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, ClassVar, Iterator
from urllib.parse import urlsplit

import cv2

from checkout_cam.errors import CheckoutCamError
from checkout_cam.frames import Frame

if TYPE_CHECKING:   # PyAV (libav*) loads only with a file source: a camera lane never needs it
    from checkout_cam.video_file import DecodeReport, VideoFile

logger = logging.getLogger(__name__)

# While a camera is away the backoff between full reopen attempts grows to reconnect_max_s; a cheap
# probe (is /dev/videoN there, does the stream's port accept a connection) runs this often meanwhile,
# so a camera that comes back is reopened within about this long whatever the backoff.
PROBE_INTERVAL_S = 1.0
DEFAULT_PORTS = {"rtsp": 554, "rtsps": 322, "http": 80, "https": 443, "rtmp": 1935}


def quiet_video_backends() -> None:
    """OpenCV and FFmpeg print ~12 lines per failed camera open, and FFmpeg's h264 decoder warns on
    ordinary files; under journald, with a retry every 30 s, that buries the product's own log.
    Our own lines say what failed. Errors stay; a user's OPENCV_LOG_LEVEL / OPENCV_FFMPEG_LOGLEVEL
    wins, and -vv (debug logging) keeps the backends' warnings for diagnosis.
    """
    if logging.getLogger("checkout_cam").isEnabledFor(logging.DEBUG):
        return
    # FFmpeg's av_log level, read when OpenCV first initialises its FFmpeg backend: AV_LOG_QUIET.
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")
    if "OPENCV_LOG_LEVEL" not in os.environ:
        try:
            cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)
        except AttributeError:  # an OpenCV build without cv2.utils.logging
            os.environ["OPENCV_LOG_LEVEL"] = "ERROR"


@dataclass(frozen=True)
class CameraLost:
    """Put in the frame stream when a live source loses its camera, so the item in view is closed at
    once (a kill during the outage must not lose it). Never dropped by the live frame queue."""

    reason: str
    sticky: ClassVar[bool] = True


class FrameSource(ABC):
    """An iterator of Frames. ``live`` sources deliver at their own pace and may drop.

    ``on_offline`` (set by the capture thread) is called with a reason when a
    live source that was delivering loses its camera."""

    name: str = "source"
    live: bool = False
    fps: float | None = None
    frame_count: int | None = None  # known only for files
    online: bool = True
    on_offline: Callable[[str], None] | None = None

    @abstractmethod
    def __iter__(self) -> Iterator[Frame]: ...

    def close(self) -> None:
        """Release the capture; safe to call twice."""

    def __enter__(self) -> "FrameSource":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _open_video_file(path: Path) -> "VideoFile":
    from checkout_cam.video_file import VideoFile   # PyAV comes in here, with the first file source
    return VideoFile(path)


class VideoFileSource(FrameSource):
    """A recorded video. Replay: every decodable frame, as fast as it decodes.
    ``realtime``: paced by the frames' own timestamps, like a camera (frames are
    not waited for: a slow consumer makes the frame queue drop, as with a camera).

    ``Frame.video_time`` is each frame's presentation timestamp in seconds from
    the first frame (``checkout_cam.video_file`` says how, and why PyAV);
    frames that fail to decode are skipped and counted in ``report``.
    """

    def __init__(self, path: str | Path, *, realtime: bool = False, stop: threading.Event | None = None,
                 loop: bool = False):
        self.path = Path(path)
        if not self.path.exists():
            raise CheckoutCamError(f"video file not found: {self.path}")
        self.name = str(path)
        self.live = realtime
        self.loop = loop
        self._stop = stop or threading.Event()
        self._cap: VideoFile | None = _open_video_file(self.path)
        self.fps = self._cap.fps or 30.0        # the stated rate; times come from the frames
        self.frame_count = self._cap.frame_count
        self.duration = self._cap.duration
        self.width, self.height = self._cap.width, self._cap.height
        self.report: DecodeReport = self._cap.report

    def __iter__(self) -> Iterator[Frame]:
        frame_id = 0
        start = time.monotonic()
        loop_offset = 0.0  # video time stays continuous across loops
        try:
            while not self._stop.is_set() and self._cap is not None:
                last = None
                for image, t in self._cap.frames():
                    if self._stop.is_set():
                        break
                    video_time = loop_offset + t
                    if self.live:
                        # Pace on the file's own clock from one start, so timing errors do not accumulate.
                        delay = start + video_time - time.monotonic()
                        if delay > 0 and self._stop.wait(delay):
                            break
                    yield Frame(image=image, frame_id=frame_id, timestamp=time.monotonic(), source=self.name,
                                video_time=video_time)
                    frame_id += 1
                    last = t
                if not self.loop or last is None or self._stop.is_set():
                    break
                step = 1.0 / self.fps
                loop_offset += last + step
                self._cap.close()
                self._cap = _open_video_file(self.path)
                self.report = self._cap.report
        finally:
            self.close()

    def close(self) -> None:
        if self._cap is not None:
            self._cap.close()
            self._cap = None


class CameraSource(FrameSource):
    """A camera (index) or network stream (rtsp://, http://) that may drop and come back.

    Opening and reading use OpenCV timeouts for network streams so a dead
    server cannot block the loop; a read that fails, or no frame for
    ``stall_timeout_s``, counts as offline and the capture is reopened after
    a backoff of ``reconnect_initial_s`` doubling up to ``reconnect_max_s``.
    """

    live = True

    def __init__(self, uri: str, *, stop: threading.Event | None = None, reconnect_initial_s: float = 1.0,
                 reconnect_max_s: float = 30.0, stall_timeout_s: float = 5.0,
                 probe_interval_s: float = PROBE_INTERVAL_S):
        quiet_video_backends()
        self.uri = uri
        self.probe_interval_s = probe_interval_s
        self._probe_was_up: bool | None = None  # the probe's answer at the last failed open
        self.name = uri
        self._stop = stop or threading.Event()
        self.reconnect_initial_s = reconnect_initial_s
        self.reconnect_max_s = reconnect_max_s
        self.stall_timeout_s = stall_timeout_s
        self._cap: cv2.VideoCapture | None = None
        self.online = False
        self.reconnects = 0
        self.fps = None

    def _open(self) -> cv2.VideoCapture | None:
        if self.uri.isdigit():
            # On Linux a camera index is a V4L2 device. CAP_ANY would also try other backends first
            # (OpenCV's Orbbec one logs "Camera index out of range" at ERROR on every retry).
            backend = cv2.CAP_V4L2 if sys.platform.startswith("linux") else cv2.CAP_ANY
            cap = cv2.VideoCapture(int(self.uri), backend)
        else:
            timeout_ms = int(self.stall_timeout_s * 1000)
            cap = cv2.VideoCapture(self.uri, cv2.CAP_FFMPEG,
                                   [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, timeout_ms,
                                    cv2.CAP_PROP_READ_TIMEOUT_MSEC, timeout_ms])
        if not cap.isOpened():
            cap.release()
            return None
        fps = cap.get(cv2.CAP_PROP_FPS)
        self.fps = fps if fps and 0 < fps < 1000 else None
        return cap

    def probe(self) -> bool | None:
        """A cheap guess whether the camera is there: True/False, or None when it cannot be told.

        A camera index: its /dev/videoN node exists (Linux). A URL: its host accepts a TCP
        connection on the stream's port. Either costs well under a millisecond locally.
        """
        if self.uri.isdigit():
            return Path(f"/dev/video{int(self.uri)}").exists() if sys.platform.startswith("linux") else None
        parts = urlsplit(self.uri)
        try:
            port = parts.port or DEFAULT_PORTS.get(parts.scheme.lower())
        except ValueError:
            return None
        if not parts.hostname or not port:
            return None
        try:
            with socket.create_connection((parts.hostname, port), timeout=min(0.5, self.probe_interval_s)):
                return True
        except OSError:
            return False

    def _wait_before_reopen(self, backoff: float) -> bool:
        """Wait ``backoff``, or less when the probe sees the camera come back. True when stopped.

        Edge-triggered: when the probe already said "up" at the failed open (a server that accepts
        connections but sends no stream), only a change back to "up" after a "down" cuts the wait,
        so such a source is still retried at the backoff's pace.
        """
        if backoff <= self.probe_interval_s:
            return self._stop.wait(backoff)
        deadline = time.monotonic() + backoff
        was_up = self._probe_was_up
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return self._stop.is_set()
            if self._stop.wait(min(self.probe_interval_s, left)):
                return True
            if deadline - time.monotonic() <= 0:
                return False
            up = self.probe()
            if up and was_up is False:
                logger.info("camera %s answers again; reopening now instead of in %.1f s", self.uri,
                            deadline - time.monotonic())
                return False
            if up is not None:
                was_up = up

    def __iter__(self) -> Iterator[Frame]:
        frame_id = 0
        backoff = self.reconnect_initial_s
        try:
            while not self._stop.is_set():
                self._cap = self._open()
                if self._cap is None:
                    self._went_offline(f"cannot open camera {self.uri}", backoff)
                    self._probe_was_up = self.probe() if backoff > self.probe_interval_s else None
                    if self._wait_before_reopen(backoff):
                        break
                    backoff = min(backoff * 2, self.reconnect_max_s)
                    continue
                if not self.online:
                    logger.info("camera %s online", self.uri)
                    if frame_id:
                        self.reconnects += 1
                self.online = True
                while not self._stop.is_set():
                    # For streams the read timeout bounds this call, so a dead server is a False here.
                    ok, image = self._cap.read()
                    if not ok or image is None:
                        break  # a dropped stream and an unplugged camera look the same to OpenCV
                    backoff = self.reconnect_initial_s
                    yield Frame(image=image, frame_id=frame_id, timestamp=time.monotonic(), source=self.name)
                    frame_id += 1
                self._release()
                if self._stop.is_set():
                    break
                self._went_offline(f"camera {self.uri} stopped delivering frames", backoff)
                self._probe_was_up = self.probe() if backoff > self.probe_interval_s else None
                if self._wait_before_reopen(backoff):
                    break
                backoff = min(backoff * 2, self.reconnect_max_s)
        finally:
            self.close()

    def _went_offline(self, why: str, backoff: float) -> None:
        if self.online:
            logger.warning("%s; camera offline, retrying in %.1f s", why, backoff)
            if self.on_offline is not None:
                self.on_offline(why)
        else:
            logger.info("%s; retrying in %.1f s", why, backoff)
        self.online = False

    def _release(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None

    def close(self) -> None:
        self._release()
        self.online = False


def open_source(uri: str, *, realtime: bool = False, stop: threading.Event | None = None,
                reconnect_initial_s: float = 1.0, reconnect_max_s: float = 30.0,
                stall_timeout_s: float = 5.0, loop: bool = False) -> FrameSource:
    """A camera index ("0"), a URL (rtsp://, http://, ...), or a video file path."""
    uri = str(uri)
    quiet_video_backends()
    if uri.isdigit() or "://" in uri:
        return CameraSource(uri, stop=stop, reconnect_initial_s=reconnect_initial_s,
                            reconnect_max_s=reconnect_max_s, stall_timeout_s=stall_timeout_s)
    return VideoFileSource(uri, realtime=realtime, stop=stop, loop=loop)
