"""StreamServer: OpenCV reads it like a network camera that can drop, hang and return."""

from __future__ import annotations

import socket
import time

import cv2
import pytest

from tests.helpers.stream_server import StreamServer, ffmpeg_path

# The reads in these tests never wait longer than this for a frame (OpenCV's default is 30 s).
READ_TIMEOUT_MS = 1000
OPEN_TIMEOUT_MS = 5000
# Bounds the loops that read until the stream fails, so a broken server fails a test instead of hanging it.
MAX_READS = 300


@pytest.fixture(scope="module")
def box(videos):
    if ffmpeg_path() is None:
        pytest.skip("ffmpeg not installed (apt-get install ffmpeg); cannot serve a test camera stream")
    if not cv2.videoio_registry.hasBackend(cv2.CAP_FFMPEG):
        pytest.skip("this OpenCV build has no FFMPEG backend; it cannot open network streams")
    return videos / "box.mp4"


def open_capture(url: str) -> cv2.VideoCapture:
    return cv2.VideoCapture(url, cv2.CAP_FFMPEG, [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, OPEN_TIMEOUT_MS,
                                                  cv2.CAP_PROP_READ_TIMEOUT_MSEC, READ_TIMEOUT_MS])


def read_frames(cap: cv2.VideoCapture, n: int) -> list:
    frames = []
    for _ in range(n):
        ok, frame = cap.read()
        assert ok, f"read {len(frames) + 1} of {n} failed"
        frames.append(frame)
    return frames


def reads_until_failure(cap: cv2.VideoCapture) -> int:
    """How many reads still succeed (frames already buffered) before one fails."""
    for n in range(MAX_READS):
        if not cap.read()[0]:
            return n
    pytest.fail(f"still reading frames {MAX_READS} reads after the camera went away")


@pytest.mark.parametrize("fmt", ["mjpeg", "mpegts"])
def test_opencv_reads_frames_of_the_video_size(box, fmt):
    with StreamServer(box, format=fmt) as cam:
        assert cam.url.startswith("http://127.0.0.1:")
        cap = open_capture(cam.url)
        try:
            assert cap.isOpened()
            frames = read_frames(cap, 10)
        finally:
            cap.release()
    assert {f.shape for f in frames} == {(480, 640, 3)}
    assert len({f.tobytes() for f in frames}) > 1, "a live stream should not repeat one frame"


def test_camera_drops_and_returns_on_the_same_url(box):
    with StreamServer(box) as cam:
        url = cam.url
        cap = open_capture(url)
        try:
            read_frames(cap, 5)
            cam.stop()
            assert not cam.running
            reads_until_failure(cap)
            assert not cap.read()[0], "a dropped stream must stay failed; the client reopens"
        finally:
            cap.release()

        gone = open_capture(url)
        assert not gone.isOpened(), "nothing listens while the camera is down"
        gone.release()

        cam.start()
        assert cam.url == url
        cap = open_capture(url)
        try:
            assert cap.isOpened()
            assert {f.shape for f in read_frames(cap, 5)} == {(480, 640, 3)}
        finally:
            cap.release()


def test_hung_camera_fails_reads_after_the_read_timeout(box):
    with StreamServer(box) as cam:
        cap = open_capture(cam.url)
        try:
            read_frames(cap, 5)
            cam.hang()
            reads_until_failure(cap)
            assert not cap.read()[0]
        finally:
            cap.release()
        assert cam.running, "hung is not dead: the process is still there"
    assert not cam.running, "leaving the context must kill the hung ffmpeg"


def test_one_client_per_start(box):
    with StreamServer(box) as cam:
        cap = open_capture(cam.url)
        read_frames(cap, 3)
        cap.release()
        # ffmpeg notices the closed connection on its next write and exits.
        deadline = time.monotonic() + 10
        while cam.running and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not cam.running, "ffmpeg should exit once its one client has gone"
        with pytest.raises(RuntimeError, match="already running"):
            cam.start().start()


def test_missing_or_unreadable_video_is_a_clear_error(box, tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        StreamServer(tmp_path / "nope.mp4").start()
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"not a video")
    with pytest.raises(RuntimeError, match="ffmpeg could not serve"):
        StreamServer(junk).start()


def test_a_taken_port_is_reported_not_silently_replaced(box):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        port = other.getsockname()[1]
        cam = StreamServer(box, port)
        with pytest.raises(RuntimeError, match="Address already in use"):
            cam.start()
        assert cam.port == port and not cam.running
