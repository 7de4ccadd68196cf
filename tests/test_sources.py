import shutil
import threading
import time

import pytest

from checkout_cam.errors import CheckoutCamError
from checkout_cam.sources import CameraSource, VideoFileSource, open_source


def test_video_file_gives_every_frame_in_order(videos):
    src = VideoFileSource(videos / "cup.mp4")
    assert src.fps == pytest.approx(26.78, abs=0.01) and not src.live
    frames = list(src)
    assert len(frames) == 217
    assert [f.frame_id for f in frames] == list(range(217))
    assert frames[0].image.shape == (480, 640, 3)
    assert frames[10].video_time == pytest.approx(10 / src.fps)
    assert src._cap is None  # released at the end


def test_realtime_file_is_live_and_stops_on_request(videos):
    stop = threading.Event()
    src = open_source(str(videos / "box.mp4"), realtime=True, stop=stop)
    assert src.live
    it = iter(src)
    first = next(it)
    second = next(it)
    assert second.timestamp > first.timestamp
    stop.set()
    assert list(it) == []
    assert src._cap is None


def test_missing_and_bad_files_are_clear_errors(tmp_path):
    with pytest.raises(CheckoutCamError, match="video file not found: .*nope.mp4"):
        open_source(str(tmp_path / "nope.mp4"))
    bad = tmp_path / "bad.mp4"
    bad.write_text("not a video")
    with pytest.raises(CheckoutCamError, match="cannot open as video"):
        open_source(str(bad))


def test_unreachable_stream_retries_with_backoff_until_stopped(caplog):
    stop = threading.Event()
    src = open_source("http://127.0.0.1:9/none.ts", stop=stop)  # port 9: nothing listens
    assert isinstance(src, CameraSource)
    src.reconnect_initial_s, src.reconnect_max_s, src.stall_timeout_s = 0.05, 0.2, 0.5
    waits = []
    real_wait = stop.wait

    def record(timeout=None):
        waits.append(timeout)
        if len(waits) >= 4:
            stop.set()
        return real_wait(timeout)

    stop.wait = record
    t0 = time.monotonic()
    assert list(src) == []
    assert time.monotonic() - t0 < 30
    assert waits[:4] == [0.05, 0.1, 0.2, 0.2]  # doubles, capped at reconnect_max_s
    assert not src.online


def test_probe_tells_whether_a_stream_port_answers():
    import socket
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(4)
    port = listener.getsockname()[1]
    src = CameraSource(f"http://127.0.0.1:{port}/cam.mjpg")
    assert src.probe() is True
    listener.close()
    assert src.probe() is False
    assert CameraSource("rtsp://127.0.0.1:9/x").probe() is False  # nothing listens on port 9


def test_a_returning_camera_is_reopened_within_the_probe_interval_whatever_the_backoff():
    stop = threading.Event()
    src = CameraSource("http://127.0.0.1:9/x", stop=stop, probe_interval_s=0.2)
    answers = iter([False, False, True])
    src.probe = lambda: next(answers, True)
    src._probe_was_up = False
    t0 = time.monotonic()
    assert src._wait_before_reopen(30.0) is False
    assert time.monotonic() - t0 < 2.0  # not the 30 s backoff


def test_a_probe_that_stays_up_does_not_cut_the_backoff_short():
    """A server that accepts connections but sends no video: retried at the backoff's pace."""
    stop = threading.Event()
    src = CameraSource("http://127.0.0.1:9/x", stop=stop, probe_interval_s=0.05)
    src.probe = lambda: True
    src._probe_was_up = True
    t0 = time.monotonic()
    assert src._wait_before_reopen(0.6) is False
    assert time.monotonic() - t0 >= 0.55


@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="needs ffmpeg (apt-get install ffmpeg)")
def test_frames_resume_within_seconds_of_the_camera_returning_despite_a_long_backoff(videos):
    """The ffmpeg test camera serves one client, so a TCP probe would use it up: here the probe asks
    the server object instead; the reopen, the read and the backoff are the real ones."""
    from tests.helpers.stream_server import StreamServer
    stop = threading.Event()
    with StreamServer(videos / "box.mp4") as server:
        src = CameraSource(server.url, stop=stop, reconnect_initial_s=20.0, reconnect_max_s=30.0,
                           stall_timeout_s=2.0, probe_interval_s=0.5)
        src.probe = lambda: server.running
        frames = []
        t = threading.Thread(target=lambda: [frames.append(f.frame_id) for f in src], daemon=True)
        t.start()
        deadline = time.monotonic() + 30
        while len(frames) < 10 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(frames) >= 10
        server.stop()
        deadline = time.monotonic() + 15
        while src.online and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not src.online
        time.sleep(1.0)  # well inside the 20 s backoff
        before = len(frames)
        server.start()
        t_back = time.monotonic()
        deadline = t_back + 15
        while len(frames) <= before and time.monotonic() < deadline:
            time.sleep(0.02)
        resumed = time.monotonic() - t_back
        stop.set()
        t.join(10)
    assert len(frames) > before, "frames did not resume"
    assert resumed < 5.0, f"frames resumed {resumed:.1f} s after the camera returned (backoff 20 s)"


@pytest.mark.parametrize("uri", ["http://127.0.0.1:9/cam.mjpg", "7"], ids=["stream", "camera-index"])
def test_opencv_and_ffmpeg_chatter_is_quieted_for_camera_retries(tmp_path, uri):
    import subprocess
    import sys
    from tests.conftest import REPO
    code = ("import threading, time\nfrom checkout_cam.sources import open_source\n"
            "stop = threading.Event()\n"
            f"src = open_source({uri!r}, stop=stop, reconnect_initial_s=0.1,"
            " reconnect_max_s=0.1)\n"
            "threading.Timer(1.5, stop.set).start()\nlist(src)\nprint('retries done')\n")
    env = {k: v for k, v in __import__("os").environ.items() if not k.startswith("OPENCV_")}
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60,
                          env=env)
    assert "retries done" in proc.stdout, proc.stderr
    assert "Connection refused" not in proc.stderr and "WARN" not in proc.stderr, proc.stderr
    assert "ERROR" not in proc.stderr, proc.stderr  # e.g. the Orbbec backend's "Camera index out of range"


def test_no_h264_decoder_warnings_when_box_mp4_is_read(videos):
    import subprocess
    import sys
    from tests.conftest import REPO
    code = ("from checkout_cam.sources import open_source\n"
            f"print(sum(1 for _ in open_source({str(videos / 'box.mp4')!r})), 'frames')\n")
    env = {k: v for k, v in __import__("os").environ.items() if not k.startswith("OPENCV_")}
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120,
                          env=env)
    assert "455 frames" in proc.stdout, proc.stderr
    assert "[h264 @" not in proc.stderr, proc.stderr
