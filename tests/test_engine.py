"""The inference engine: batching without delay, lane frames first, fairness, bounds, failures, timing."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
import torch

from checkout_cam.config import Config
from checkout_cam.engine import HTTP, LANE, EngineBusy, EngineClosed, InferenceEngine
from checkout_cam.pipeline import Pipeline
from checkout_cam.review import ReviewPolicy
from tests.fakes import FakeClassifier, FrameSourceStub


class HeldClassifier(FakeClassifier):
    """A fake model whose next call can be held until the test lets it go, so 'the model is busy'
    is a fact of the test, not a matter of timing."""

    def __init__(self, **kw):
        super().__init__(**kw)
        self.hold = threading.Event()
        self.hold.set()
        self.entered = threading.Event()

    def batch_probabilities(self, images):
        self.entered.set()
        assert self.hold.wait(10), "the test never released the model"
        return super().batch_probabilities(images)


def img(value: int, n: int = 1) -> torch.Tensor:
    return torch.from_numpy(np.full((n, 8, 8, 3), value, np.uint8))


def reported(reports: list, n: int) -> list:
    """The observer runs just after the callers' futures are resolved: wait for its n-th report."""
    deadline = time.monotonic() + 5
    while len(reports) < n and time.monotonic() < deadline:
        time.sleep(0.005)
    return reports


def busy(engine: InferenceEngine, clf: HeldClassifier, caller="warm") -> object:
    """Occupy the model with one held call; returns its future."""
    clf.hold.clear()
    clf.entered.clear()
    fut = engine.submit(img(0), priority=HTTP, caller=caller)
    assert clf.entered.wait(5)
    return fut


@pytest.fixture
def held():
    clf = HeldClassifier(n_classes=4)
    reports = []
    with InferenceEngine(clf, max_batch=4, max_queue=8) as engine:
        engine.add_observer(reports.append)
        yield engine, clf, reports
    clf.hold.set()


def test_a_lone_request_runs_at_once_in_a_call_of_its_own(held):
    engine, clf, reports = held
    t0 = time.monotonic()
    out = engine.submit(img(2), caller="a").result(5)
    assert out[0].best.label == "class2" and out[0].best.prob == pytest.approx(0.9)
    assert clf.batch_sizes == [1]
    reported(reports, 1)
    assert reports[0].images == 1 and reports[0].queue_ms[0] < 1000 * (time.monotonic() - t0)


def test_requests_that_arrive_while_the_model_is_busy_share_the_next_call(held):
    engine, clf, reports = held
    first = busy(engine, clf)
    futures = [engine.submit(img(v), caller=f"c{v}") for v in (1, 2, 3)]
    clf.hold.set()
    first.result(5)
    assert [f.result(5)[0].best.index for f in futures] == [1, 2, 3]
    assert clf.batch_sizes == [1, 3]
    # The three waited for the held call: their queue time is counted apart from the model time.
    reported(reports, 2)
    assert reports[1].images == 3 and len(reports[1].queue_ms) == 3


def test_a_batch_holds_at_most_max_batch_images(held):
    engine, clf, _ = held
    first = busy(engine, clf)
    futures = [engine.submit(img(1), caller=f"c{i}") for i in range(6)]
    clf.hold.set()
    first.result(5)
    for f in futures:
        f.result(5)
    assert clf.batch_sizes == [1, 4, 2]


def test_lane_frames_go_before_http_requests_that_waited_longer(held):
    engine, clf, reports = held
    first = busy(engine, clf)
    http = [engine.submit(img(1), caller="web") for _ in range(3)]
    lane = engine.submit(img(2), priority=LANE, caller="lane1")
    clf.hold.set()
    first.result(5)
    assert lane.result(5)[0].best.index == 2
    for f in http:
        f.result(5)
    reported(reports, 3)
    assert reports[1].priority == LANE and reports[1].callers == ("lane1",)
    assert reports[2].priority == HTTP


def test_http_batches_are_cut_short_while_a_lane_is_active():
    clf = HeldClassifier(n_classes=4)
    with InferenceEngine(clf, max_batch=8, max_queue=16, max_batch_beside_lane=1, lane_active_s=30) as engine:
        engine.submit(img(1), priority=LANE, caller="lane1").result(5)
        first = busy(engine, clf)
        futures = [engine.submit(img(1), caller="web") for _ in range(3)]
        clf.hold.set()
        first.result(5)
        for f in futures:
            f.result(5)
    assert clf.batch_sizes == [1, 1, 1, 1, 1]


def test_lanes_are_served_round_robin_and_share_one_call(held):
    engine, clf, reports = held
    first = busy(engine, clf)
    a = [engine.submit(img(1, n=2), priority=LANE, caller="laneA") for _ in range(3)]
    b = engine.submit(img(2), priority=LANE, caller="laneB")
    clf.hold.set()
    first.result(5)
    b.result(5)
    for f in a:
        f.result(5)
    reported(reports, 3)
    # max_batch 4: laneA's first frame pair, then laneB (not laneA's second pair), in one call.
    assert reports[1].callers == ("laneA", "laneB") and reports[1].images == 3
    assert [r.callers for r in reports[2:]] == [("laneA", "laneA")]


