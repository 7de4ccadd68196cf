import json
import logging
from pathlib import Path

import cv2
import numpy as np
import pytest

from checkout_cam.errors import CheckoutCamError
from checkout_cam.frames import Frame
from checkout_cam.render import OverlayRenderer
from checkout_cam.results import Classification, InferenceResult, Prediction
from checkout_cam.review import Decision, ItemEvent
from checkout_cam.sinks import EventLogSink, SinkGroup, StderrEventSink, VideoWriterSink, describe

MODEL = {"name": "resnet18-grocery", "sha256": "0" * 64, "trained": True}
POLICY = {"min_confidence": 0.6, "min_margin": 0.15}
TOP = (Prediction(948, "Granny Smith", 0.87), Prediction(952, "fig", 0.06), Prediction(950, "orange", 0.02))


def event(n: int, review=False) -> ItemEvent:
    return ItemEvent(label="Granny Smith", index=948, confidence=0.87, top=TOP, review=review,
                     review_reasons=("low_margin",) if review else (), frame_start=10 * n,
                     frame_end=10 * n + 5, t_start=n / 3, t_end=n / 3 + 0.2, results=6)


def frame(i: int, w=320, h=240, video=True) -> Frame:
    img = np.zeros((h, w, 3), np.uint8)
    img[:, : (i * 7) % w] = (40, 120, 200)
    return Frame(img, frame_id=i, timestamp=100.0 + i / 30, source="test", video_time=i / 30 if video else None)


def decision(i: int, closed: ItemEvent | None = None) -> Decision:
    c = Classification(TOP)
    r = InferenceResult(i, 100.0 + i / 30, i / 30, c, 10.0, done=100.0 + i / 30 + 0.02)
    return Decision(frame_id=i, result=r, smoothed=c, review=False, reasons=(), empty=False,
                    item="Granny Smith", opened=None, closed=closed)


def log_sink(path: Path, **kw) -> EventLogSink:
    args = dict(max_bytes=100_000, backups=3, source="box.mp4", model=MODEL, policy=POLICY,
                wall_clock_offset=None)
    args.update(kw)
    return EventLogSink(path, **args)


def lines(path: Path) -> list[dict]:
    return [json.loads(ln) for ln in path.read_text(encoding="utf-8").splitlines()]


def test_event_log_writes_each_closed_event_once_and_flushes_it(tmp_path):
    path = tmp_path / "logs" / "deep" / "events.jsonl"  # parent folders are created
    with log_sink(path) as sink:
        sink(frame(0), None)
        sink(frame(1), decision(1))
        assert path.read_text() == ""
        closing = decision(2, closed=event(1, review=True))
        for i in range(2, 5):  # the latest decision is repeated for the frames that follow
            sink(frame(i), closing)
        got = lines(path)  # read while the sink is still open: the line is already on disk
        assert len(got) == 1
        assert got[0]["label"] == "Granny Smith" and got[0]["review"] is True
        assert got[0]["review_reasons"] == ["low_margin"] and got[0]["source"] == "box.mp4"
        assert got[0]["model"] == MODEL and got[0]["policy"] == POLICY
        assert got[0]["t_start"] == pytest.approx(0.333)
        last = event(2)
        sink.close_event(last)
        sink.close_event(last)
        assert len(lines(path)) == 2
    with pytest.raises(CheckoutCamError, match="closed"):
        sink.close_event(event(3))


def test_event_log_appends_to_an_existing_log(tmp_path):
    path = tmp_path / "events.jsonl"
    with log_sink(path) as sink:
        sink.close_event(event(1))
    with log_sink(path) as sink:
        sink.close_event(event(2))
    assert [d["frame_start"] for d in lines(path)] == [10, 20]


def test_event_log_rotates_by_size_and_never_loses_a_line(tmp_path):
    path = tmp_path / "events.jsonl"
    one = len(json.dumps(event(1).to_dict(source="box.mp4", model=MODEL, policy=POLICY,
                                          wall_clock_offset=None))) + 1
    with log_sink(path, max_bytes=3 * one + 10, backups=5) as sink:
        for n in range(12):
            sink.close_event(event(n))
            assert path.stat().st_size <= 3 * one + 10
    files = [path.with_name(f"events.jsonl.{i}") for i in range(5, 0, -1)] + [path]
    assert [f.exists() for f in files] == [False, False, True, True, True, True]
    starts = [d["frame_start"] for f in files if f.exists() for d in lines(f)]
    assert starts == [10 * n for n in range(12)]  # every line, oldest file first, in order


