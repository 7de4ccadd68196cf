import numpy as np

from checkout_cam.frames import Frame
from checkout_cam.gating import MotionGate


def _frame(i, value, t):
    img = np.full((120, 160, 3), 100, np.uint8)
    img[40:80, 60:100] = value
    return Frame(img, frame_id=i, timestamp=1000.0 + t, source="t", video_time=t)


def test_still_scene_reuses_until_max_age():
    gate = MotionGate(threshold=2.0, max_reuse_s=1.0)
    assert gate.changed(_frame(0, 100, 0.0))
    gate.inferred(_frame(0, 100, 0.0))
    assert [gate.changed(_frame(i, 100, i / 30)) for i in range(1, 30)] == [False] * 29
    assert gate.changed(_frame(30, 100, 1.0))  # refreshed at least every max_reuse_s
    assert gate.skipped == 29 and gate.passed == 2


def test_motion_passes_and_drift_accumulates_against_the_last_inferred_frame():
    gate = MotionGate(threshold=2.0, max_reuse_s=60.0)
    gate.inferred(_frame(0, 100, 0.0))
    assert gate.changed(_frame(1, 250, 0.1))  # an item appears
    # Creeping change: each step is tiny next to the previous frame, but it adds up.
    results = [gate.changed(_frame(i, 100 + 3 * i, i / 30)) for i in range(2, 40)]
    assert not results[0] and any(results)


def test_roi_limits_what_counts():
    gate = MotionGate(threshold=2.0, roi=(0.0, 0.0, 0.25, 0.25), max_reuse_s=60.0)
    gate.inferred(_frame(0, 100, 0.0))
    assert not gate.changed(_frame(1, 250, 0.1))  # the change is outside the scanning area
