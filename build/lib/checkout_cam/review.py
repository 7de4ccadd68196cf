"""The review policy: from per-frame results to one decision per item.

``ReviewPolicy.update`` is called once per inference result, in frame order,
and returns a ``Decision``: the smoothed Top-k to show, whether a cashier must
look (and why), whether the scanning area is empty, and the item event that
opened or closed with this result.

Choices, and why:

* Smoothing is a sparse mean: each result only carries its top-k, so a label
  missing from one result's top-k counts as probability 0 there. That
  under-states, never over-states, a label's smoothed probability, so it errs
  towards flagging. The full probability vectors are not needed.
* Results whose inference failed (``classification is None``) neither extend
  nor break label stability: a transient error must not split one item into
  two events, nor stand in for evidence. Their frame still counts for the
  empty-scene check, which looks at the image, not at the model.
* An event's ``confidence`` and ``top`` are the mean of all the raw results it
  was made of (from the first result of the run that made it stable to its
  last), and its ``review`` flag applies the same thresholds to that mean. So
  the flag always agrees with the numbers logged beside it, and an item's
  partial views as it enters and leaves the area weigh no more than any other
  frame (a flag "at close" would judge the item on its exit).
* Thresholds are strict: a value exactly at ``min_confidence`` or
  ``min_margin`` passes (to within 1e-9, so float rounding of averages does
  not decide).
* An item event needs ``stable_results`` >= 2 consecutive results, so a label
  seen in one frame is never an event. Two identical items scanned without an
  empty scene between them are one event.
* Everything is a pure function of the inputs (no clocks, no randomness), so a
  replay gives the same events every time.
"""

from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime, timezone

import cv2
import numpy as np

from checkout_cam.config import ReviewConfig
from checkout_cam.frames import Frame
from checkout_cam.preprocess import roi_thumbnail
from checkout_cam.results import Classification, InferenceResult, Prediction
from checkout_cam.schema import ItemRecord, RunIdentity

logger = logging.getLogger(__name__)

LOW_CONFIDENCE = "low_confidence"
LOW_MARGIN = "low_margin"
UNTRAINED = "untrained"

# Float averages land a hair either side of a threshold; "at the threshold" passes.
_EPS = 1e-9
# The empty-scene check compares thumbnails this wide: sensor noise and
# compression artefacts average out, and it costs well under a millisecond.


def format_time(t: float, wall_clock_offset: float | None) -> float | str:
    """Video seconds (rounded to ms) when offset is None, else ISO 8601 UTC of monotonic ``t`` + offset."""
    if wall_clock_offset is None:
        return round(float(t), 3)
    return datetime.fromtimestamp(t + wall_clock_offset, tz=timezone.utc).isoformat(timespec="milliseconds")


def below(value, threshold: float):
    """The review rule's comparison, shared with `evaluate`: a value exactly at a threshold
    passes (within float noise). Works on numbers and on numpy arrays alike."""
    return value < threshold - _EPS


@dataclass(frozen=True)
class ItemEvent:
    """One decision per item: what it was, how sure, and whether a cashier must look.

    ``confidence`` is the mean probability of ``label`` over the event's
    results and ``top`` the mean Top-k (see the module notes); ``results`` is
    how many results were averaged.
    """

    label: str
    index: int
    confidence: float
    top: tuple[Prediction, ...]
    review: bool
    review_reasons: tuple[str, ...]
    frame_start: int
    frame_end: int
    t_start: float
    t_end: float
    results: int = 0
    id: str = ""          # <lane_id>-<run_id>-<seq> (schema.RunIdentity), the same at open and close
    seq: int = 0
    closed_by: str | None = None

    def record(self, *, identity: RunIdentity, source: str, model: dict, policy: dict,
               wall_clock_offset: float | None) -> ItemRecord:
        """The typed event-log line (schema.ItemRecord)."""
        return ItemRecord.from_dict(self.to_dict(identity=identity, source=source, model=model, policy=policy,
                                                 wall_clock_offset=wall_clock_offset))

    def to_dict(self, *, source: str, model: dict, policy: dict, wall_clock_offset: float | None,
                identity: RunIdentity | None = None) -> dict:
        """The event-log line. Times are video seconds when ``wall_clock_offset`` is None (replay),
        else ISO 8601 UTC wall time (monotonic time + offset, offset = time.time() - time.monotonic())."""
        identity = identity or _ANONYMOUS
        return {
            "type": "item",
            "id": self.id or identity.event_id(max(self.seq, 1)),
            "seq": max(self.seq, 1),
            **identity.as_dict(),
            "label": self.label,
            "index": self.index,
            "confidence": round(float(self.confidence), 6),
            "top": [p.to_dict() for p in self.top],
            "review": self.review,
            "review_reasons": list(self.review_reasons),
            "frame_start": self.frame_start,
            "frame_end": self.frame_end,
            "t_start": format_time(self.t_start, wall_clock_offset),
            "t_end": format_time(self.t_end, wall_clock_offset),
            "results": self.results,
            "source": source,
            "model": {"name": model.get("name"), "sha256": model.get("sha256"),
                      "trained": model.get("trained")},
            "policy": dict(policy),
            "closed_by": self.closed_by,
        }