def test_event_log_keeps_only_the_newest_backups(tmp_path):
    path = tmp_path / "events.jsonl"
    with log_sink(path, max_bytes=1000, backups=2) as sink:  # 1000 bytes: about two lines a file
        for n in range(20):
            sink.close_event(event(n))
    assert not path.with_name("events.jsonl.3").exists()
    kept = [d["frame_start"] for f in ("events.jsonl.2", "events.jsonl.1", "events.jsonl")
            for d in lines(path.with_name(f))]
    assert kept == sorted(kept) and kept[-1] == 190 and len(kept) < 20


def test_event_log_error_names_the_path(tmp_path):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    with pytest.raises(CheckoutCamError, match=r"not-a-dir/events.jsonl.*serve.log_path"):
        log_sink(blocker / "events.jsonl")


def test_stderr_sink_logs_one_line_per_item(caplog):
    sink = StderrEventSink()
    closing = decision(3, closed=event(1, review=True))
    with caplog.at_level(logging.INFO, logger="checkout_cam.sinks"):
        sink(frame(3), closing)
        sink(frame(4), closing)
        sink.close_event(event(2))
    assert [r.getMessage() for r in caplog.records] == [
        'item "Granny Smith" 87% frames 10-15 REVIEW(low_margin)',
        'item "Granny Smith" 87% frames 20-25 OK']
    assert describe(event(0)) == 'item "Granny Smith" 87% frames 0-5 OK'


def test_a_failing_sink_does_not_stop_the_others(tmp_path, caplog):
    seen = []

    def broken(frame, decision):
        raise OSError("disk full")

    def recorder(frame, decision):
        seen.append(frame.frame_id)

    path = tmp_path / "events.jsonl"
    with caplog.at_level(logging.ERROR, logger="checkout_cam.sinks"):
        with SinkGroup([broken, log_sink(path), recorder]) as group:
            for i in range(5):
                group(frame(i), decision(i, closed=event(i) if i == 2 else None))
            group.close_event(event(9))
    assert seen == [0, 1, 2, 3, 4]
    assert [d["frame_start"] for d in lines(path)] == [20, 90]
    assert group.failures == {"broken": 5}
    failures = [r for r in caplog.records if "broken" in r.getMessage()]
    assert len(failures) == 1  # repeated failures are not logged on every frame
    assert "frame 0" in failures[0].getMessage() and failures[0].exc_info


def test_sink_group_closes_every_sink_even_if_one_fails_to(tmp_path):
    class Bad:
        name = "bad"

        def __call__(self, frame, decision):
            pass

        def close(self):
            raise RuntimeError("boom")

    log = log_sink(tmp_path / "events.jsonl")
    with SinkGroup([Bad(), log]):
        pass
    assert log._file.closed


def test_video_writer_output_reopens_with_the_right_count_size_and_fps(tmp_path):
    path = tmp_path / "out" / "annotated.mp4"
    renderer = OverlayRenderer(model_name="demo-untrained", trained=False)
    frames = [frame(i) for i in range(30)]
    with VideoWriterSink(path, fps=29.97, size=(320, 240), renderer=renderer) as sink:
        for i, f in enumerate(frames):
            sink(f, None if i < 3 else decision(i))  # frames before the first result are written too
    assert sink.frames == 30
    cap = cv2.VideoCapture(str(path))
    try:
        assert cap.isOpened()
        # The rate follows the frames' own times (i / 30 s), not the nominal fps given.
        assert cap.get(cv2.CAP_PROP_FPS) == pytest.approx(30.0, abs=0.01)
        assert (cap.get(cv2.CAP_PROP_FRAME_WIDTH), cap.get(cv2.CAP_PROP_FRAME_HEIGHT)) == (320, 240)
        decoded = []
        while True:
            ok, img = cap.read()
            if not ok:
                break
            decoded.append(img)
    finally:
        cap.release()
    assert len(decoded) == 30
    # What was written is the annotated frame (lossy codec: compare loosely).
    expected = renderer.annotate(frames[10], decision(10), now=frames[10].timestamp)
    assert np.abs(decoded[10].astype(int) - expected.astype(int)).mean() < 6
    assert np.abs(decoded[10].astype(int) - frames[10].image.astype(int)).mean() > 10