def test_a_full_http_queue_is_refused_with_a_retry_time_and_lanes_never_are(held):
    engine, clf, _ = held
    first = busy(engine, clf)
    waiting = [engine.submit(img(1), caller="web") for _ in range(8)]
    with pytest.raises(EngineBusy) as err:
        engine.submit(img(1), caller="web")
    assert err.value.retry_after_s >= 1 and "queue full" in str(err.value)
    lane = engine.submit(img(3), priority=LANE, caller="lane1")   # over max_queue, still taken
    clf.hold.set()
    first.result(5)
    assert lane.result(5)[0].best.index == 3
    for f in waiting:
        f.result(5)
    assert engine.status()["http"]["rejected"] == 1


def test_a_failing_image_fails_only_its_own_caller():
    clf = HeldClassifier(n_classes=4, fail_on=[3])
    with InferenceEngine(clf, max_batch=4) as engine:
        first = busy(engine, clf)
        good = engine.submit(img(1), caller="a")
        bad = engine.submit(img(3), caller="b")
        clf.hold.set()
        first.result(5)
        assert good.result(5)[0].best.index == 1
        with pytest.raises(RuntimeError, match="synthetic failure"):
            bad.result(5)
        assert engine.status()["http"]["failed"] == 1


def test_close_fails_what_is_still_waiting_and_refuses_more():
    clf = HeldClassifier(n_classes=4)
    engine = InferenceEngine(clf, max_batch=1, shutdown_timeout_s=0.5).__enter__()
    first = busy(engine, clf)
    waiting = engine.submit(img(1), caller="web")
    closer = threading.Thread(target=engine.close)
    closer.start()
    time.sleep(0.2)
    clf.hold.set()
    closer.join(5)
    assert first.result(5)[0].best.index == 0   # the call in progress completes
    with pytest.raises(EngineClosed):
        waiting.result(5)
    with pytest.raises(EngineClosed):
        engine.submit(img(1))
    assert not engine.is_alive()


def test_bad_submissions_are_refused_with_the_reason(held):
    engine, _, _ = held
    with pytest.raises(ValueError, match="priority"):
        engine.submit(img(1), priority=7)
    with pytest.raises(ValueError, match="N >= 1"):
        engine.submit(torch.zeros((0, 8, 8, 3), dtype=torch.uint8))


def test_the_lane_pipeline_runs_through_the_engine_with_the_same_results():
    def run(classifier):
        cfg = Config()
        src = FrameSourceStub(40, live=False, image_fn=lambda i: np.full((48, 64, 3), (i // 10) * 40, np.uint8))
        policy = ReviewPolicy(cfg.review, trained=True, labels=[f"class{i}" for i in range(4)], top_k=3)
        p = Pipeline(src, classifier, policy, cfg, collect=True).start()
        out = []
        from checkout_cam.frame_queue import END
        while (item := p.decisions.get(timeout=5)) is not END:
            out.append(item[1].result.classification.best.index)
        p.shutdown()
        return out, p

    direct, _ = run(FakeClassifier(n_classes=4))
    clf = FakeClassifier(n_classes=4)
    with InferenceEngine(clf, max_batch=8) as engine:
        through, p = run(engine.lane("lane1"))
        stats = engine.status()
    assert through == direct and len(direct) == 40
    assert stats["lane"]["images"] == 40 and stats["http"]["images"] == 0
    assert p.worker.errors == 0


def test_beside_an_active_lane_http_calls_leave_the_model_free_for_their_share():
    clf = FakeClassifier(n_classes=4, delay_s=0.1)
    ends, starts = [], []

    def seen(report):
        end = time.monotonic()
        ends.append((report.priority, end))
        starts.append((report.priority, end - report.model_ms / 1000))

    with InferenceEngine(clf, max_batch=8, max_share_beside_lane=0.5, lane_active_s=60) as engine:
        engine.add_observer(seen)
        engine.submit(img(1), priority=LANE, caller="lane1").result(5)
        futures = [engine.submit(img(1), caller="web") for _ in range(3)]
        for f in futures:
            f.result(10)
        lane = engine.submit(img(2), priority=LANE, caller="lane1")   # during a rest: served at once
        assert lane.result(5)[0].best.index == 2
        reported(ends, 5)
    http_ends = [t for p, t in ends if p == HTTP]
    http_starts = [t for p, t in starts if p == HTTP]
    # Each HTTP call took >= 0.1 s; at a 0.5 share the model then rests at least as long before the next.
    for prev_end, next_start in zip(http_ends, http_starts[1:]):
        assert next_start - prev_end >= 0.09
    assert clf.batch_sizes[1:4] == [1, 1, 1]


def test_without_a_lane_http_calls_follow_each_other_at_once():
    clf = HeldClassifier(n_classes=4)
    with InferenceEngine(clf, max_batch=2, max_share_beside_lane=0.1) as engine:
        first = busy(engine, clf)
        futures = [engine.submit(img(1), caller="web") for _ in range(4)]
        clf.hold.set()
        first.result(5)
        for f in futures:
            f.result(5)
    assert clf.batch_sizes == [1, 2, 2]
