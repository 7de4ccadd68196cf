import json
from datetime import datetime

import numpy as np
import pytest

from checkout_cam.config import ReviewConfig
from checkout_cam.frames import Frame
from checkout_cam.results import Classification, InferenceResult, Prediction
from checkout_cam.schema import RunIdentity
from checkout_cam.review import ItemEvent, ReviewPolicy

LABELS = ["apple", "banana", "carrot", "milk"]
H, W = 120, 160


def scene(item: bool, seed: int = 0, colour=(30, 60, 200), light: int = 0, dx: int = 0) -> np.ndarray:
    """The counter (textured, with sensor noise, ``light`` levels brighter) and, if item, a box held
    over it (``dx`` pixels to the right)."""
    rng = np.random.default_rng(seed)
    img = np.full((H, W, 3), 110 + light, np.uint8)
    img[:, ::8] = 90 + light  # some texture
    img = np.clip(img.astype(np.int16) + rng.integers(-4, 5, img.shape), 0, 255).astype(np.uint8)
    if item:
        img[20:100, 40 + dx:120 + dx] = colour
    return img


def cls(*probs: tuple[str, float]) -> Classification:
    return Classification(tuple(Prediction(LABELS.index(name), name, p) for name, p in probs))


class Feed:
    """Drives a policy with frames numbered 0, 1, 2... at 30 fps of video time."""

    def __init__(self, policy: ReviewPolicy, video: bool = True):
        self.policy, self.video, self.n = policy, video, 0
        self.decisions = []

    def __call__(self, c: Classification | None, item: bool = True, error: str | None = None, gap: float = 0.0,
                 **look):
        i = self.n
        self.n += 1
        self.skew = getattr(self, "skew", 0.0) + gap
        t = 1000.0 + i / 30 + self.skew
        vt = i / 30 + self.skew if self.video else None
        frame = Frame(scene(item, seed=i, **look), frame_id=i, timestamp=t, source="test", video_time=vt)
        if c is None and error is None:
            c = cls(("apple", 0.1))  # an empty scene still gets a (meaningless) classification
        result = InferenceResult(i, t, vt, None if error else c, 5.0, done=t + 0.01, error=error)
        d = self.policy.update(frame, result)
        self.decisions.append(d)
        return d

    def events(self):
        closed = [d.closed for d in self.decisions if d.closed]
        last = self.policy.close()
        return closed + ([last] if last else [])


def policy(trained=True, **kw) -> ReviewPolicy:
    cfg = dict(min_confidence=0.6, min_margin=0.15, smoothing_window=3, stable_results=3,
               empty_threshold=12.0, empty_results=2)
    cfg.update(kw)
    # One fixed run identity: same input, same events, ids included.
    p = ReviewPolicy(ReviewConfig(**cfg), trained=trained, labels=LABELS,
                     identity=RunIdentity("lane1", "20260101T000000Z-000000"))
    p.set_background(scene(False, seed=999))
    return p


APPLE = cls(("apple", 0.8), ("banana", 0.1), ("carrot", 0.05))
BANANA = cls(("banana", 0.85), ("apple", 0.1), ("carrot", 0.02))
MILK = cls(("milk", 0.9), ("apple", 0.05), ("banana", 0.02))


def test_empty_scene_is_recognised_despite_noise_and_gives_no_label():
    f = Feed(policy())
    d = f(None, item=False)
    assert d.empty and d.smoothed is None and not d.review and d.item is None
    assert d.background_diff < 3.0
    d = f(APPLE)
    assert not d.empty and d.background_diff > 12.0
    assert d.smoothed.best.label == "apple"


def test_smoothing_stops_a_one_frame_flicker():
    f = Feed(policy(smoothing_window=5))
    for _ in range(4):
        f(APPLE)
    d = f(MILK)
    assert d.result.classification.best.label == "milk"
    assert d.smoothed.best.label == "apple"
    # sparse mean: milk was absent (0) from four of five results
    assert d.smoothed.best.prob == pytest.approx((4 * 0.8 + 0.05) / 5)
    assert [p.label for p in d.smoothed.top] == ["apple", "milk", "banana"]


