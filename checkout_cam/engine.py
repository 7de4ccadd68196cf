"""The one inference engine in front of the model: every caller's images go through its thread.

Lane frames and HTTP photos share one model, one thread and one place where
batching, priorities and timing are decided:

- **Priorities.** Lane frames (``LANE``) go before HTTP requests (``HTTP``).
  A model call is never interrupted, so while a lane is active (it submitted
  a frame in the last ``lane_active_s``) HTTP batches are cut to
  ``max_batch_beside_lane`` images: the longest a lane frame can wait behind
  HTTP work is then one short model call, not a full batch.
- **Batching without delay.** When the model comes free, the engine takes what
  is waiting, up to ``max_batch`` images, and runs it as one call. A lone
  request runs at once; requests that arrive while the model is busy share
  the next call.
- **Fairness among lanes.** Each lane (caller) has its own queue; a batch takes
  lane submissions round-robin, so frames from several lanes share one call
  and a busy lane cannot starve a quiet one. HTTP callers are round-robin too.
- **Bounded.** At most ``max_queue`` HTTP images wait; one more raises
  ``EngineBusy`` (the web layer answers 503 with Retry-After). Lane frames are
  never refused: a live lane has at most one frame in flight.
- **Measured.** Queue time (submission to the start of its model call) and
  model time (the call itself) are kept apart, per priority class, and handed
  to observers (Prometheus) after every call.

Callers get a ``concurrent.futures.Future`` of ``list[Classification]``. If a
batched call fails, each submission is retried alone, so one bad image fails
only its own caller.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict, deque
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
import torch

from checkout_cam.errors import CheckoutCamError
from checkout_cam.results import Classification
from checkout_cam.stats import LatencyHistogram

logger = logging.getLogger(__name__)

LANE = 0
HTTP = 1
CLASS_NAMES = {LANE: "lane", HTTP: "http"}


class EngineBusy(CheckoutCamError):
    """The HTTP queue is full; ``retry_after_s`` is a fair guess of when there will be room."""

    def __init__(self, waiting: int, retry_after_s: float):
        super().__init__(f"inference queue full ({waiting} images waiting); retry in {retry_after_s:.0f} s",
                         exit_code=1)
        self.waiting = waiting
        self.retry_after_s = retry_after_s


class EngineClosed(CheckoutCamError):
    """The engine has stopped; nothing more is accepted."""


@dataclass
class _Job:
    batch: torch.Tensor
    top_k: int
    priority: int
    caller: str
    future: Future
    submitted: float = field(default_factory=time.monotonic)

    @property
    def size(self) -> int:
        return int(self.batch.shape[0])


@dataclass(frozen=True)
class BatchReport:
    """One model call, as the engine hands it to observers."""

    priority: int          # the class that started the call (a call holds one class only)
    images: int
    model_ms: float
    queue_ms: tuple[float, ...]   # per submission
    callers: tuple[str, ...]
    failed: int = 0


class _ClassStats:
    def __init__(self) -> None:
        self.images = 0
        self.batches = 0
        self.failed = 0
        self.rejected = 0
        self.queue_ms = LatencyHistogram()
        self.model_ms = LatencyHistogram()

    def to_dict(self) -> dict:
        return {"images": self.images, "batches": self.batches, "failed": self.failed,
                "rejected": self.rejected, "queue_ms_p50": _r(self.queue_ms.get(50)),
                "queue_ms_p95": _r(self.queue_ms.get(95)), "model_ms_p50": _r(self.model_ms.get(50)),
                "model_ms_p95": _r(self.model_ms.get(95))}


def _r(v: float) -> float | None:
    return None if v != v else round(v, 2)


class InferenceEngine(threading.Thread):
    """Owns the classifier; batches submissions from lanes and HTTP callers. A context manager."""

    def __init__(self, classifier, *, max_batch: int = 8, max_queue: int = 64, max_batch_beside_lane: int = 1,
                 max_share_beside_lane: float = 1.0, lane_active_s: float = 1.0, poll_s: float = 0.1,
                 stop: threading.Event | None = None, shutdown_timeout_s: float = 3.0):
        super().__init__(name="engine", daemon=True)
        self.classifier = classifier
        self.max_batch = max(1, max_batch)
        self.max_queue = max(1, max_queue)
        self.max_batch_beside_lane = max(1, min(max_batch_beside_lane, self.max_batch))
        self.max_share_beside_lane = min(1.0, max(0.01, max_share_beside_lane))
        self.lane_active_s = lane_active_s
        self._http_not_before = 0.0   # the HTTP share limit: no HTTP call before this (monotonic)
        self.poll_s = poll_s
        self.shutdown_timeout_s = shutdown_timeout_s
        self.stop_event = stop or threading.Event()
        self._closing = threading.Event()
        self._cond = threading.Condition()
        # priority -> caller -> jobs; OrderedDict order is the round-robin order (served caller moves last).
        self._queues: dict[int, OrderedDict[str, deque[_Job]]] = {LANE: OrderedDict(), HTTP: OrderedDict()}
        self._waiting = {LANE: 0, HTTP: 0}     # images
        self._last_lane = -1e9
        self._observers: list[Callable[[BatchReport], None]] = []
        self.stats = {LANE: _ClassStats(), HTTP: _ClassStats()}
        self.busy = False
        self.heartbeat = time.monotonic()
        self._model_ms_per_image = 0.0  # an EWMA, for Retry-After

    @classmethod
    def from_config(cls, classifier, cfg) -> "InferenceEngine":
        h = cfg.http
        return cls(classifier, max_batch=h.max_batch, max_queue=h.max_queue,
                   max_batch_beside_lane=h.max_batch_beside_lane, max_share_beside_lane=h.max_share_beside_lane,
                   poll_s=cfg.pipeline.queue_timeout_s,
                   shutdown_timeout_s=cfg.pipeline.shutdown_timeout_s)

    def warm_up(self) -> None:
        """One call on a blank image before serving, so the first caller does not pay for the model's
        first-run setup (oneDNN primitive creation: several times a normal call)."""
        size = getattr(getattr(self.classifier, "meta", None), "input_size", None)
        if not size:
            return
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
        self._fail_waiting(EngineClosed("the inference engine stopped before this image was classified"))
        return True

    @property
    def closed(self) -> bool:
        return self._closing.is_set() or self.stop_event.is_set()

    def add_observer(self, fn: Callable[[BatchReport], None]) -> None:
        """``fn(report)`` after every model call, in the engine thread (keep it quick)."""
        self._observers.append(fn)

    # ------------------------------------------------------------ submitting

    def submit(self, batch: torch.Tensor, *, priority: int = HTTP, caller: str = "http", top_k: int = 3) -> Future:
        """Queue a preprocessed batch (N, 3, S, S); the future gives N classifications.

        Raises EngineBusy when an HTTP submission would overfill the queue, EngineClosed after close().
        """
        if priority not in self._queues:
            raise ValueError(f"priority must be LANE ({LANE}) or HTTP ({HTTP}), got {priority!r}")
        if batch.ndim != 4 or batch.shape[0] < 1:
            raise ValueError(f"batch must be (N, 3, H, W) with N >= 1, got shape {tuple(batch.shape)}")
        if self.closed:
            raise EngineClosed("the inference engine is stopped")
        job = _Job(batch, top_k, priority, caller, Future())
        with self._cond:
            if priority == HTTP and self._waiting[HTTP] + job.size > self.max_queue:
                self.stats[HTTP].rejected += job.size
                raise EngineBusy(self._waiting[HTTP], self.retry_after_s())
            if priority == LANE:
                self._last_lane = job.submitted
            self._queues[priority].setdefault(caller, deque()).append(job)
            self._waiting[priority] += job.size
            self._cond.notify()
        return job.future

    def infer(self, batch: torch.Tensor, k: int = 3, *, priority: int = HTTP, caller: str = "http",
              timeout: float | None = None) -> list[Classification]:
        """Submit and wait: the blocking form (the lane worker's)."""
        return self.submit(batch, priority=priority, caller=caller, top_k=k).result(timeout)

    def lane(self, caller: str) -> "EngineClient":
        """A classifier-shaped handle that sends one lane's frames through the engine."""
        return EngineClient(self, caller, LANE)

    def retry_after_s(self) -> float:
        """Seconds until the waiting HTTP images are likely done (at least 1: Retry-After is whole seconds)."""
        per_image = self._model_ms_per_image or 50.0
        return max(1.0, round(self._waiting[HTTP] * per_image / 1000.0))

    def waiting(self, priority: int | None = None) -> int:
        with self._cond:
            return sum(self._waiting.values()) if priority is None else self._waiting[priority]

    def lane_active(self, now: float | None = None) -> bool:
        now = time.monotonic() if now is None else now
        return now - self._last_lane < self.lane_active_s

    def status(self) -> dict:
        """What /api/status and the metrics show about the engine."""
        return {"max_batch": self.max_batch, "max_queue": self.max_queue, "busy": self.busy,
                "waiting": {CLASS_NAMES[p]: n for p, n in self._waiting.items()},
                "lane_active": self.lane_active(),
                **{CLASS_NAMES[p]: s.to_dict() for p, s in self.stats.items()}}

    # ------------------------------------------------------------ the engine thread

    def _take(self) -> list[_Job]:
        """The next call's submissions (called with the lock held): lanes first, round-robin per caller."""
        for priority in (LANE, HTTP):
            queues = self._queues[priority]
            if not self._waiting[priority]:
                continue
            limit = self.max_batch
            if priority == HTTP and self.lane_active():
                if time.monotonic() < self._http_not_before:
                    return []   # the model's rest period after an HTTP call, kept for the lane
                limit = self.max_batch_beside_lane
            jobs: list[_Job] = []
            images = 0
            progressed = True
            while progressed and images < limit:
                progressed = False
                for caller in list(queues):
                    q = queues[caller]
                    if q and (not jobs or images + q[0].size <= limit):
                        job = q.popleft()
                        jobs.append(job)
                        images += job.size
                        self._waiting[priority] -= job.size
                        progressed = True
                        queues.move_to_end(caller)  # the next batch starts with someone else
                    if not q:
                        del queues[caller]
                    if images >= limit:
                        break
            if jobs:
                return jobs
        return []

    def run(self) -> None:
        try:
            # Closing does not drain the queue: the call in progress finishes, what waits is failed.
            while not self.closed:
                self.heartbeat = time.monotonic()
                with self._cond:
                    jobs = self._take()
                    if not jobs:
                        rest = self._http_not_before - time.monotonic()
                        self._cond.wait(min(self.poll_s, rest) if rest > 0 else self.poll_s)
                        continue
                self._run_batch(jobs)
        except Exception:  # the engine must never die silently: callers would wait forever
            logger.exception("inference engine failed")
        finally:
            self._fail_waiting(EngineClosed("the inference engine stopped"))
            logger.debug("inference engine done: %s", self.status())

    def _run_batch(self, jobs: list[_Job]) -> None:
        jobs = [j for j in jobs if j.future.set_running_or_notify_cancel()]  # a caller that gave up
        if not jobs:
            return
        self.busy = True
        start = time.monotonic()
        outcomes: list[tuple[_Job, object]] = []
        try:
            try:
                outcomes = list(zip(jobs, self._classify(jobs)))
            except Exception as exc:
                if len(jobs) == 1:
                    outcomes = [(jobs[0], exc)]
                else:
                    for job in jobs:  # isolate the bad one
                        try:
                            outcomes.append((job, self._classify([job])[0]))
                        except Exception as one:
                            outcomes.append((job, one))
        finally:
            self.busy = False
        end = time.monotonic()
        failed = [(j, o) for j, o in outcomes if isinstance(o, BaseException)]
        for job, exc in failed:
            logger.warning("inference failed for %s: %s: %s", job.caller, type(exc).__name__, exc)
        model_ms = (end - start) * 1e3
        images = sum(j.size for j in jobs)
        if jobs[0].priority == HTTP and self.max_share_beside_lane < 1.0 and self.lane_active(end):
            self._http_not_before = end + (end - start) * (1.0 - self.max_share_beside_lane) / self.max_share_beside_lane
        self._model_ms_per_image = 0.8 * self._model_ms_per_image + 0.2 * model_ms / images \
            if self._model_ms_per_image else model_ms / images
        report = BatchReport(jobs[0].priority, images, model_ms,
                             tuple((start - j.submitted) * 1e3 for j in jobs), tuple(j.caller for j in jobs),
                             len(failed))
        # Counted before the callers hear back, so whoever has an answer sees it in the figures.
        s = self.stats[report.priority]
        s.images += images
        s.batches += 1
        s.failed += len(failed)
        s.model_ms.add(model_ms)
        for q in report.queue_ms:
            s.queue_ms.add(q)
        for fn in self._observers:
            try:
                fn(report)
            except Exception:
                logger.exception("engine observer %r failed", fn)
        for job, outcome in outcomes:
            if isinstance(outcome, BaseException):
                job.future.set_exception(outcome)
            else:
                job.future.set_result(outcome)

    def _classify(self, jobs: list[_Job]) -> list[list[Classification]]:
        batch = jobs[0].batch if len(jobs) == 1 else torch.cat([j.batch for j in jobs])
        probs = self.classifier.batch_probabilities(batch)
        out, row = [], 0
        for job in jobs:
            out.append(self.classifier.top_k(probs[row:row + job.size], job.top_k))
            row += job.size
        return out

    def _fail_waiting(self, exc: Exception) -> None:
        with self._cond:
            jobs = [j for queues in self._queues.values() for q in queues.values() for j in q]
            for queues in self._queues.values():
                queues.clear()
            self._waiting = {LANE: 0, HTTP: 0}
        for job in jobs:
            if job.future.set_running_or_notify_cancel():
                job.future.set_exception(exc)


class EngineClient:
    """What the lane's inference worker holds instead of the classifier: the same ``preprocess`` and
    ``infer(batch, k)``, and the model's name, labels and info, but each call goes through the engine."""

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
        return self.infer(self.classifier.preprocess(images), k) if len(images) else []

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
