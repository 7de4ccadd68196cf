"""The unit that flows through the pipeline: one captured image and where it came from."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class Frame:
    """One BGR uint8 image (H, W, 3) as OpenCV delivers it.

    ``timestamp`` is ``time.monotonic()`` at capture; ``video_time`` is the
    frame's presentation timestamp in seconds from the file's first frame
    (None for cameras/streams).
    """

    image: np.ndarray = field(repr=False)
    frame_id: int
    timestamp: float
    source: str
    video_time: float | None = None

    def __post_init__(self) -> None:
        img = self.image
        if not isinstance(img, np.ndarray) or img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
            raise ValueError(f"frame {self.frame_id}: image must be a uint8 array of shape (H, W, 3), "
                             f"got {getattr(img, 'dtype', type(img))} {getattr(img, 'shape', '')}")

    @property
    def time(self) -> float:
        """The frame's place in time: seconds into the video when replaying a file, else its
        monotonic capture time. Anything that must give the same answer on every replay uses this."""
        return self.video_time if self.video_time is not None else self.timestamp

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) in pixels."""
        return self.image.shape[1], self.image.shape[0]
