"""The one inference engine in front of the model: every lane's frames go through its thread.

A small version of the engine the web issue (issue 12) builds for lanes and
HTTP requests, with the same interface (``InferenceEngine``, ``submit``,
``infer``, ``lane(caller)`` -> ``EngineClient``, ``status``), so the two
unify by keeping that one:

- **Batching without delay.** When the model comes free, the engine takes what
  is waiting, up to ``max_batch`` images, and runs it as one call. A lone
  frame runs at once; frames that arrive from other lanes while the model is
  busy share the next call.
- **Fairness among lanes.** Each caller (lane) has its own queue, and a batch
  takes submissions round-robin, one per caller per pass, the caller served
  last moving to the back. A live lane has at most one frame in flight (its
  worker waits for the result, and its latest-frame queue keeps only the
  newest frame meanwhile), so with N lanes no frame waits behind more than
  one model call holding the other lanes' frames: no lane can starve.
- **Isolated failures.** If a batched call fails, each submission is retried
  alone, so one bad frame fails only its own lane's call.

Callers get a ``concurrent.futures.Future`` of ``list[Classification]``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict, deque
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch

from checkout_cam.errors import CheckoutCamError
from checkout_cam.results import Classification
from checkout_cam.stats import LatencyHistogram

logger = logging.getLogger(__name__)

LANE = 0


class EngineClosed(CheckoutCamError):
    """The engine has stopped; nothing more is accepted."""


@dataclass
class _Job:
    batch: torch.Tensor
    top_k: int
    caller: str
    future: Future
    submitted: float = field(default_factory=time.monotonic)

    @property
    def size(self) -> int:
        return int(self.batch.shape[0])


class InferenceEngine(threading.Thread):
    """Owns the classifier; batches the lanes' submissions. A context manager."""

    def __init__(self, classifier, *, max_batch: int = 8, poll_s: float = 0.1,
                 stop: threading.Event | None = None, shutdown_timeout_s: float = 3.0):
        super().__init__(name="engine", daemon=True)
        self.classifier = classifier
        self.max_batch = max(1, max_batch)
        self.poll_s = poll_s
        self.shutdown_timeout_s = shutdown_timeout_s
        self.stop_event = stop or threading.Event()
        self._closing = threading.Event()
        self._cond = threading.Condition()
        self._queues: OrderedDict[str, deque[_Job]] = OrderedDict()   # order = round-robin order
        self._waiting = 0
        self.heartbeat = time.monotonic()
        self.busy = False
        self.images = 0
        self.batches = 0
        self.failed = 0
        self.batch_sizes: dict[int, int] = {}
        self.queue_ms = LatencyHistogram()
        self.model_ms = LatencyHistogram()

    @classmethod
    def from_config(cls, classifier, cfg) -> "InferenceEngine":
        return cls(classifier, poll_s=cfg.pipeline.queue_timeout_s, shutdown_timeout_s=cfg.pipeline.shutdown_timeout_s)

    def warm_up(self) -> None:
        """One call on a blank image, so the first lane does not pay the model's first-run setup."""
        size = getattr(getattr(self.classifier, "meta", None), "input_size", None)
        if size:
            try:
                self.classifier.batch_probabilities(torch.zeros((1, 3, size, size)))
            except Exception:
                logger.warning("warm-up call of the model failed", exc_info=True)

    # ------------------------------------------------------------ lifecycle

    def __enter__(self) -> "InferenceEngine":
        if self.ident is None:
            self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> bool:
        """Stop taking work, fail what is still waiting, join with a deadline. True when it stopped."""
        self._closing.set()
        with self._cond:
            self._cond.notify_all()
        if self.ident is not None:
            self.join(self.shutdown_timeout_s)
            if self.is_alive():
                logger.error("inference engine did not stop within %.1f s", self.shutdown_timeout_s)
                return False
        self._fail_waiting(EngineClosed("the inference engine stopped before this frame was classified"))
        return True

    @property
    def closed(self) -> bool:
        return self._closing.is_set() or self.stop_event.is_set()

    def healthy(self, max_silence_s: float) -> bool:
        """The engine thread is alive and looping (a model call in progress counts as looping)."""
        return self.is_alive() and (self.busy or time.monotonic() - self.heartbeat < max_silence_s)

    # ------------------------------------------------------------ submitting

    def submit(self, batch: torch.Tensor, *, priority: int = LANE, caller: str = "lane", top_k: int = 3) -> Future:
        """Queue a preprocessed batch (N, 3, S, S); the future gives N classifications."""
        if batch.ndim != 4 or batch.shape[0] < 1:
            raise ValueError(f"batch must be (N, 3, H, W) with N >= 1, got shape {tuple(batch.shape)}")
        if self.closed:
            raise EngineClosed("the inference engine is stopped")
        job = _Job(batch, top_k, caller, Future())
        with self._cond:
            self._queues.setdefault(caller, deque()).append(job)
            self._waiting += job.size
            self._cond.notify()
        return job.future

    def infer(self, batch: torch.Tensor, k: int = 3, *, priority: int = LANE, caller: str = "lane",
              timeout: float | None = None) -> list[Classification]:
        """Submit and wait: the blocking form (the lane worker's)."""
        return self.submit(batch, priority=priority, caller=caller, top_k=k).result(timeout)

    def lane(self, caller: str) -> "EngineClient":
        """A classifier-shaped handle that sends one lane's frames through the engine."""
        return EngineClient(self, caller)

    def status(self) -> dict:
        return {"max_batch": self.max_batch, "busy": self.busy, "waiting": self._waiting, "images": self.images,
                "batches": self.batches, "failed": self.failed,
                "batch_sizes": dict(sorted(self.batch_sizes.items())),
                "queue_ms_p50": _r(self.queue_ms.get(50)), "queue_ms_p95": _r(self.queue_ms.get(95)),
                "model_ms_p50": _r(self.model_ms.get(50)), "model_ms_p95": _r(self.model_ms.get(95))}

    # ------------------------------------------------------------ the engine thread

    def _take(self) -> list[_Job]:
        """The next call's submissions (lock held): round-robin over callers, up to max_batch images."""
        jobs: list[_Job] = []
        images = 0
        progressed = True
        while progressed and images < self.max_batch:
            progressed = False
            for caller in list(self._queues):
                q = self._queues[caller]
                if q and (not jobs or images + q[0].size <= self.max_batch):
                    job = q.popleft()
                    jobs.append(job)
                    images += job.size
                    self._waiting -= job.size
                    progressed = True
                    self._queues.move_to_end(caller)   # the next batch starts with someone else
                if not q:
                    del self._queues[caller]
                if images >= self.max_batch:
                    break
        return jobs

    def run(self) -> None:
        try:
            while not self.closed:
                self.heartbeat = time.monotonic()
                with self._cond:
                    jobs = self._take()
                    if not jobs:
                        self._cond.wait(self.poll_s)
                        continue
                self._run_batch(jobs)
        except Exception:  # the engine must never die silently: lanes would wait forever
            logger.exception("inference engine failed")
        finally:
            self._fail_waiting(EngineClosed("the inference engine stopped"))

    def _run_batch(self, jobs: list[_Job]) -> None:
        jobs = [j for j in jobs if j.future.set_running_or_notify_cancel()]
        if not jobs:
            return
        self.busy = True
        start = time.monotonic()
        try:
            try:
                self._classify(jobs)
            except Exception as exc:
                for job in (jobs if len(jobs) > 1 else []):   # isolate the bad one
                    if job.future.done():
                        continue
                    try:
                        self._classify([job])
                    except Exception as one:
                        self.failed += 1
                        job.future.set_exception(one)
                if len(jobs) == 1:
                    self.failed += 1
                    jobs[0].future.set_exception(exc)
        finally:
            self.busy = False
        end = time.monotonic()
        images = sum(j.size for j in jobs)
        self.images += images
        self.batches += 1
        self.batch_sizes[images] = self.batch_sizes.get(images, 0) + 1
        self.model_ms.add((end - start) * 1e3)
        for j in jobs:
            self.queue_ms.add((start - j.submitted) * 1e3)

    def _classify(self, jobs: list[_Job]) -> None:
        batch = jobs[0].batch if len(jobs) == 1 else torch.cat([j.batch for j in jobs])
        probs = self.classifier.batch_probabilities(batch)
        row = 0
        for job in jobs:
            part = probs[row:row + job.size]
            row += job.size
            if not job.future.done():
                job.future.set_result(self.classifier.top_k(part, job.top_k))

    def _fail_waiting(self, exc: Exception) -> None:
        with self._cond:
            jobs = [j for q in self._queues.values() for j in q]
            self._queues.clear()
            self._waiting = 0
        for job in jobs:
            if job.future.set_running_or_notify_cancel():
                job.future.set_exception(exc)


def _r(v: float) -> float | None:
    return None if v != v else round(v, 2)


class EngineClient:
    """What a lane's inference worker holds instead of the classifier: the same ``preprocess`` and
    ``infer(batch, k)`` and the model's name, labels and info, but each call goes through the engine."""

    def __init__(self, engine: InferenceEngine, caller: str, priority: int = LANE):
        self.engine = engine
        self.caller = caller
        self.priority = priority
        self.classifier = engine.classifier

    @property
    def preprocess(self):
        return self.classifier.preprocess

    def infer(self, batch: torch.Tensor, k: int = 3) -> list[Classification]:
        return self.engine.infer(batch, k, priority=self.priority, caller=self.caller)

    def classify(self, images: Sequence[np.ndarray], k: int = 3) -> list[Classification]:
        return self.infer(self.preprocess(images), k) if len(images) else []

    @property
    def name(self) -> str:
        return self.classifier.name

    @property
    def labels(self) -> list[str]:
        return self.classifier.labels

    @property
    def trained(self) -> bool:
        return self.classifier.trained

    @property
    def meta(self):
        return self.classifier.meta

    @property
    def sha256(self) -> str:
        return self.classifier.sha256

    def info(self) -> dict:
        return self.classifier.info()