def test_a_presence_shorter_than_stable_results_never_makes_an_event():
    f = Feed(policy(smoothing_window=1, stable_results=3))
    f(None, item=False)
    f(APPLE), f(MILK)  # two frames of something: a blip
    f(None, item=False), f(None, item=False)
    assert f.events() == []
    # stable_results below 2 is refused by the config; a hand-built one is raised to 2
    assert ReviewPolicy(ReviewConfig(stable_results=1), trained=True, labels=LABELS).policy_dict()["stable_results"] == 2


def test_a_flickering_label_is_one_item_decided_over_its_interval_and_flagged():
    # The seeded random model on box.mp4 does this: the top-1 hops between classes every few frames.
    f = Feed(policy(smoothing_window=1, stable_results=2))
    for c in (APPLE, MILK, APPLE, BANANA, MILK, APPLE, MILK, MILK, APPLE):
        f(c)
    f(None, item=False), f(None, item=False)
    (ev,) = f.events()
    # By the mean over the interval: milk 4 x 0.9 = 3.6 beats apple 4 x 0.8 + 5 x ~0.05 = 3.5.
    assert ev.label == "milk" and ev.results == 9 and ev.frame_start == 0 and ev.frame_end == 8
    assert ev.label_share == pytest.approx(4 / 9, abs=1e-4)
    assert "mixed_labels" in ev.review_reasons and ev.closed_by == "empty"


def test_stable_k_opens_and_empty_closes_one_event():
    f = Feed(policy())
    f(None, item=False)
    assert f(APPLE).opened is None and f(APPLE).opened is None
    d = f(APPLE)  # third consecutive result: stable
    assert d.opened is not None and d.item == "apple"
    # item_id names the open item (what an attendant's resolution refers to)
    assert d.item_id == d.opened.id != ""
    assert (d.opened.label, d.opened.frame_start, d.opened.frame_end) == ("apple", 1, 3)
    for _ in range(5):
        d = f(APPLE)
        assert d.opened is None and d.closed is None and d.item == "apple"
    d = f(None, item=False)
    assert d.closed is None and d.item == "apple"  # one empty result is not enough (empty_results=2)
    d = f(None, item=False)
    assert d.closed is not None and d.item is None and d.item_id is None
    ev = d.closed
    assert (ev.label, ev.index, ev.frame_start, ev.frame_end, ev.results) == ("apple", 0, 1, 8, 8)
    assert ev.confidence == pytest.approx(0.8) and not ev.review and ev.review_reasons == ()
    assert ev.t_start == pytest.approx(1 / 30) and ev.t_end == pytest.approx(8 / 30)
    assert f.events() == [ev]  # nothing left open


def test_a_gap_shorter_than_empty_results_keeps_the_item():
    f = Feed(policy(empty_results=3))
    for _ in range(4):
        f(APPLE)
    f(None, item=False), f(None, item=False)
    for _ in range(4):
        f(APPLE)
    events = f.events()
    assert len(events) == 1 and events[0].results == 8


def test_a_label_change_without_a_change_in_view_is_the_same_item():
    f = Feed(policy(smoothing_window=1))
    for _ in range(5):
        f(APPLE)
    for _ in range(6):
        f(BANANA)
    (ev,) = f.events()
    assert ev.results == 11 and ev.label == "banana" and ev.closed_by == "end"
    assert "mixed_labels" in ev.review_reasons  # 6 of 11 agree: under min_label_share 0.6


