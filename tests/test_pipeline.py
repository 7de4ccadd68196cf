import time

import numpy as np

from checkout_cam.config import Config, override
from checkout_cam.frame_queue import END
from checkout_cam.pipeline import Pipeline
from checkout_cam.review import ReviewPolicy
from tests.fakes import FakeClassifier, FrameSourceStub


def _scene(i: int) -> np.ndarray:
    """Frames 0-9 empty (value 0), 10-59 an item (value 1 -> class1), 60-79 empty again."""
    return np.full((48, 64, 3), 1 if 10 <= i < 60 else 0, np.uint8)


def _pipeline(n, clf, cfg=None, **kw):
    # The empty lane is learned from its first 0.2 s of stillness (frames 0-6).
    cfg = cfg or override(override(Config(), "review.empty_threshold", 0.5), "review.background_learn_s", 0.2)
    policy = ReviewPolicy(cfg.review, trained=clf.trained, labels=clf.labels, top_k=cfg.model.top_k)
    return Pipeline(FrameSourceStub(n, image_fn=_scene), clf, policy, cfg, **kw)


def _drain(p):
    out = []
    while (item := p.decisions.get(timeout=10)) is not END:
        out.append(item)
    return out


def test_replay_pipeline_gives_every_decision_in_order_and_one_item():
    seen = []
    p = _pipeline(80, FakeClassifier(), sinks=[lambda f, d: seen.append(d.closed)], collect=True).start()
    pairs = _drain(p)
    assert p.shutdown()
    assert [f.frame_id for f, _ in pairs] == list(range(80))
    assert all(d.frame_id == f.frame_id for f, d in pairs)
    closed = [e for e in seen if e is not None] + ([p.final_event] if p.final_event else [])
    assert len(closed) == 1 and closed[0].label == "class1"
    assert 10 <= closed[0].frame_start < closed[0].frame_end <= 65
    assert p.items == 1


def test_the_open_item_is_closed_at_the_end():
    p = _pipeline(40, FakeClassifier(), collect=True).start()  # ends while the item is in view
    _drain(p)
    p.shutdown()
    assert p.final_event is not None and p.final_event.label == "class1"


def test_one_failing_sink_does_not_stop_the_others():
    good = []

    def broken(frame, decision):
        raise OSError("disk full")

    p = _pipeline(30, FakeClassifier(), sinks=[broken, lambda f, d: good.append(f.frame_id)], collect=True).start()
    _drain(p)
    p.shutdown()
    assert good == list(range(30))


def test_shutdown_while_nobody_reads_the_decisions():
    p = _pipeline(100_000, FakeClassifier(), collect=True).start()
    time.sleep(0.3)  # the decisions queue is full and the worker is blocked on it
    t0 = time.monotonic()
    assert p.shutdown()
    assert not p.worker.is_alive() and not p.capture.is_alive()
    assert time.monotonic() - t0 < p.cfg.pipeline.shutdown_timeout_s + 1


def test_status_and_health():
    p = _pipeline(50, FakeClassifier(), collect=True).start()
    _drain(p)
    s = p.status()
    assert s.dropped == 0 and not s.offline
    assert "items" in p.stats_line()
    p.shutdown()
    assert not p.healthy(max_silence_s=5.0)  # threads have ended


class _GapSource(FrameSourceStub):
    """A live camera whose frames stop for 2 s after frame 29 (timestamps as captured)."""

    def __iter__(self):
        from checkout_cam.frames import Frame
        for i in range(self.n):
            time.sleep(0.002)
            yield Frame(_scene(i), frame_id=i, timestamp=100.0 + i / 30 + (2.0 if i >= 30 else 0.0), source="gap")


class _Recorder:
    def __init__(self):
        self.closed, self.outages = [], []

    def __call__(self, frame, decision):
        if decision is not None and decision.closed is not None and decision.closed not in self.closed:
            self.closed.append(decision.closed)
        if decision is not None and decision.outage is not None:
            self.outages.append(decision.outage)

    def close_event(self, event):
        if event is not None and event not in self.closed:
            self.closed.append(event)

    def outage(self, outage):
        self.outages.append(outage)


