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
* An item is a presence interval: the scanning area occupied (``presence.py``:
  a background model of the empty lane, learned, adapting to slow light) for
  at least ``stable_results`` classified results, until it is empty for
  ``empty_results`` results. Its label is decided over the whole interval (the
  mean of its results' Top-k), so a model whose top-1 flickers between two
  classes gives one item, flagged ``mixed_labels`` when under
  ``min_label_share`` of its results agree with the label. An item swapped for
  another without an empty gap is told apart by its colours (the
  foreground's colour histogram moves ``swap_threshold`` away for
  ``stable_results`` results): two events. Two identical items scanned without
  an empty scene between them are one event.
* A camera outage (a gap over ``outage_gap_s`` between frames, or the source
  saying it went away) closes the open item at its last frame with
  ``closed_by="camera_lost"`` and the reason ``camera_lost``: nothing spans a
  blind gap. The decision carries an ``Outage`` for the event log.
* Everything is a pure function of the inputs (no clocks, no randomness), so a
  replay gives the same events every time.
"""

from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime, timezone

import numpy as np

from checkout_cam.config import ReviewConfig
from checkout_cam.frames import Frame
from checkout_cam.preprocess import roi_thumbnail
from checkout_cam.presence import LaneBackground, signature_distance
from checkout_cam.results import Classification, InferenceResult, Prediction
from checkout_cam.schema import ItemRecord, RunIdentity

logger = logging.getLogger(__name__)

LOW_CONFIDENCE = "low_confidence"
LOW_MARGIN = "low_margin"
UNTRAINED = "untrained"
MIXED_LABELS = "mixed_labels"
CAMERA_LOST = "camera_lost"

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
    label_share: float = 1.0                 # share of its results whose top-1 was ``label``
    video_t_start: float | None = None       # seconds into the file, when the source is a file
    video_t_end: float | None = None

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
            **self._video_times(wall_clock_offset),
        }

    def _video_times(self, wall_clock_offset: float | None) -> dict:
        # A file played in serve/live: t_start/t_end are the wall clock when its frames were shown;
        # these say where in the file the item was.
        if wall_clock_offset is None or self.video_t_start is None:
            return {}
        return {"clock": "wall (file played in real time)", "video_t_start": round(self.video_t_start, 3),
                "video_t_end": round(self.video_t_end if self.video_t_end is not None else self.video_t_start, 3)}


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
    outage: "Outage | None" = None      # an outage that ended with this frame (the record to log)
    item_id: str | None = None          # the open item's event id (what an attendant's resolution names)


@dataclass(frozen=True)
class Outage:
    """The camera delivered no frames from ``start`` (its last frame) to ``end`` (the next; None while
    it lasts). Times are in the policy's clock (video seconds in replay, monotonic otherwise)."""

    start: float
    end: float | None
    reason: str
    last_frame: int | None
    item_closed: str | None = None

    @property
    def duration_s(self) -> float | None:
        return None if self.end is None else round(self.end - self.start, 3)


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
    votes: dict[int, int] = field(default_factory=dict)
    video_start: float | None = None
    video_end: float | None = None
    signature: np.ndarray | None = None
    opened: bool = False

    def add(self, frame: Frame, result: InferenceResult, t: float) -> None:
        for i, p in _sparse(result.classification).items():
            self.sums[i] = self.sums.get(i, 0.0) + p
        best = result.classification.best.index
        self.votes[best] = self.votes.get(best, 0) + 1
        self.count += 1
        self.seen(frame, t)

    def seen(self, frame: Frame, t: float) -> None:
        self.frame_end, self.t_end = frame.frame_id, t
        self.video_end = frame.video_time
        if self.video_start is None:
            self.video_start = frame.video_time

    def absorb(self, other: "_Run") -> None:
        for i, s in other.sums.items():
            self.sums[i] = self.sums.get(i, 0.0) + s
        for i, v in other.votes.items():
            self.votes[i] = self.votes.get(i, 0) + v
        self.count += other.count
        if other.count:
            self.frame_end, self.t_end, self.video_end = other.frame_end, other.t_end, other.video_end


class ReviewPolicy:
    """Smooths results for display, flags unsure ones, and turns presence intervals into item events.

    ``capture_clock``: times are the frames' monotonic capture times (live,
    serve) rather than ``Frame.time`` (video seconds in replay).
    """

    def __init__(self, cfg: ReviewConfig, *, trained: bool, labels: list[str],
                 roi: list[float] | None = None, top_k: int = 3, identity: RunIdentity | None = None,
                 capture_clock: bool = False):
        self.cfg = cfg
        self.identity = identity or RunIdentity()
        self.trained = trained
        self.labels = list(labels)
        self.roi = list(roi) if roi is not None else None
        self.top_k = top_k
        self.capture_clock = capture_clock
        # stable_results is >= 2 by config; guard against hand-built configs too.
        self._stable = max(2, cfg.stable_results)
        self._names: dict[int, str] = {}
        self._history: deque[dict[int, float]] = deque(maxlen=cfg.smoothing_window)
        self.lane = LaneBackground(cfg, self.roi)
        self._empty_run = 0
        self._run: _Run | None = None        # the presence interval in view: open event, or not yet
        self._swap: _Run | None = None       # results that look like another item than the open one
        self._last: tuple[int, float] | None = None   # (frame id, time) of the last frame judged
        self._outage: Outage | None = None   # an outage the source reported, not yet over

    # ------------------------------------------------------------ background

    def set_background(self, image: np.ndarray) -> None:
        """Take ``image`` (BGR, any size) as what the empty scanning area looks like."""
        self.lane.set(image)

    def background_diff(self, image: np.ndarray) -> float:
        """Mean absolute difference (0-255 levels) of the scanning area from the learned background
        (0 while none is learned)."""
        if not self.lane.known:
            return 0.0
        thumb = roi_thumbnail(image, self.roi).astype(np.float32)
        return float(np.abs(thumb - self.lane._bg).mean()) if thumb.shape == self.lane._bg.shape else 0.0

    # ------------------------------------------------------------ thresholds

    def policy_dict(self) -> dict:
        """The thresholds in use, recorded with every event."""
        c = self.cfg
        return {"min_confidence": c.min_confidence, "min_margin": c.min_margin,
                "smoothing_window": c.smoothing_window, "stable_results": self._stable,
                "empty_threshold": c.empty_threshold, "empty_results": c.empty_results,
                "min_label_share": c.min_label_share, "swap_threshold": c.swap_threshold}

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

    def _event(self, run: _Run, closed_by: str | None = None, end: tuple[int, float] | None = None) -> ItemEvent:
        ranked = _ranked(run.sums, run.count)
        index = ranked[0][0]
        confidence = run.sums.get(index, 0.0) / run.count
        runner_up = max((p for i, p in ranked if i != index), default=0.0)
        share = run.votes.get(index, 0) / run.count
        reasons = list(self.reasons_for(confidence, confidence - runner_up))
        if below(share, self.cfg.min_label_share):
            reasons.append(MIXED_LABELS)
        if closed_by == "camera_lost":
            reasons.append(CAMERA_LOST)
        frame_end, t_end, video_end = run.frame_end, run.t_end, run.video_end
        if end is not None and run.frame_start <= end[0] < frame_end:
            frame_end, t_end = end
            if video_end is not None and run.video_start is not None:
                video_end = run.video_start + (t_end - run.t_start)
        return ItemEvent(label=self._name(index), index=index, confidence=min(confidence, 1.0),
                         top=self._classification(ranked).top, review=bool(reasons),
                         review_reasons=tuple(reasons), frame_start=run.frame_start, frame_end=frame_end,
                         t_start=run.t_start, t_end=t_end, results=run.count, id=run.id, seq=run.seq,
                         closed_by=closed_by, label_share=round(share, 4), video_t_start=run.video_start,
                         video_t_end=video_end)

    def _end_run(self, why: str, end: tuple[int, float] | None = None) -> ItemEvent | None:
        """The presence interval is over: its event if it was one (a blip shorter than stable_results
        is dropped)."""
        run, self._run = self._run, None
        if self._swap is not None and run is not None and run.opened:
            run.absorb(self._swap)
        self._swap = None
        self._history.clear()
        if run is None or not run.opened:
            return None
        event = self._event(run, closed_by=why, end=end)
        logger.debug("item closed (%s): %s frames %d-%d", why, event.label, event.frame_start, event.frame_end)
        return event

    def _open(self, run: _Run) -> ItemEvent:
        run.opened = True
        run.id, run.seq = self.identity.next_event()
        event = self._event(run)
        logger.debug("item opened: %s at frame %d", event.label, event.frame_start)
        return event

    def _time(self, frame: Frame) -> float:
        return frame.timestamp if self.capture_clock else frame.time

    # ------------------------------------------------------------ outages

    def camera_lost(self, reason: str) -> tuple[ItemEvent | None, Outage | None]:
        """The source says the camera went away (live). Close the open item at its last frame now, so
        a kill during the outage loses nothing; returns (closed item, the outage so far)."""
        if self._outage is not None:
            return None, None
        closed = self._end_run("camera_lost")
        self._empty_run = 0
        start = self._last[1] if self._last is not None else 0.0
        self._outage = Outage(start=start, end=None, reason=reason,
                              last_frame=self._last[0] if self._last is not None else None,
                              item_closed=closed.id if closed is not None else None)
        self.lane.reset()
        return closed, self._outage

    # ------------------------------------------------------------ per result

    def update(self, frame: Frame, result: InferenceResult) -> Decision:
        """Judge one result (in frame order); ``frame`` is the frame it was made from."""
        t = self._time(frame)
        opened = closed = outage = None
        # Replay judges gaps here, on every frame; live sources have the capture thread do it (this policy
        # sees only the frames the model kept up with).
        if not self.capture_clock and self._outage is None and self._last is not None \
                and t - self._last[1] > self.cfg.outage_gap_s:
            gap = t - self._last[1]
            logger.warning("no frames for %.1f s (after frame %d): camera outage", gap, self._last[0])
            closed, _ = self.camera_lost(f"no frames for {gap:.1f} s")
        if self._outage is not None:
            outage = Outage(self._outage.start, t, self._outage.reason, self._outage.last_frame,
                            self._outage.item_closed)
            logger.info("camera back after %.1f s", outage.duration_s)
            self._outage = None
        self._last = (frame.frame_id, t)

        p = self.lane.update(frame.image, frame.frame_id, t)
        if p.ended_before is not None and self._run is not None:
            # The lane has looked like this since ended_before: the presence ended there.
            closed = self._end_run("empty", end=p.ended_before) or closed
        smoothed = None
        if not p.occupied:
            self._empty_run += 1
            self._history.clear()
            if self._empty_run >= self.cfg.empty_results and self._run is not None:
                closed = self._end_run("empty") or closed
        else:
            self._empty_run = 0
            if result.classification is not None:
                for q in result.classification.top:
                    self._names.setdefault(q.index, q.label)
                self._history.append(_sparse(result.classification))
                sums: dict[int, float] = {}
                for vec in self._history:
                    for i, q in vec.items():
                        sums[i] = sums.get(i, 0.0) + q
                smoothed = self._classification(_ranked(sums, len(self._history)))
                o, c = self._track(frame, result, t, p.signature)
                opened, closed = o or opened, c or closed
            else:
                # Neither evidence nor an end: the item's interval is made of the results it has.
                logger.debug("frame %d: inference error (%s); presence goes on", frame.frame_id, result.error)
        reasons = self.reasons_for(smoothed.best.prob, smoothed.margin) if smoothed is not None else ()
        item = item_id = None
        if self._run is not None and self._run.opened:
            item = self._name(_ranked(self._run.sums, self._run.count)[0][0])
            item_id = self._run.id or None
        return Decision(frame_id=frame.frame_id, result=result, smoothed=smoothed, review=bool(reasons),
                        reasons=reasons, empty=not p.occupied, item=item, opened=opened, closed=closed,
                        background_diff=p.diff, outage=outage, item_id=item_id)

    def _track(self, frame: Frame, result: InferenceResult, t: float,
               signature: np.ndarray | None) -> tuple[ItemEvent | None, ItemEvent | None]:
        """Add one classified result of an occupied lane to the item in view; open, swap."""
        run = self._run
        if run is None:
            run = self._run = _Run(index=result.classification.best.index, frame_start=frame.frame_id,
                                   t_start=t, video_start=frame.video_time)
        if run.opened and signature is not None:
            if run.signature is None:
                run.signature = signature
            elif signature_distance(signature, run.signature) > self.cfg.swap_threshold:
                if self._swap is None:
                    self._swap = _Run(index=result.classification.best.index, frame_start=frame.frame_id,
                                      t_start=t, video_start=frame.video_time, signature=signature)
                self._swap.add(frame, result, t)
                if self._swap.count < self._stable:
                    return None, None
                closed = self._end_run_for_swap()
                return self._open(self._run), closed
            else:
                if self._swap is not None:   # it was the same item after all (turned, partly hidden)
                    run.absorb(self._swap)
                    self._swap = None
                run.signature = 0.9 * run.signature + 0.1 * signature
        run.add(frame, result, t)
        if not run.opened and run.count >= self._stable:
            return self._open(run), None
        return None, None

    def _end_run_for_swap(self) -> ItemEvent | None:
        run, swap = self._run, self._swap
        self._swap = None
        event = self._event(run, closed_by="swap")
        self._run = swap
        logger.debug("item swapped: %s frames %d-%d", event.label, event.frame_start, event.frame_end)
        return event

    def close(self) -> ItemEvent | None:
        """End of input or shutdown: close the open item event, if any, and return it."""
        self._empty_run = 0
        return self._end_run("end")
