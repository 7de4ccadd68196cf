"""A network camera for tests: ffmpeg serving a video file in a loop as a live HTTP stream on 127.0.0.1.

    with StreamServer(videos / "box.mp4") as cam:
        cap = cv2.VideoCapture(cam.url, cv2.CAP_FFMPEG, [cv2.CAP_PROP_READ_TIMEOUT_MSEC, 2000])
        ...
        cam.stop()    # the camera drops: the client's next reads fail at once
        cam.start()   # it returns on the same URL; a new VideoCapture reads again
        cam.hang()    # connection stays open but no data comes: reads block until the read timeout

ffmpeg's HTTP server (``-listen 1``) serves exactly one client: it waits for a
connection, streams the video from its first frame paced at real time
(``-re``), and exits when that client disconnects. So every (re)connection of a
client needs a start() first; start() on the same port works right after
stop() (ffmpeg sets SO_REUSEADDR).

Formats: ``mjpeg`` (default; multipart JPEG like many IP cameras, every frame a
keyframe, OpenCV opens it in about 0.2 s) and ``mpegts`` (H.264 in MPEG-TS,
like an encoder box; opening takes about 0.9 s of stream probing). Both
re-encode, because box.mp4's first frame does not decode cleanly when its
H.264 is copied into a stream (the client's first read would fail).
"""

from __future__ import annotations

import ctypes
import logging
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

logger = logging.getLogger(__name__)

HOST = "127.0.0.1"  # tests never serve beyond this machine

FORMATS: dict[str, tuple[str, list[str]]] = {
    "mjpeg": ("cam.mjpg", ["-c:v", "mjpeg", "-q:v", "5", "-f", "mpjpeg"]),
    # A keyframe every second so a decoder never waits long; zerolatency: no frame reordering.
    "mpegts": ("cam.ts", ["-c:v", "libx264", "-preset", "ultrafast", "-tune", "zerolatency",
                          "-g", "30", "-f", "mpegts"]),
}


def _die_with_parent() -> None:
    """In the child before exec: SIGKILL it when the parent dies.

    ffmpeg in listen mode waits for a client forever; if the test process is
    killed before its teardown runs, the camera must not outlive it. (Linux
    ties this to the thread that started the child: start() from a thread that
    then exits takes the server down too.)
    """
    PR_SET_PDEATHSIG = 1
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def ffmpeg_path() -> str | None:
    return shutil.which("ffmpeg")


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now (another process may still take it before us)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def _listening_inodes(port: int) -> set[str]:
    """Socket inodes bound to 127.0.0.1:port and listening or serving, from /proc/net/tcp.

    A client that reconnects in a tight loop (a camera source retrying) can be
    accepted before we look, and ffmpeg's one-shot listener then closes its
    LISTEN socket: an ESTABLISHED one (01) on the port counts as up too.
    """
    local = f"0100007F:{port:04X}"
    inodes = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        parts = line.split()
        if parts[1] == local and parts[3] in ("0A", "01"):  # TCP_LISTEN, TCP_ESTABLISHED
            inodes.add(parts[9])
    return inodes


def _socket_inodes(pid: int) -> set[str]:
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[len("socket:["):-1])
    return inodes


class StreamServer:
    """A looping video served as a live stream; start/stop/hang simulate a network camera."""

    def __init__(self, video: Path, port: int | None = None, *, format: str = "mjpeg"):
        if format not in FORMATS:
            raise ValueError(f"format must be one of {', '.join(FORMATS)}, got {format!r}")
        self.video = Path(video)
        self.format = format
        self._port_fixed = port is not None
        self.port = port if port is not None else free_port()
        self._proc: subprocess.Popen | None = None
        self._log = None

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}/{FORMATS[self.format][0]}"

    @property
    def running(self) -> bool:
        """ffmpeg is alive: listening, or serving its one client (also while hung)."""
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def start(self, timeout: float = 10.0) -> StreamServer:
        """Launch ffmpeg and return once it listens on ``url``; raise RuntimeError if it cannot."""
        if self.running:
            raise RuntimeError(f"stream server already running at {self.url}")
        if not self.video.is_file():
            raise FileNotFoundError(f"video to serve not found: {self.video}")
        exe = ffmpeg_path()
        if exe is None:
            raise RuntimeError("ffmpeg not found on PATH (apt-get install ffmpeg)")
        for _ in range(3):
            error = self._launch(exe, timeout)
            if error is None:
                self._port_fixed = True  # a restart must come back on the same URL
                return self
            # An auto-picked port can be taken between free_port() and ffmpeg's bind.
            if self._port_fixed or "Address already in use" not in error:
                break
            logger.debug("port %d taken meanwhile; picking another", self.port)
            self.port = free_port()
        self._close_log()
        raise RuntimeError(f"ffmpeg could not serve {self.video} at {self.url}: {error}")

    def _launch(self, exe: str, timeout: float) -> str | None:
        """Start ffmpeg; None once it listens, else why not (ffmpeg is then gone)."""
        _, codec = FORMATS[self.format]
        cmd = [exe, "-hide_banner", "-nostdin", "-loglevel", "error",
               "-re", "-stream_loop", "-1", "-i", str(self.video), "-an", *codec,
               "-listen", "1", self.url]
        self._close_log()
        self._log = tempfile.TemporaryFile()
        self._proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                      stderr=self._log, preexec_fn=_die_with_parent)
        logger.debug("started ffmpeg pid %d serving %s at %s", self._proc.pid, self.video, self.url)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                return f"exited with status {self._proc.returncode}: {self.log_tail()}"
            try:
                if _listening_inodes(self.port) & _socket_inodes(self._proc.pid):
                    return None
            except FileNotFoundError:  # /proc/PID vanished: it just exited; poll() says so next
                pass
            time.sleep(0.02)
        self.stop()
        return f"not listening after {timeout} s: {self.log_tail()}"

    def log_tail(self, chars: int = 2000) -> str:
        """The end of ffmpeg's stderr of the latest start()."""
        if self._log is None:
            return ""
        self._log.flush()
        self._log.seek(0)
        return self._log.read().decode("utf-8", errors="replace")[-chars:].strip()

    def stop(self) -> None:
        """Kill ffmpeg (also when hung): the camera drops. Safe to call at any time."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.kill()  # SIGKILL works on a SIGSTOPped process too
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                logger.warning("ffmpeg pid %d did not die within 10 s of SIGKILL", proc.pid)

    def hang(self) -> None:
        """Freeze ffmpeg (SIGSTOP): the connection stays open and no more data comes."""
        self._signal(signal.SIGSTOP)

    def resume(self) -> None:
        """Unfreeze ffmpeg (SIGCONT); if its client gave up meanwhile, ffmpeg then exits."""
        self._signal(signal.SIGCONT)

    def _signal(self, sig: signal.Signals) -> None:
        if not self.running:
            raise RuntimeError(f"stream server at {self.url} is not running")
        self._proc.send_signal(sig)

    def _close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self) -> StreamServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
        self._close_log()

    def __repr__(self) -> str:
        return f"StreamServer({self.video.name!r}, url={self.url!r}, running={self.running})"
