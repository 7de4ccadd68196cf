"""Live: the lane's camera window with the overlay.

Keys: q or Esc quit, space pause/resume the display, s save a snapshot (raw
and annotated PNG), b re-take the empty-scene background.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
import threading
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import cv2
import numpy as np

from checkout_cam.config import Config
from checkout_cam.errors import CheckoutCamError
from checkout_cam.frames import Frame
from checkout_cam.modes import build_parts, stop_on_signals
from checkout_cam.pipeline import Pipeline
from checkout_cam.sinks import StderrEventSink

logger = logging.getLogger(__name__)

KEY_ESC = 27


def save_snapshot(folder: str | Path, frame: Frame, annotated: np.ndarray) -> tuple[Path, Path]:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S") + f"-f{frame.frame_id}"
    raw, ann = folder / f"{stamp}-raw.png", folder / f"{stamp}-annotated.png"
    if not (cv2.imwrite(str(raw), frame.image) and cv2.imwrite(str(ann), annotated)):
        raise CheckoutCamError(f"could not write snapshot PNGs to {folder}")
    return raw, ann


def display_problem(environ=None) -> str | None:
    """Why no window can open here, or None. Checked before OpenCV's Qt is touched: without a
    display Qt aborts the process (exit 134) before any error can be caught."""
    if not sys.platform.startswith("linux"):
        return None
    env = os.environ if environ is None else environ
    if env.get("WAYLAND_DISPLAY"):
        return None
    display = env.get("DISPLAY", "")
    if not display:
        return "no display: neither DISPLAY nor WAYLAND_DISPLAY is set"
    host, _, rest = display.rpartition(":")
    number = rest.split(".")[0]
    if not number.isdigit():
        return f"DISPLAY={display!r} is not a display name like :0"
    if host in ("", "unix"):
        sock = f"/tmp/.X11-unix/X{number}"
        last = None
        for address in ("\0" + sock, sock):  # Linux X servers also listen in the abstract namespace
            try:
                with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                    s.settimeout(1.0)
                    s.connect(address)
                return None
            except OSError as exc:
                last = exc
        return f"no X server answers on DISPLAY={display} ({sock}: {last.strerror or last})"
    try:
        with socket.create_connection((host, 6000 + int(number)), timeout=1.0):
            return None
    except OSError as exc:  # ssh -X forwarding and remote X use TCP 6000+N
        return f"the X server on DISPLAY={display} does not answer ({exc.strerror or exc})"


def check_display() -> None:
    problem = display_problem()
    if problem:
        raise CheckoutCamError(f"cannot open the live window: {problem}. Run it on the lane's screen, or on "
                               f"a headless box use `checkout-cam serve` (or `replay` for a video file)")


def _open_window(name: str) -> None:
    try:
        # GUI_NORMAL: no Qt toolbar/status bar over a lane screen; the overlay is the interface.
        cv2.namedWindow(name, cv2.WINDOW_AUTOSIZE | cv2.WINDOW_GUI_NORMAL)
    except cv2.error as exc:
        raise CheckoutCamError(f"cannot open a window ({exc.msg.strip() if hasattr(exc, 'msg') else exc}); "
                               f"is a display available (DISPLAY)? For a headless box use `checkout-cam serve`") from None


@dataclass
class LiveReport:
    """What a live run measured (scripts/bench.py reads it)."""
    seconds: float
    displayed: int
    captured: int
    inferred: int
    dropped: int
    latency_p50_ms: float        # capture to result, every frame of the run (reused results included)
    latency_p95_ms: float
    model_latency_p95_ms: float  # the same, frames that reached the model only
    model_share: float

    @property
    def display_fps(self) -> float:
        return self.displayed / self.seconds if self.seconds else 0.0

    @property
    def inference_fps(self) -> float:
        return self.inferred / self.seconds if self.seconds else 0.0


def run_live(cfg: Config, *, stop: threading.Event | None = None, max_seconds: float | None = None) -> LiveReport:
    stop = stop or threading.Event()
    check_display()  # before the model load, and before Qt can abort the process
    stop_on_signals(stop)
    parts = build_parts(cfg, stop, realtime=True, lane=True)  # a file stands in for a camera: paced, frames dropped
    pipeline = Pipeline(parts.source, parts.classifier, parts.policy, cfg, sinks=[StderrEventSink()], stop=stop)
    name = cfg.render.window_name
    _open_window(name)
    paused = False
    shown: np.ndarray | None = None
    last_id: int | None = None
    offline_canvas = np.zeros((480, 640, 3), np.uint8)
    displayed = 0
    t_start = time.monotonic()
    t_end = None if max_seconds is None else t_start + max_seconds
    pipeline.start()
    try:
        while not stop.is_set():
            if t_end is not None and time.monotonic() >= t_end:
                break
            frame = None if paused else pipeline.wait_frame(last_id, timeout=0.05)
            if frame is not None:
                last_id = frame.frame_id
                _, decision = pipeline.latest()
                shown = parts.renderer.annotate(frame, decision, pipeline.status())
                current = frame
            elif not paused and not parts.source.online:
                # No frames: say so on screen instead of freezing on the last one.
                current = Frame(offline_canvas, -1, time.monotonic(), parts.source.name)
                shown = parts.renderer.annotate(current, None, pipeline.status())
            elif pipeline.finished:
                logger.info("source %s ended", parts.source.name)
                break
            if shown is not None:
                cv2.imshow(name, shown)
                displayed += frame is not None
            key = cv2.waitKey(1) & 0xFF
            if key in (ord("q"), KEY_ESC):
                break
            if key == ord(" "):
                paused = not paused
                if paused and shown is not None:
                    shown = parts.renderer.annotate(current, pipeline.latest()[1], pipeline.status(paused=True))
            elif key == ord("s") and shown is not None:
                raw, ann = save_snapshot(cfg.live.snapshot_dir, current, shown)
                print(f"snapshot saved: {raw} {ann}", flush=True)
            elif key == ord("b"):
                pipeline.retake_background()
            if cv2.getWindowProperty(name, cv2.WND_PROP_VISIBLE) < 1:
                break  # the window was closed with the mouse
    finally:
        seconds = time.monotonic() - t_start
        pipeline.shutdown()
        cv2.destroyAllWindows()
    return LiveReport(seconds, displayed, pipeline.frames.put_count, pipeline.worker.model_runs,
                      pipeline.frames.dropped, pipeline.run_latency_ms.get(50), pipeline.run_latency_ms.get(95),
                      pipeline.model_latency_ms.get(95), pipeline.model_share)