def test_an_item_swapped_for_another_without_a_gap_is_two_events():
    f = Feed(policy(smoothing_window=1))
    for _ in range(8):
        f(APPLE)
    ds = [f(BANANA, colour=(200, 200, 40)) for _ in range(8)]  # another box, other colours, no empty frame
    opened = [d for d in ds if d.opened]
    assert len(opened) == 1 and opened[0].closed is not None
    old, new = opened[0].closed, opened[0].opened
    assert old.closed_by == "swap" and old.frame_end == 7 and new.frame_start == 8
    assert ds[0].item_id == old.id and opened[0].item_id == new.id != old.id
    events = f.events()
    assert [e.label for e in events] == ["apple", "banana"] and events[1].frame_end == 15


def test_back_to_back_items_with_a_short_empty_gap_are_two_events():
    f = Feed(policy(smoothing_window=1, empty_results=2))
    for _ in range(6):
        f(APPLE)
    f(None, item=False), f(None, item=False)
    for _ in range(6):
        f(APPLE, colour=(30, 200, 60))
    assert [(e.frame_start, e.frame_end) for e in f.events()] == [(0, 5), (8, 13)]


def test_camera_outage_closes_the_item_at_its_last_frame_and_is_reported():
    f = Feed(policy(smoothing_window=1))
    for _ in range(6):
        f(APPLE)
    d = f(APPLE, gap=3.0)  # 3 s without frames, the item still in view when the camera returns
    assert d.closed is not None and d.closed.closed_by == "camera_lost" and d.closed.frame_end == 5
    assert "camera_lost" in d.closed.review_reasons
    assert d.outage is not None and d.outage.last_frame == 5 and d.outage.item_closed == d.closed.id
    assert d.outage.duration_s == pytest.approx(3.0 + 1 / 30, abs=1e-3)
    for _ in range(5):
        f(APPLE)
    events = f.events()
    assert [(e.frame_start, e.frame_end, e.closed_by) for e in events] == [(0, 5, "camera_lost"), (6, 11, "end")]


def test_camera_reported_lost_closes_the_item_at_once():
    f = Feed(policy(smoothing_window=1))
    for _ in range(6):
        f(APPLE)
    closed, outage = f.policy.camera_lost("camera 0 stopped delivering frames")
    assert closed.closed_by == "camera_lost" and closed.frame_end == 5 and outage.end is None
    assert f.policy.camera_lost("again") == (None, None)  # one outage at a time
    d = f(None, item=False, gap=5.0)
    assert d.outage.start == outage.start and d.outage.end is not None and d.closed is None


def test_an_unstable_run_inside_an_item_counts_against_it():
    f = Feed(policy(smoothing_window=1))
    for _ in range(4):
        f(APPLE)
    f(BANANA), f(BANANA)  # not stable (K=3): these are the apple's unsure frames
    for _ in range(4):
        f(APPLE)
    (ev,) = f.events()
    assert ev.label == "apple" and ev.results == 10
    assert ev.confidence == pytest.approx((8 * 0.8 + 2 * 0.1) / 10)


def test_error_results_neither_extend_nor_break_stability():
    f = Feed(policy(smoothing_window=1))
    f(APPLE), f(APPLE)
    d = f(None, error="boom")
    assert d.smoothed is None and not d.review and not d.empty and d.opened is None
    d = f(APPLE)
    assert d.opened is not None  # third apple result: the error did not reset the run
    assert d.opened.results == 3
    f(None, error="boom")
    (ev,) = f.events()
    assert ev.frame_end == 3  # the error frame does not extend the event


