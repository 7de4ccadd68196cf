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
