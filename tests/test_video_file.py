"""Frame times from the frames' own timestamps; damaged and changing input made visible."""

import numpy as np
import pytest

from checkout_cam.sources import VideoFileSource
from tests.helpers.clips import probe_times


def _times(path):
    src = VideoFileSource(path)
    frames = list(src)
    return src, [f.video_time for f in frames], frames


@pytest.mark.parametrize("name", ["box.mp4", "cup.mp4"])
def test_real_videos_times_follow_their_timestamps_in_order(videos, name):
    src, times, _ = _times(videos / name)
    truth = probe_times(videos / name)
    assert np.all(np.diff(times) > 0)  # box.mp4's packet timestamps come out shuffled; ours are in order
    interval = float(np.median(np.diff(truth)))
    # box.mp4 loses one frame to damage, so compare each frame with the nearest true time.
    err = [min(abs(t - u) for u in truth) for t in times]
    assert max(err) < interval and times[-1] == pytest.approx(truth[-1], abs=interval)


def test_variable_frame_rate_clip_has_its_real_times(clips):
    src, times, _ = _times(clips["vfr"])
    truth = probe_times(clips["vfr"])
    assert len(times) == len(truth) == 108
    assert np.max(np.abs(np.array(times) - truth)) < 1e-3
    # A frame counter over the stated (average) fps is off by over a second in the middle.
    assert np.max(np.abs(np.arange(108) / src.fps - truth)) > 1.0


def test_avi_whose_header_lies_is_timed_by_its_frames(clips):
    src, times, _ = _times(clips["lying_avi"])
    assert src.fps == pytest.approx(50) and src.frame_count == 406   # what the header claims
    assert len(times) == 203
    assert np.allclose(np.diff(times)[:-1], 0.04, atol=1e-6)
    assert times[-1] == pytest.approx(8.08, abs=0.04)               # within one frame interval
    assert not src.report.partial


def test_damaged_file_goes_past_bad_frames_and_counts_them(clips):
    src, times, _ = _times(clips["damaged"])
    r = src.report
    assert len(times) == r.decoded and r.decoded > 400     # OpenCV's read() stopped at 224
    assert r.packets == 456 and r.damaged == 456 - r.decoded and r.partial
    assert times[-1] == pytest.approx(15.15, abs=0.05)
    assert "undecodable frames skipped" in r.describe()


def test_truncated_file_says_it_ended_early(clips):
    src, times, _ = _times(clips["truncated"])
    r = src.report
    assert r.ended_early and r.partial and times[-1] < 6
    assert "ended at" in r.describe() and "15.18 s" in r.describe()


def test_resolution_change_keeps_each_frame_in_its_size(clips, caplog):
    src, times, frames = _times(clips["resized"])
    sizes = [f.size for f in frames]
    assert sizes[0] == (640, 480) and sizes[-1] == (320, 240)
    assert len(src.report.size_changes) == 1 and "changes size from 640x480 to 320x240" in caplog.text
    assert np.all(np.diff(times) > 0) and times[-1] == pytest.approx(3.9, abs=0.1)
