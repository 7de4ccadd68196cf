#!/usr/bin/env python3
"""How long OpenCV's FFMPEG backend takes to notice a network camera that drops, hangs or returns.

Serves a video with tests/helpers/stream_server.py on 127.0.0.1 and times
cv2.VideoCapture against it: opening, reading after the server is killed,
reading from a hung server (connection open, no data), opening while nothing
listens or while the server hangs, and reopening after a restart. The
reconnect and stall logic of the capture loop is sized from these figures.

    python scripts/stream_timeouts.py [--video FILE] [--format mjpeg|mpegts]
                                      [--read-timeout-ms 2000] [--open-timeout-ms 3000]
                                      [--repeats 3] [--opencv-defaults]

--opencv-defaults also times a hang without timeout params (about 30 s each).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import cv2

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.helpers.stream_server import FORMATS, StreamServer  # noqa: E402


def timed(fn):
    t0 = time.monotonic()
    result = fn()
    return result, time.monotonic() - t0


def open_capture(url: str, params: list[int]) -> cv2.VideoCapture:
    return cv2.VideoCapture(url, cv2.CAP_FFMPEG, params)


def read_until_failure(cap: cv2.VideoCapture, limit: int = 1000) -> tuple[int, float]:
    """(reads that still succeeded, seconds until the failing read returned)."""
    t0 = time.monotonic()
    for n in range(limit):
        if not cap.read()[0]:
            return n, time.monotonic() - t0
    raise RuntimeError(f"still reading after {limit} frames")


def one_round(video: Path, fmt: str, params: list[int]) -> dict[str, float]:
    fig: dict[str, float] = {}
    with StreamServer(video, format=fmt) as cam:
        cap, fig["open (server up)"] = timed(lambda: open_capture(cam.url, params))
        assert cap.isOpened(), "could not open the stream"
        _, fig["first read"] = timed(cap.read)
        for _ in range(30):
            cap.read()
        _, fig["stop(): kill ffmpeg"] = timed(cam.stop)
        n, fig["read fails after kill"] = read_until_failure(cap)
        fig["  frames still buffered after kill"] = n
        cap.release()
        gone, fig["open (nothing listening)"] = timed(lambda: open_capture(cam.url, params))
        assert not gone.isOpened()
        _, fig["start() until listening"] = timed(cam.start)
        cap, fig["open after restart"] = timed(lambda: open_capture(cam.url, params))
        assert cap.isOpened() and cap.read()[0], "no frames after restart"
        for _ in range(30):
            cap.read()
        cam.hang()
        n, fig["read fails after hang"] = read_until_failure(cap)
        fig["  frames still buffered after hang"] = n
        cap.release()
        cam.stop()
        cam.start()
        cam.hang()  # listening socket open, nobody answers the HTTP request
        hung, fig["open (server hung)"] = timed(lambda: open_capture(cam.url, params))
        assert not hung.isOpened()
        cam.stop()
        cam.start()
        cap = open_capture(cam.url, params)
        cap.read()
        cap.release()
        t0 = time.monotonic()
        while cam.running and time.monotonic() - t0 < 10:
            time.sleep(0.01)
        fig["ffmpeg exits after its client leaves"] = time.monotonic() - t0
    return fig


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--video", type=Path, default=REPO.parent / "shared/data/videos/box.mp4")
    ap.add_argument("--format", choices=list(FORMATS), default="mjpeg")
    ap.add_argument("--read-timeout-ms", type=int, default=2000)
    ap.add_argument("--open-timeout-ms", type=int, default=3000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--opencv-defaults", action="store_true",
                    help="also time a hung stream with OpenCV's default timeouts (slow)")
    args = ap.parse_args()
    if not args.video.is_file():
        print(f"video not found: {args.video}", file=sys.stderr)
        return 2
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)  # silence OpenCV's per-failure warnings; the figures say it all
    params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, args.open_timeout_ms,
              cv2.CAP_PROP_READ_TIMEOUT_MSEC, args.read_timeout_ms]
    rounds = [one_round(args.video, args.format, params) for _ in range(args.repeats)]
    print(f"{args.format} stream of {args.video.name}, OpenCV {cv2.__version__}, "
          f"OPEN_TIMEOUT_MSEC={args.open_timeout_ms} READ_TIMEOUT_MSEC={args.read_timeout_ms}, "
          f"{args.repeats} rounds")
    print(f"{'':42} {'median':>8} {'max':>8}")
    for key in rounds[0]:
        values = [r[key] for r in rounds]
        if key.startswith("  "):  # a count, not seconds
            print(f"{key:42} {statistics.median(values):8.0f} {max(values):8.0f}")
        else:
            print(f"{key:42} {statistics.median(values):8.3f} {max(values):8.3f} s")
    if args.opencv_defaults:
        with StreamServer(args.video, format=args.format) as cam:
            cap = open_capture(cam.url, [])
            cap.read()
            cam.hang()
            _, took = read_until_failure(cap)
            cap.release()
        print(f"{'read fails after hang, default timeouts':42} {took:8.3f} {'':8} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