def test_review_reasons_at_the_thresholds():
    p = policy(min_confidence=0.6, min_margin=0.15)
    assert p.reasons_for(0.6, 0.15) == ()  # exactly at the threshold passes
    assert p.reasons_for(0.7 - 0.1, 0.7 - 0.55) == ()  # float rounding does not decide
    assert p.reasons_for(0.59, 0.5) == ("low_confidence",)
    assert p.reasons_for(0.9, 0.149) == ("low_margin",)
    assert p.reasons_for(0.5, 0.0) == ("low_confidence", "low_margin")

    f = Feed(policy(smoothing_window=1, min_margin=0.2))
    d = f(cls(("apple", 0.6), ("banana", 0.4)))  # exactly at both thresholds (0.6 - 0.4 != 0.2 in floats)
    assert not d.review and d.reasons == ()
    d = f(cls(("apple", 0.6), ("banana", 0.41)))
    assert d.review and d.reasons == ("low_margin",)
    d = f(cls(("apple", 0.59), ("banana", 0.2)))
    assert d.reasons == ("low_confidence",)
    d = f(cls(("apple", 0.5), ("banana", 0.45)))
    assert d.reasons == ("low_confidence", "low_margin")
    d = f(cls(("apple", 0.9)))  # a single prediction: the margin is top-1 itself
    assert not d.review


def test_event_flag_agrees_with_the_logged_numbers():
    f = Feed(policy(smoothing_window=1, stable_results=3))
    # a sure-ish start, a 2-result banana run (not stable: counts as the apple's unsure frames), a close call
    seq = [cls(("apple", 0.7), ("banana", 0.25))] * 3 + [cls(("banana", 0.6), ("apple", 0.35))] * 2 \
        + [cls(("apple", 0.52), ("banana", 0.44))]
    for c in seq:
        f(c)
    (ev,) = f.events()
    assert ev.label == "apple" and ev.results == 6
    assert ev.confidence == pytest.approx((2.1 + 0.7 + 0.52) / 6)
    assert [p.label for p in ev.top] == ["apple", "banana"]
    assert ev.top[1].prob == pytest.approx((0.75 + 1.2 + 0.44) / 6)
    assert ev.confidence < 0.6 and ev.top[0].prob - ev.top[1].prob >= 0.15
    assert ev.review and ev.review_reasons == ("low_confidence",)


def test_untrained_model_is_always_flagged():
    f = Feed(policy(trained=False, smoothing_window=1))
    for _ in range(4):
        d = f(cls(("apple", 0.99), ("banana", 0.01)))
        assert d.review and d.reasons == ("untrained",)
    d = f(None, item=False)
    assert not d.review  # nothing to look at
    (ev,) = f.events()
    assert ev.review and ev.review_reasons == ("untrained",)


def test_without_a_background_the_still_lane_is_learned_and_a_moving_item_is_found():
    cfg = ReviewConfig(smoothing_window=1, stable_results=3, empty_results=2, background_learn_s=1.0)
    # An empty lane at start: still, so no item; after 1 s it is the background.
    f = Feed(ReviewPolicy(cfg, trained=True, labels=LABELS))
    assert all(f(APPLE, item=False).empty for _ in range(40))
    assert f.policy.lane.known
    assert not f(APPLE).empty
    # A lane that starts with an item in view (held by hand: it moves) finds that item from its start;
    # when it leaves, the still empty lane is learned and the item ends where the lane went still.
    f = Feed(ReviewPolicy(cfg, trained=True, labels=LABELS))
    for i in range(20):
        f(APPLE, dx=(i % 4) * 3)
    for _ in range(40):
        f(APPLE, item=False)
    (ev,) = f.events()
    assert ev.frame_start <= 1 and ev.frame_end == 19 and ev.closed_by == "empty"


def test_slow_light_drift_is_followed_without_false_items():
    f = Feed(policy(background_adapt_s=5.0))
    for i in range(900):  # 30 s, the light rising 40 levels: 3x empty_threshold
        d = f(None, item=False, light=int(i * 40 / 900))
        assert d.empty, i
    assert not f(APPLE, light=40).empty


def test_background_can_be_retaken():
    p = policy()
    f = Feed(p)
    assert not f(APPLE).empty
    p.set_background(scene(True, seed=123))  # e.g. a display stand now sits in the area
    assert f(APPLE).empty
    assert not f(None, item=False).empty