# Events built by hand (tests, tools) without a run get this identity.
_ANONYMOUS = RunIdentity("lane1", "19700101T000000Z-000000")


@dataclass(frozen=True)
class Decision:
    """What the policy says about one inference result.

    ``smoothed`` is None when the result was an error or the scene is empty.
    ``item`` is the label of the item event open after this result.
    ``background_diff`` is the scanning area's mean difference from the
    background (0-255 levels), what ``empty_threshold`` is compared with.
    """

    frame_id: int
    result: InferenceResult
    smoothed: Classification | None
    review: bool
    reasons: tuple[str, ...]
    empty: bool
    item: str | None
    opened: ItemEvent | None
    closed: ItemEvent | None
    background_diff: float = 0.0


def _sparse(c: Classification) -> dict[int, float]:
    return {p.index: float(p.prob) for p in c.top}


def _ranked(sums: dict[int, float], n: int) -> list[tuple[int, float]]:
    # Ties broken by class index, so the order never depends on dict history.
    return sorted(((i, s / n) for i, s in sums.items()), key=lambda item: (-item[1], item[0]))


@dataclass
class _Run:
    """Results attributed to one label: an open event, or a candidate not yet stable."""

    index: int
    frame_start: int
    t_start: float
    frame_end: int = 0
    t_end: float = 0.0
    sums: dict[int, float] = field(default_factory=dict)
    count: int = 0
    id: str = ""
    seq: int = 0

    def add(self, frame: Frame, result: InferenceResult) -> None:
        for i, p in _sparse(result.classification).items():
            self.sums[i] = self.sums.get(i, 0.0) + p
        self.count += 1
        self.frame_end, self.t_end = frame.frame_id, frame.time

    def absorb(self, other: "_Run") -> None:
        for i, s in other.sums.items():
            self.sums[i] = self.sums.get(i, 0.0) + s
        self.count += other.count
        if other.count:
            self.frame_end, self.t_end = other.frame_end, other.t_end


