import dataclasses

import numpy as np
import pytest

from checkout_cam.frames import Frame
from checkout_cam.render import AMBER, BLUE, GREEN, RED, OverlayRenderer, Status, replay_now, resolution_words
from checkout_cam.results import Classification, InferenceResult, Prediction
from checkout_cam.review import Decision
from checkout_cam.schema import ResolutionRecord

T0 = 500.0
SURE = Classification((Prediction(948, "Granny Smith", 0.87), Prediction(952, "fig", 0.06),
                       Prediction(950, "orange", 0.02)))
STATUS = Status(camera_fps=29.97, inference_fps=14.2, latency_ms=63.0, dropped=4)


def frame(w=640, h=480, value=128, video_time=None, t=T0) -> Frame:
    rng = np.random.default_rng(0)
    img = np.clip(value + rng.integers(-10, 11, (h, w, 3)), 0, 255).astype(np.uint8)
    return Frame(img, frame_id=7, timestamp=t, source="test", video_time=video_time)


def decision(t=T0, smoothed=SURE, reasons=(), empty=False, video_time=None, error=None) -> Decision:
    c = None if error else (smoothed or SURE)
    r = InferenceResult(7, t, video_time, c, 20.0, done=t + 0.05, error=error)
    return Decision(frame_id=7, result=r, smoothed=smoothed, review=bool(reasons), reasons=reasons,
                    empty=empty, item=None, opened=None, closed=None)


def renderer(**kw) -> OverlayRenderer:
    return OverlayRenderer(model_name=kw.pop("model_name", "resnet18-grocery"), trained=kw.pop("trained", True), **kw)