def test_background_is_compared_only_within_the_roi():
    cfg = ReviewConfig(smoothing_window=1, stable_results=2)
    p = ReviewPolicy(cfg, trained=True, labels=LABELS, roi=[0.0, 0.0, 0.2, 0.2])  # top-left corner only
    p.set_background(scene(False, seed=1))
    f = Feed(p)
    assert f(APPLE).empty  # the box is outside the ROI
    p2 = ReviewPolicy(cfg, trained=True, labels=LABELS)
    p2.set_background(scene(False, seed=1))
    assert not Feed(p2)(APPLE).empty


def run_sequence():
    rng = np.random.default_rng(7)
    f = Feed(policy(smoothing_window=3, stable_results=3))
    for step in range(120):
        if step % 30 < 5:
            f(None, item=False)
            continue
        a = float(rng.uniform(0.2, 0.9))
        names = ["apple", "banana", "milk"] if step < 60 else ["milk", "apple", "banana"]
        rest = 1 - a
        f(cls((names[0], a), (names[1], rest * 0.7), (names[2], rest * 0.2)) if a > rest * 0.7
          else cls((names[1], rest * 0.7), (names[0], a), (names[2], rest * 0.2)))
    return [(d.smoothed, d.review, d.reasons, d.empty, d.item, d.opened, d.closed) for d in f.decisions], f.events()


def test_replay_is_deterministic():
    first, second = run_sequence(), run_sequence()
    assert first == second
    assert len(first[1]) >= 3


def test_event_line_fields_and_types():
    f = Feed(policy())
    for _ in range(4):
        f(APPLE)
    (ev,) = f.events()
    model = {"name": "resnet18-grocery", "sha256": "ab" * 32, "trained": True}
    line = ev.to_dict(source="box.mp4", model=model, policy=f.policy.policy_dict(), wall_clock_offset=None)
    assert set(line) == {"type", "id", "seq", "lane_id", "run_id", "closed_by", "label", "index", "confidence", "top", "review", "review_reasons",
                         "frame_start", "frame_end", "t_start", "t_end", "results", "source", "model",
                         "policy"}
    assert line["type"] == "item" and line["label"] == "apple" and line["index"] == 0
    assert line["seq"] == 1 and line["id"] == "lane1-20260101T000000Z-000000-000001"
    assert isinstance(line["confidence"], float) and isinstance(line["review"], bool)
    assert line["top"] == [{"index": 0, "label": "apple", "prob": 0.8},
                           {"index": 1, "label": "banana", "prob": 0.1},
                           {"index": 2, "label": "carrot", "prob": 0.05}]
    assert line["review_reasons"] == [] and line["model"] == model
    assert line["policy"] == {"min_confidence": 0.6, "min_margin": 0.15, "smoothing_window": 3,
                              "stable_results": 3, "empty_threshold": 12.0, "empty_results": 2,
                              "min_label_share": 0.6, "swap_threshold": 0.3}
    assert line["t_start"] == 0.0 and line["t_end"] == 0.1  # video seconds, rounded to ms
    assert json.loads(json.dumps(line)) == line


def test_event_times_are_iso_utc_wall_time_for_live_sources():
    ev = ItemEvent(label="apple", index=0, confidence=0.8, top=APPLE.top, review=False, review_reasons=(),
                   frame_start=3, frame_end=9, t_start=100.25, t_end=102.5)
    offset = 1_700_000_000.0 - 100.0  # wall time at monotonic 100 s
    line = ev.to_dict(source="0", model={}, policy={}, wall_clock_offset=offset)
    assert line["t_start"] == "2023-11-14T22:13:20.250+00:00"
    end = datetime.fromisoformat(line["t_end"])
    assert end.timestamp() == pytest.approx(1_700_000_002.5)
    assert end.utcoffset().total_seconds() == 0


def test_live_frames_use_their_monotonic_timestamps():
    f = Feed(policy(), video=False)
    for _ in range(3):
        f(APPLE)
    (ev,) = f.events()
    assert ev.t_start == pytest.approx(1000.0) and ev.t_end == pytest.approx(1000.0 + 2 / 30)
