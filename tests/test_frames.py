import numpy as np
import pytest

from checkout_cam.frames import Frame


def test_frame_is_frozen_and_checks_its_image():
    f = Frame(np.zeros((4, 6, 3), np.uint8), frame_id=7, timestamp=1.0, source="test")
    assert f.size == (6, 4)
    with pytest.raises(Exception):
        f.frame_id = 8
    with pytest.raises(ValueError, match="frame 1: image must be a uint8"):
        Frame(np.zeros((4, 6), np.uint8), frame_id=1, timestamp=0.0, source="test")
