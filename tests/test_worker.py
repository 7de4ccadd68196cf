import threading
import time
import tracemalloc

import numpy as np

from checkout_cam.frame_queue import FrameQueue
from checkout_cam.worker import CaptureThread, InferenceWorker
from tests.fakes import FakeClassifier, FrameSourceStub


def _run(source, clf, mode, handle, stop=None, timeout=30):
    stop = stop or threading.Event()
    q = FrameQueue(mode, stop=stop, poll_s=0.01)
    cap = CaptureThread(source, q, stop)
    worker = InferenceWorker(clf, q, stop, handle, poll_s=0.01)
    worker.start()
    cap.start()
    cap.join(timeout)
    worker.join(timeout)
    assert not cap.is_alive() and not worker.is_alive()
    return q, worker


def test_replay_processes_every_frame_in_order():
    seen = []
    q, worker = _run(FrameSourceStub(200), FakeClassifier(), "replay",
                     lambda f, r: seen.append((f.frame_id, r.frame_id, r.classification.best.index)))
    assert [s[0] for s in seen] == list(range(200))
    assert all(fid == rid and cls == fid % 4 for fid, rid, cls in seen)
    assert q.dropped == 0 and worker.processed == 200


def test_a_failing_frame_is_logged_and_the_loop_goes_on(caplog):
    results = []
    _, worker = _run(FrameSourceStub(10), FakeClassifier(fail_on=[3, 7]), "replay",
                     lambda f, r: results.append(r))
    assert len(results) == 10 and worker.errors == 2
    assert [r.frame_id for r in results if r.error] == [3, 7]
    assert "synthetic failure" in results[3].error
    assert "inference failed on frame 3" in caplog.text


def test_live_with_a_slow_model_drops_and_stays_bounded():
    big = np.zeros((480, 640, 3), np.uint8)
    source = FrameSourceStub(120, live=True, fps=200, image_fn=lambda i: big.copy())
    results = []
    tracemalloc.start()
    q, worker = _run(source, FakeClassifier(delay_s=0.05), "live", lambda f, r: results.append(r.frame_id))
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert q.dropped > 0 and q.dropped + len(results) == 120
    assert results == sorted(results)
    # At most a few 0.9 MB frames alive at once: the one being inferred, the one waiting, the one captured.
    assert peak < 8 * big.nbytes


def test_shutdown_while_the_consumer_is_stuck():
    stop = threading.Event()
    out = FrameQueue("replay", maxsize=1, stop=stop, poll_s=0.01)  # nobody reads it
    q = FrameQueue("replay", maxsize=2, stop=stop, poll_s=0.01)
    source = FrameSourceStub(10_000, stop=stop)
    cap = CaptureThread(source, q, stop)
    worker = InferenceWorker(FakeClassifier(), q, stop, lambda f, r: out.put(r), poll_s=0.01)
    worker.start()
    cap.start()
    time.sleep(0.2)  # both are now blocked on full queues
    stop.set()
    cap.join(2)
    worker.join(2)
    assert not cap.is_alive() and not worker.is_alive()
    assert source.closed


def test_motion_gate_skips_the_model_in_a_still_scene():
    from checkout_cam.gating import MotionGate
    stop = threading.Event()
    q = FrameQueue("replay", stop=stop, poll_s=0.01)
    clf = FakeClassifier()
    results = []
    worker = InferenceWorker(clf, q, stop, lambda f, r: results.append(r), poll_s=0.01,
                             gate=MotionGate(threshold=2.0, max_reuse_s=1.0))
    source = FrameSourceStub(90, image_fn=lambda i: np.full((48, 64, 3), 0 if i < 60 else 200, np.uint8))
    cap = CaptureThread(source, q, stop, prepare=lambda f: None)
    worker.start()
    cap.start()
    cap.join(10)
    worker.join(10)
    # Video time runs at 30 fps: frames 0, 30 (max age) and 60 (the scene changed) reach the model.
    assert clf.calls == 3 and worker.model_runs == 3
    assert [r.frame_id for r in results if not r.reused] == [0, 30, 60]
    assert all(r.classification.best.index == (0 if r.frame_id < 60 else 200 % 4) for r in results)


def test_replay_batches_waiting_frames_and_keeps_order_and_failures_isolated():
    stop = threading.Event()
    q = FrameQueue("replay", maxsize=64, stop=stop, poll_s=0.01)
    clf = FakeClassifier(fail_on=[5])
    source = FrameSourceStub(40)
    cap = CaptureThread(source, q, stop, prepare=lambda f: clf.preprocess([f.image]))
    cap.start()
    cap.join(10)  # everything is waiting before the worker starts: batches fill up
    results = []
    worker = InferenceWorker(clf, q, stop, lambda f, r: results.append(r), poll_s=0.01, batch_size=8)
    worker.start()
    worker.join(10)
    assert [r.frame_id for r in results] == list(range(40))
    assert max(clf.batch_sizes) == 8 and worker.model_runs == 40
    assert [r.frame_id for r in results if r.error] == [5] and worker.errors == 1
    assert all(r.classification.best.index == r.frame_id % 4 for r in results if not r.error)
