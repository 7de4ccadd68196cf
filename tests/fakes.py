"""Test doubles: a plain iterator source and a model whose speed and failures we choose."""

from __future__ import annotations

import threading
import time
from typing import Iterator, Sequence

import numpy as np
import torch

from checkout_cam.frames import Frame
from checkout_cam.model.artifact import ArtifactMeta
from checkout_cam.model.classifier import Classifier
from checkout_cam.sources import FrameSource


class FrameSourceStub(FrameSource):
    """``n`` synthetic frames; ``image_fn(i)`` makes frame i; optional pacing at ``fps``."""

    def __init__(self, n: int, *, size=(64, 48), live: bool = False, fps: float | None = None,
                 image_fn=None, stop: threading.Event | None = None):
        self.n, self.size, self.live, self.fps = n, size, live, fps
        self.name = "stub"
        self.frame_count = n
        self.image_fn = image_fn or (lambda i: np.full((size[1], size[0], 3), i % 256, np.uint8))
        self.closed = False
        self.stop = stop or threading.Event()

    def __iter__(self) -> Iterator[Frame]:
        start = time.monotonic()
        try:
            for i in range(self.n):
                if self.stop.is_set():
                    break
                if self.fps:
                    delay = start + i / self.fps - time.monotonic()
                    if delay > 0:
                        time.sleep(delay)
                yield Frame(self.image_fn(i), frame_id=i, timestamp=time.monotonic(), source=self.name,
                            video_time=i / (self.fps or 30.0))
        finally:
            self.close()

    def close(self) -> None:
        self.closed = True


class FakeClassifier(Classifier):
    """Deterministic 'model': class = mean pixel value mod n_classes, probability 0.9.

    ``delay_s`` makes it slow; frame images whose mean is in ``fail_on`` raise.
    """

    def __init__(self, n_classes: int = 4, *, delay_s: float = 0.0, fail_on: Sequence[int] = (),
                 trained: bool = True):
        labels = [f"class{i}" for i in range(n_classes)]
        meta = ArtifactMeta(name="fake", arch="fake", labels=labels, weights_source="test",
                            weights_sha256=None, trained=trained)
        super().__init__(meta, sha256="0" * 64)
        self.delay_s = delay_s
        self.fail_on = set(fail_on)
        self.calls = 0
        # The 'batch' is the images themselves, stacked, so batches concatenate like real ones.
        self.preprocess = lambda images: torch.from_numpy(np.stack(images))
        self.batch_sizes: list[int] = []

    def batch_probabilities(self, images):
        self.calls += 1
        self.batch_sizes.append(len(images))
        if self.delay_s:
            time.sleep(self.delay_s)
        n = len(self.meta.labels)
        out = torch.full((len(images), n), 0.1 / (n - 1))
        for row, img in enumerate(images):
            value = int(round(float(img.float().mean())))
            if value in self.fail_on:
                raise RuntimeError(f"synthetic failure for value {value}")
            out[row, value % n] = 0.9
        return out

    def logits(self, batch):
        raise NotImplementedError("FakeClassifier works on images, see probabilities()")