class ReviewPolicy:
    """Smooths results, flags unsure ones, and turns stable runs into item events."""

    def __init__(self, cfg: ReviewConfig, *, trained: bool, labels: list[str],
                 roi: list[float] | None = None, top_k: int = 3, identity: RunIdentity | None = None):
        self.cfg = cfg
        self.identity = identity or RunIdentity()
        self.trained = trained
        self.labels = list(labels)
        self.roi = list(roi) if roi is not None else None
        self.top_k = top_k
        # stable_results is >= 2 by config; guard against hand-built configs too.
        self._stable = max(2, cfg.stable_results)
        self._names: dict[int, str] = {}
        self._history: deque[dict[int, float]] = deque(maxlen=cfg.smoothing_window)
        self._background: np.ndarray | None = None
        self._empty_run = 0
        self._open: _Run | None = None       # the open item event
        self._pending: _Run | None = None    # a label becoming stable, other than the open one
        self._current: int | None = None     # the smoothed top-1 label of the last result
        self._streak = 0                     # consecutive results it has held

    # ------------------------------------------------------------ background

    def _thumb(self, image: np.ndarray) -> np.ndarray:
        return roi_thumbnail(image, self.roi)

    def set_background(self, image: np.ndarray) -> None:
        """Take ``image`` (BGR, any size) as what the empty scanning area looks like."""
        self._background = self._thumb(image)
        logger.info("background reference taken (%dx%d thumbnail of the scanning area)",
                    self._background.shape[1], self._background.shape[0])

    def background_diff(self, image: np.ndarray) -> float:
        """Mean absolute difference (0-255 levels, over pixels and colour channels) of the
        scanning area from the background."""
        thumb = self._thumb(image)
        if self._background is None:
            self._background = thumb
            logger.info("no background set; the first frame is taken as the empty scene")
        elif self._background.shape != thumb.shape:
            logger.warning("frame size changed (%s -> %s thumbnail); background re-taken",
                           self._background.shape, thumb.shape)
            self._background = thumb
        return float(cv2.absdiff(thumb, self._background).mean())

    # ------------------------------------------------------------ thresholds

    def policy_dict(self) -> dict:
        """The thresholds in use, recorded with every event."""
        c = self.cfg
        return {"min_confidence": c.min_confidence, "min_margin": c.min_margin,
                "smoothing_window": c.smoothing_window, "stable_results": self._stable,
                "empty_threshold": c.empty_threshold, "empty_results": c.empty_results}

    def reasons_for(self, confidence: float, margin: float) -> tuple[str, ...]:
        """Why a cashier must look at a label with this top-1 probability and top-1 minus top-2."""
        reasons = []
        if below(confidence, self.cfg.min_confidence):
            reasons.append(LOW_CONFIDENCE)
        if below(margin, self.cfg.min_margin):
            reasons.append(LOW_MARGIN)
        if not self.trained:
            reasons.append(UNTRAINED)
        return tuple(reasons)

    def _name(self, index: int) -> str:
        if 0 <= index < len(self.labels):
            return self.labels[index]
        return self._names.get(index, str(index))

    def _classification(self, ranked: list[tuple[int, float]]) -> Classification:
        return Classification(tuple(Prediction(i, self._name(i), min(p, 1.0))
                                    for i, p in ranked[:self.top_k]))

    # ------------------------------------------------------------ events

    def _event(self, run: _Run, closed_by: str | None = None) -> ItemEvent:
        ranked = _ranked(run.sums, run.count)
        confidence = run.sums.get(run.index, 0.0) / run.count
        runner_up = max((p for i, p in ranked if i != run.index), default=0.0)
        reasons = self.reasons_for(confidence, confidence - runner_up)
        return ItemEvent(label=self._name(run.index), index=run.index, confidence=min(confidence, 1.0),
                         top=self._classification(ranked).top, review=bool(reasons),
                         review_reasons=reasons, frame_start=run.frame_start, frame_end=run.frame_end,
                         t_start=run.t_start, t_end=run.t_end, results=run.count, id=run.id, seq=run.seq,
                         closed_by=closed_by)

    def _close_open(self, why: str) -> ItemEvent | None:
        if self._open is None:
            return None
        event = self._event(self._open, closed_by=why)
        self._open = None
        logger.debug("item closed: %s frames %d-%d", event.label, event.frame_start, event.frame_end)
        return event

    def _break_pending(self) -> None:
        # The run that did not become stable: while an item is open its frames
        # were that item's unsure moments; otherwise it was a flicker.
        if self._pending is not None and self._open is not None:
            self._open.absorb(self._pending)
        self._pending = None

    def _reset_stability(self) -> None:
        self._break_pending()
        self._history.clear()
        self._current, self._streak = None, 0

    def update(self, frame: Frame, result: InferenceResult) -> Decision:
        """Judge one result (in frame order); ``frame`` is the frame it was made from."""
        diff = self.background_diff(frame.image)
        empty = diff < self.cfg.empty_threshold
        opened = closed = None
        smoothed = None
        if empty:
            self._empty_run += 1
            self._reset_stability()
            if self._empty_run >= self.cfg.empty_results:
                closed = self._close_open("empty")
        else:
            self._empty_run = 0
        if not empty and result.classification is not None:
            for p in result.classification.top:
                self._names.setdefault(p.index, p.label)
            self._history.append(_sparse(result.classification))
            sums: dict[int, float] = {}
            for vec in self._history:
                for i, p in vec.items():
                    sums[i] = sums.get(i, 0.0) + p
            ranked = _ranked(sums, len(self._history))
            smoothed = self._classification(ranked)
            opened, closed = self._track(frame, result, smoothed.best.index)
        elif not empty:
            logger.debug("frame %d: inference error (%s); stability unchanged", frame.frame_id, result.error)
        if smoothed is not None:
            reasons = self.reasons_for(smoothed.best.prob, smoothed.margin)
        else:
            reasons = ()
        return Decision(frame_id=frame.frame_id, result=result, smoothed=smoothed, review=bool(reasons),
                        reasons=reasons, empty=empty,
                        item=self._name(self._open.index) if self._open is not None else None,
                        opened=opened, closed=closed, background_diff=diff)

    def _track(self, frame: Frame, result: InferenceResult, top: int) -> tuple[ItemEvent | None, ItemEvent | None]:
        """Attribute one classified result to the open event or the candidate run; open/close events."""
        if top == self._current:
            self._streak += 1
        else:
            self._break_pending()
            self._current, self._streak = top, 1
        if self._open is not None and top == self._open.index:
            self._open.add(frame, result)
            return None, None
        if self._pending is None:
            self._pending = _Run(index=top, frame_start=frame.frame_id, t_start=frame.time)
        self._pending.add(frame, result)
        if self._streak < self._stable:
            return None, None
        closed = self._close_open("label_change")
        self._open, self._pending = self._pending, None
        self._open.id, self._open.seq = self.identity.next_event()
        opened = self._event(self._open)
        logger.debug("item opened: %s at frame %d", opened.label, opened.frame_start)
        return opened, closed

    def close(self) -> ItemEvent | None:
        """End of input or shutdown: close the open item event, if any, and return it."""
        self._reset_stability()
        self._empty_run = 0
        return self._close_open("end")