def test_a_live_camera_gap_closes_the_item_at_its_last_frame_and_reports_the_outage():
    cfg = override(override(Config(), "review.empty_threshold", 0.5), "review.background_learn_s", 0.2)
    clf = FakeClassifier()
    policy = ReviewPolicy(cfg.review, trained=True, labels=clf.labels, capture_clock=True)
    rec = _Recorder()
    src = _GapSource(50, live=True)
    p = Pipeline(src, clf, policy, cfg, sinks=[rec]).start()
    deadline = time.monotonic() + 20
    while not p.finished and time.monotonic() < deadline:
        time.sleep(0.05)
    p.shutdown()
    lost = [e for e in rec.closed if e.closed_by == "camera_lost"]
    assert len(lost) == 1 and lost[0].frame_end <= 29 and "camera_lost" in lost[0].review_reasons
    assert lost[0].t_end <= 100.0 + 29 / 30 + 1e-6          # not stretched over the blind gap
    starts = [o for o in rec.outages if o.end is None]
    ends = [o for o in rec.outages if o.end is not None]
    assert len(starts) == 1 and len(ends) == 1 and starts[0].item_closed == lost[0].id
    assert ends[0].end - ends[0].start >= 2.0 and p.outages == 1
    after = [e for e in rec.closed if e.frame_start >= 30]
    assert after and after[0].closed_by == "end"            # the item seen after the gap is a new event


def test_health_names_a_failing_sink_and_turns_the_watchdog_view_off_after_the_grace():
    def broken(frame, decision):
        raise OSError("disk full")

    cfg = override(override(Config(), "review.empty_threshold", 0.5), "serve.sink_unhealthy_after_s", 10.0)
    p = _pipeline(100_000, FakeClassifier(), cfg=cfg, sinks=[broken]).start()
    try:
        deadline = time.monotonic() + 10
        while not p.sinks.troubles() and time.monotonic() < deadline:
            time.sleep(0.05)
        (trouble,) = p.sinks.troubles()
        early = p.health(max_silence_s=30, now=trouble.failing_since + 1)
        assert early.alive and not early.ok
        late = p.health(max_silence_s=30, now=trouble.failing_since + 11)
        assert not late.alive and not late.ok
        assert any("sink broken has been failing for 11 s" in r and "disk full" in r for r in late.reasons)
        assert p.errors >= 1 and "errors " in p.stats_line() and "sinks " in p.stats_line()
    finally:
        p.shutdown()


def test_status_latency_counts_only_results_the_model_computed():
    p = _pipeline(80, FakeClassifier(), collect=True, gating=True).start()  # a mostly still scene
    _drain(p)
    p.shutdown()
    runs = p.worker.model_runs
    assert 0 < runs < 80  # most frames reused a result
    assert len(p.latency_ms._values) == runs == p.model_latency_ms.count
    assert p.run_latency_ms.count == 80  # the whole-run figure still covers every frame


def test_serve_exits_1_when_its_capture_thread_dies(tmp_path):
    import threading
    from checkout_cam.modes import Parts
    from checkout_cam.modes.serve import run_serve
    from checkout_cam.render import OverlayRenderer
    from checkout_cam.schema import RunIdentity
    from tests.fakes import FrameSourceStub

    class Broken(FrameSourceStub):
        def __iter__(self):
            for i, frame in enumerate(super().__iter__()):
                if i == 5:
                    raise RuntimeError("capture backend crashed")
                yield frame

    cfg = override(Config(), "serve.log_path", str(tmp_path / "events.jsonl"))
    clf = FakeClassifier()
    source = Broken(100, live=True, fps=50)
    policy = ReviewPolicy(cfg.review, trained=clf.trained, labels=clf.labels, top_k=cfg.model.top_k)
    parts = Parts(clf, source, policy, OverlayRenderer(model_name="fake", trained=True), RunIdentity())
    stop = threading.Event()
    threading.Timer(20, stop.set).start()  # a hang guard
    assert run_serve(cfg, stop=stop, parts=parts) == 1
    stop.set()