def test_video_writer_resizes_frames_of_another_size(tmp_path):
    path = tmp_path / "v.mp4"
    with VideoWriterSink(path, fps=10, size=(320, 240), renderer=OverlayRenderer(model_name="m", trained=True)) as s:
        s(frame(0, w=640, h=480), None)
        s(frame(1), None)
    cap = cv2.VideoCapture(str(path))
    assert cap.get(cv2.CAP_PROP_FRAME_COUNT) == 2 and cap.get(cv2.CAP_PROP_FRAME_WIDTH) == 320
    cap.release()


def test_video_writer_errors_are_clear(tmp_path):
    r = OverlayRenderer(model_name="m", trained=True)
    with pytest.raises(CheckoutCamError, match="fps must be > 0"):
        VideoWriterSink(tmp_path / "v.mp4", fps=0, size=(320, 240), renderer=r)
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(CheckoutCamError, match="cannot write video .*file/v.mp4"):
        VideoWriterSink(blocker / "v.mp4", fps=30, size=(320, 240), renderer=r)


def _pts(path):
    import av
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        assert s.codec_context.name == "h264" and s.codec_context.pix_fmt == "yuv420p"  # browsers play it
        return [float(f.pts * s.time_base) for f in c.decode(s)]


def test_video_writer_follows_variable_frame_times(tmp_path):
    """A VFR input (gaps, bursts) comes out with each frame at its own time, not at a fixed rate."""
    times = [0.0, 0.04, 0.08, 0.5, 0.52, 0.54, 2.0, 2.033]
    path = tmp_path / "vfr.mp4"
    with VideoWriterSink(path, fps=25, size=(320, 240), renderer=OverlayRenderer(model_name="m", trained=True)) as s:
        for i, t in enumerate(times):
            f = frame(i)
            s(Frame(f.image, frame_id=i, timestamp=50.0 + t, source="t", video_time=t), None)
    assert _pts(path) == pytest.approx(times, abs=1e-4)


def test_video_writer_refuses_containers_without_timestamps(tmp_path):
    with pytest.raises(CheckoutCamError, match="AVI cannot carry"):
        VideoWriterSink(tmp_path / "v.avi", fps=30, size=(320, 240), renderer=OverlayRenderer(model_name="m", trained=True))


def test_a_failing_event_log_is_counted_and_the_lost_events_too(tmp_path):
    """Disk full (/dev/full): each write fails; the group counts failures and lost events and
    says since when the sink fails; a success ends the streak."""
    now = [1000.0]
    log = log_sink(Path("/dev/full"))
    group = SinkGroup([log, lambda f, d: None], clock=lambda: now[0])
    group(frame(0), decision(0))
    assert group.troubles() == [] and group.lost_events == 0
    first = event(1)
    group(frame(1), decision(1, closed=first))
    group(frame(2), decision(2, closed=first))  # the same event repeated: not lost twice
    now[0] += 5
    group(frame(3), decision(3, closed=event(3)))
    group.close_event(event(9))
    assert group.lost_events == 3 and group.total_failures == 3
    (trouble,) = group.troubles()
    assert trouble.name == "event log /dev/full" and trouble.failing_since == 1000.0
    assert "No space left on device" in trouble.last_error
    group.sinks = [log_sink(tmp_path / "ok.jsonl")]
    group.sinks[0].name = trouble.name  # the same sink, working again
    group(frame(4), decision(4, closed=event(4)))
    assert group.troubles() == []
    log.close()


def test_an_event_log_deleted_while_open_is_opened_again(tmp_path):
    path = tmp_path / "events.jsonl"
    with log_sink(path) as sink:
        sink.close_event(event(1))
        path.unlink()  # an operator cleaning up, or a rotation without SIGHUP
        sink.close_event(event(2))
        assert [d["frame_start"] for d in lines(path)] == [20]
        path.rename(tmp_path / "events.jsonl.1")
        sink.reopen("SIGHUP")
        sink.close_event(event(3))
    assert [d["frame_start"] for d in lines(path)] == [30]


def test_event_log_after_a_torn_line_starts_on_a_new_line(tmp_path):
    path = tmp_path / "events.jsonl"
    path.write_bytes(b'{"type": "item", "lab')  # what a failed write can leave
    with log_sink(path) as sink:
        sink._file = None  # as after a failed write
        sink.close_event(event(1))
    text = path.read_text().splitlines()
    assert json.loads(text[-1])["frame_start"] == 10


def test_event_log_whose_parent_is_a_file_says_so(tmp_path):
    blocker = tmp_path / "logs"
    blocker.write_text("")
    with pytest.raises(CheckoutCamError, match=r"logs is a file, not a folder; choose another path"):
        log_sink(blocker / "events.jsonl")