def panel(img):
    """The top-left label panel."""
    h, w = img.shape[:2]
    return img[: h // 2, : w // 2]


def share_of(img, colour, tol=40) -> float:
    return float((np.abs(img.astype(np.int16) - np.array(colour, np.int16)).max(axis=2) < tol).mean())


def test_returns_a_new_image_and_leaves_the_frame_alone():
    f = frame()
    before = f.image.copy()
    out = renderer(roi=[0.2, 0.2, 0.6, 0.6]).annotate(f, decision(), STATUS, now=T0)
    assert out.shape == f.image.shape and out.dtype == np.uint8
    assert not np.shares_memory(out, f.image)
    assert np.array_equal(f.image, before)
    assert not np.array_equal(out, before)


def test_confident_and_review_states_have_their_colours():
    r = renderer()
    ok = r.annotate(frame(), decision(), now=T0)
    review = r.annotate(frame(), decision(reasons=("low_margin",)), now=T0)
    assert share_of(panel(ok), GREEN) > 0.02 and share_of(panel(ok), AMBER) < 0.001
    assert share_of(panel(review), AMBER) > 0.02 and share_of(panel(review), GREEN) < 0.001


def test_a_stale_decision_is_not_drawn():
    r = renderer(stale_after_ms=500)
    nothing = r.annotate(frame(), None, now=T0 + 1.0)
    fresh = r.annotate(frame(), decision(t=T0 + 0.9), now=T0 + 1.0)
    stale = r.annotate(frame(), decision(t=T0), now=T0 + 1.0)   # 1000 ms old
    assert not np.array_equal(panel(fresh), panel(nothing))
    assert np.array_equal(panel(stale), panel(nothing))
    at_limit = r.annotate(frame(), decision(t=T0 + 0.5), now=T0 + 1.0)
    assert np.array_equal(panel(at_limit), panel(fresh))


def test_an_empty_scene_or_a_missing_decision_shows_no_label():
    r = renderer()
    nothing = r.annotate(frame(), None, now=T0)
    empty = r.annotate(frame(), decision(smoothed=None, empty=True), now=T0)
    assert np.array_equal(empty, nothing)


def test_an_inference_error_is_said_not_labelled():
    r = renderer()
    nothing = r.annotate(frame(), None, now=T0)
    err = r.annotate(frame(), decision(smoothed=None, error="CUDA out of memory"), now=T0)
    assert not np.array_equal(panel(err), panel(nothing))
    assert share_of(panel(err), GREEN) < 0.001


def test_untrained_badge_is_drawn_in_red():
    f = frame()
    badge = lambda img: img[:60, -200:]  # top-right corner
    trained = renderer(trained=True).annotate(f, decision(), now=T0)
    untrained = renderer(trained=False, model_name="demo-untrained").annotate(f, decision(), now=T0)
    assert share_of(badge(untrained), RED) > 0.1
    assert share_of(badge(trained), RED) < 0.001


def test_status_line_and_offline_banner():
    r = renderer()
    f = frame()
    bare = r.annotate(f, decision(), now=T0)
    with_status = r.annotate(f, decision(), STATUS, now=T0)
    bottom = slice(-40, None)
    assert not np.array_equal(with_status[bottom], bare[bottom])
    offline = r.annotate(f, decision(), Status(0.0, 0.0, float("nan"), 0, offline=True,
                                               message="reconnecting in 2 s"), now=T0)
    middle = offline[200:280]
    assert share_of(middle, RED) > 0.01
    assert share_of(panel(offline), GREEN) < 0.001  # no label while the camera is offline
    paused = r.annotate(f, None, Status(30.0, 10.0, 50.0, 0, paused=True), now=T0)
    assert share_of(paused[200:280], AMBER) > 0.01


@pytest.mark.parametrize("size", [(320, 240), (640, 480), (1280, 720), (1920, 1080), (200, 600)])
def test_any_frame_size(size):
    w, h = size
    long = Classification((Prediction(1, "a very long product name that cannot fit anywhere " * 3, 0.5),
                           Prediction(2, "Äpfel süß", 0.3)))
    r = renderer(trained=False, roi=[0.1, 0.1, 0.8, 0.8])
    status = Status(29.97, 14.2, 63.0, 4, offline=False, paused=True, message="a long message " * 10)
    out = r.annotate(frame(w, h), decision(smoothed=long, reasons=("low_confidence", "low_margin", "untrained")),
                     status, now=T0)
    assert out.shape == (h, w, 3)
    assert share_of(panel(out), AMBER) > 0.01  # the REVIEW band is there at every size


def test_replay_now_measures_staleness_in_video_time():
    # A replay that runs faster or slower than the video draws the same overlay.
    d = decision(t=T0, video_time=10.0)
    r = renderer(stale_after_ms=500)
    for capture_gap in (0.001, 5.0):  # how much later the next frame was *read*
        f = frame(t=T0 + capture_gap, video_time=10.2)
        assert r.is_current(d, replay_now(f, d))
        f = frame(t=T0 + capture_gap, video_time=11.0)
        assert not r.is_current(d, replay_now(f, d))
    live = frame(t=T0 + 0.3)
    assert replay_now(live, decision(t=T0)) == T0 + 0.3
    assert replay_now(live, None) == T0 + 0.3


# ------------------------------------------------------------ an attendant's resolution

def resolved(outcome="correct", label="Banana", event_id="lane1-r1-3", resolver="ann") -> ResolutionRecord:
    return ResolutionRecord(event_id=event_id, lane_id="lane1", outcome=outcome, label=label,
                            index=None, resolver=resolver, resolved_at="2026-12-01T17:00:00Z",
                            model_label="Granny Smith")


def flagged(item_id="lane1-r1-3") -> Decision:
    return dataclasses.replace(decision(reasons=("low_confidence",)), item_id=item_id)


def test_resolution_words():
    assert resolution_words(resolved()) == ("RESOLVED", "by ann: Banana")
    assert resolution_words(resolved("accept", "Granny Smith")) == ("ACCEPTED", "by ann: Granny Smith")
    assert resolution_words(resolved("no_item", None)) == ("NO ITEM", "(ann)")


def test_a_resolved_item_shows_a_blue_band_instead_of_review():
    r = renderer(roi=[0.2, 0.2, 0.6, 0.6])
    review = r.annotate(frame(), flagged(), now=T0)
    done = r.annotate(frame(), flagged(), now=T0, resolution=resolved())
    assert share_of(panel(review), AMBER) > 0.02
    assert share_of(panel(done), BLUE) > 0.02 and share_of(panel(done), AMBER) < 0.001
    assert share_of(done, AMBER) < 0.001   # the scanning-area box turns blue too


def test_a_resolution_of_another_item_is_not_drawn():
    r = renderer()
    plain = r.annotate(frame(), flagged(), now=T0)
    other = r.annotate(frame(), flagged(), now=T0, resolution=resolved(event_id="lane1-r1-2"))
    assert np.array_equal(plain, other)
    nothing_open = r.annotate(frame(), flagged(item_id=None), now=T0, resolution=resolved())
    assert share_of(panel(nothing_open), BLUE) < 0.001


@pytest.mark.parametrize("size", [(320, 240), (1280, 720)])
def test_resolution_band_fits_any_frame_size(size):
    long = resolved(label="Alpro Fresh Soy Milk Unsweetened Organic", resolver="ann-marie")
    out = renderer().annotate(frame(*size), flagged(), now=T0, resolution=long)
    assert share_of(panel(out), BLUE) > 0.01
