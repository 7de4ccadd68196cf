"""The web layer's view of a lane: the feed sink, the shared live JPEG, readiness from the pipeline."""

from __future__ import annotations

import threading
import time

import cv2
import numpy as np

from checkout_cam.frames import Frame
from checkout_cam.render import OverlayRenderer, Status
from checkout_cam.results import Prediction
from checkout_cam.review import ItemEvent
from checkout_cam.schema import ItemRecord, RunIdentity
from checkout_cam.sinks import EventLogSink
from checkout_cam.web.lane import LaneFeed, LaneReader, LiveView


def frame(i: int) -> Frame:
    return Frame(np.full((48, 64, 3), (i * 20) % 256, np.uint8), frame_id=i, timestamp=time.monotonic(), source="t")


def feed(**kw) -> LaneFeed:
    return LaneFeed(identity=RunIdentity("lane7"), source="cam", model={"name": "m", "sha256": "0" * 64,
                    "trained": True}, policy={"min_confidence": 0.6}, wall_clock_offset=1000.0, **kw)


def test_the_feed_keeps_closed_events_as_the_event_log_writes_them(tmp_path):
    ident = RunIdentity("lane7")
    f = LaneFeed(identity=ident, source="cam", model={"name": "m", "sha256": "0" * 64, "trained": True},
                 policy={"min_confidence": 0.6}, wall_clock_offset=1000.0, keep=2)
    log = EventLogSink(tmp_path / "e.jsonl", max_bytes=10**6, backups=1, source="cam",
                       model={"name": "m", "sha256": "0" * 64, "trained": True}, policy={"min_confidence": 0.6},
                       wall_clock_offset=1000.0, identity=ident)
    events = []
    for seq in (1, 2, 3):
        ev = ItemEvent("apple", 1, 0.9, (Prediction(1, "apple", 0.9),), False, (), seq, seq + 5, 1.0 * seq,
                       2.0 * seq, results=4, id=ident.event_id(seq), seq=seq, closed_by="empty")
        f.close_event(ev)
        f.close_event(ev)   # repeated with its decision: kept once
        log.close_event(ev)
        events.append(ev)
    log.close()
    lines = [ItemRecord.from_dict(__import__("json").loads(ln)).to_dict()
             for ln in (tmp_path / "e.jsonl").read_text().splitlines()]
    assert [r.to_dict() for r in f.events(10)] == lines[-2:]   # keep=2: the newest two, oldest first
    assert [r.seq for r in f.events(1)] == [3]


def test_every_viewer_gets_the_same_jpeg_encoded_once_per_frame_and_the_cap_holds():
    f = feed()
    renderer = OverlayRenderer(model_name="m", trained=True)
    view = LiveView(f, renderer, fps=50, max_viewers=2)
    try:
        assert view.join_viewer() and view.join_viewer()
        assert not view.join_viewer()      # over the cap
        got: dict[int, list] = {0: [], 1: []}

        def watch(k):
            version = -1
            while len(got[k]) < 3:
                data, new = view.wait_jpeg(version, 2.0)
                if data is not None and new != version:
                    got[k].append((new, data))
                    version = new

        threads = [threading.Thread(target=watch, args=(k,)) for k in (0, 1)]
        for t in threads:
            t.start()
        for i in range(40):
            f(frame(i), None)
            time.sleep(0.03)
            if all(len(v) >= 3 for v in got.values()):
                break
        for t in threads:
            t.join(5)
        common = set(v for v, _ in got[0]) & set(v for v, _ in got[1])
        assert common, "the two viewers never saw the same frame"
        for v in common:
            a = next(d for n, d in got[0] if n == v)
            b = next(d for n, d in got[1] if n == v)
            assert a is b      # the same bytes object: encoded once, shared
        img = cv2.imdecode(np.frombuffer(got[0][0][1], np.uint8), cv2.IMREAD_COLOR)
        assert img.shape == (48, 64, 3)
        assert view.encoded <= f.seq
        view.leave_viewer()
        assert view.join_viewer()
    finally:
        view.close()


def test_latest_jpeg_annotated_or_raw():
    f = feed()
    view = LiveView(f, OverlayRenderer(model_name="m", trained=False))
    assert view.latest_jpeg() is None
    f(frame(3), None)
    raw = cv2.imdecode(np.frombuffer(view.latest_jpeg(raw=True), np.uint8), cv2.IMREAD_COLOR)
    annotated = cv2.imdecode(np.frombuffer(view.latest_jpeg(), np.uint8), cv2.IMREAD_COLOR)
    assert raw.shape == annotated.shape == (48, 64, 3)
    assert np.abs(raw.astype(int) - 60).max() <= 3           # the frame as captured
    assert np.abs(annotated.astype(int) - raw.astype(int)).max() > 50   # the overlay (UNTRAINED badge ...)
    assert view.latest_jpeg() is view.latest_jpeg()           # one encode per frame


class StubSource:
    name = "rtsp://cam"
    online = True


class StubPipeline:
    def __init__(self):
        self.first_frame = threading.Event()
        self.source = StubSource()
        self.finished = False

    def status(self):
        return Status(30.0, 10.0, 40.0, 2, offline=not self.source.online)


def test_readiness_follows_the_first_frame_and_the_camera():
    p = StubPipeline()
    r = LaneReader(p, "lane1")
    assert r.ready() == (False, "waiting for the first frame from rtsp://cam")
    p.first_frame.set()
    assert r.ready() == (True, "ok")
    p.source.online = False
    ok, why = r.ready()
    assert not ok and why.startswith("camera offline")
    p.source.online = True
    p.finished = True
    assert r.ready()[0] is False


def test_readiness_uses_the_pipelines_health_reader_where_there_is_one():
    from checkout_cam.pipeline import Health

    p = StubPipeline()
    p.first_frame.set()
    p.health = lambda: Health(ok=False, alive=True, camera_online=True,
                              reasons=("sink event log has been failing for 12 s",))
    r = LaneReader(p, "lane1")
    assert r.ready() == (False, "sink event log has been failing for 12 s")
    assert r.health()["reasons"] == ["sink event log has been failing for 12 s"]
    p.health = lambda: Health(ok=False, alive=True, camera_online=False, reasons=("camera rtsp://cam is offline",))
    assert r.ready() == (False, "camera rtsp://cam is offline")
    p.health = lambda: Health(ok=True, alive=True, camera_online=True)
    assert r.ready() == (True, "ok")
