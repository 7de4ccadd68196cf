import json

import cv2
import pytest

from checkout_cam.cli import main
from checkout_cam.config import Config, override
from checkout_cam.modes.replay import run_replay

EVENT_KEYS = {"type", "label", "index", "confidence", "top", "review", "review_reasons", "frame_start",
              "frame_end", "t_start", "t_end", "source", "model", "policy"}


def _cfg(model, video):
    return override(override(Config(), "model.path", str(model)), "source.uri", str(video))


def _events(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_replay_box_writes_every_frame_and_an_event_log(random_artifact, videos, tmp_path, capsys):
    out, log = tmp_path / "box.mp4", tmp_path / "events.jsonl"
    rc = main(["replay", str(videos / "box.mp4"), "--model", str(random_artifact), "--out", str(out),
               "--log", str(log), "--no-progress"])
    # box.mp4 holds one frame that does not decode (456 packets, 455 frames, as ffmpeg also finds):
    # replay says so and exits 3 (it used to exit 0 without a word).
    assert rc == 3
    summary = capsys.readouterr().out
    assert "replay: 455 frames" in summary and "PARTIAL: decoded 455 of 456 frames" in summary
    cap = cv2.VideoCapture(str(out))
    src = cv2.VideoCapture(str(videos / "box.mp4"))
    assert int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)) == 640 and int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)) == 480
    assert cap.get(cv2.CAP_PROP_FPS) == pytest.approx(src.get(cv2.CAP_PROP_FPS), abs=0.01)
    n = 0
    while cap.read()[0]:
        n += 1
    assert n == 455
    events = _events(log)
    for e in events:
        assert EVENT_KEYS <= set(e) and e["type"] == "item"
        assert e["model"]["trained"] is False and e["review"] is True and "untrained" in e["review_reasons"]
        assert 0 <= e["frame_start"] <= e["frame_end"] < 455
        assert isinstance(e["t_start"], float) and e["t_start"] <= e["t_end"] <= 455 / 29.97 + 0.1
        assert len(e["top"]) == 3


def test_replay_is_deterministic(random_artifact, videos, tmp_path):
    cfg = _cfg(random_artifact, videos / "cup.mp4")
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    s1 = run_replay(cfg, log=a, progress=False)
    s2 = run_replay(cfg, log=b, progress=False)
    assert s1.frames == s2.frames == 217
    # Replay times are seconds into the video (no wall clock); only the run identity differs.
    lines_a, lines_b = ([json.loads(line) for line in p.read_text().splitlines()] for p in (a, b))
    assert lines_a and {e["run_id"] for e in lines_a}.isdisjoint({e["run_id"] for e in lines_b})
    strip = lambda e: {k: v for k, v in e.items() if k not in ("id", "run_id")}  # noqa: E731
    assert [strip(e) for e in lines_a] == [strip(e) for e in lines_b]


def test_replay_refuses_cameras_and_missing_files(random_artifact, tmp_path, capsys):
    assert main(["replay", "--source", "0", "--model", str(random_artifact)]) == 2
    assert "replay needs a video file" in capsys.readouterr().err
    assert main(["replay", str(tmp_path / "none.mp4"), "--model", str(random_artifact)]) == 2
    assert "video file not found" in capsys.readouterr().err


def test_replay_without_a_model_says_how_to_make_one(videos, tmp_path, capsys):
    assert main(["replay", str(videos / "cup.mp4"), "--model", str(tmp_path / "none.pt")]) == 2
    assert "export-model" in capsys.readouterr().err


@pytest.mark.parametrize("video", ["box.mp4", "cup.mp4"])
def test_motion_gating_does_not_change_the_item_events(random_artifact, videos, tmp_path, video):
    cfg = _cfg(random_artifact, videos / video)
    plain, gated = tmp_path / "plain.jsonl", tmp_path / "gated.jsonl"
    s1 = run_replay(cfg, log=plain, progress=False)
    s2 = run_replay(cfg, log=gated, progress=False, gating=True)
    assert s2.frames == s1.frames and s2.model_runs < s1.model_runs  # it did skip frames
    key = lambda e: (e["label"], e["frame_start"], e["frame_end"], e["review"], e["review_reasons"])
    assert [key(e) for e in _events(plain)] == [key(e) for e in _events(gated)]
    assert _events(plain)  # there is something to compare


def _pts(path):
    import av
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        return s.codec_context.name, [float(f.pts * s.time_base) for f in c.decode(s)]


def test_truncated_input_is_partial_exit_3_unless_allowed(random_artifact, clips, tmp_path, capsys):
    args = ["replay", str(clips["truncated"]), "--model", str(random_artifact), "--no-progress"]
    assert main(args) == 3
    out = capsys.readouterr().out
    assert "replay: 133 frames" in out and "PARTIAL" in out and "ended at" in out
    assert main(args + ["--allow-partial"]) == 0


@pytest.mark.parametrize("clip, tolerance", [("vfr", 1e-3), ("lying_avi", 0.04)])
def test_replay_video_and_events_follow_the_real_timestamps(random_artifact, clips, tmp_path, clip, tolerance):
    """Within one frame interval of ffprobe's times (the AVI's last frame time is ffmpeg's guess, 20 ms
    off its 40 ms grid); the header's fps would put the AVI's events at half their time."""
    from tests.helpers.clips import probe_times
    out, log = tmp_path / "annotated.mp4", tmp_path / "e.jsonl"
    assert main(["replay", str(clips[clip]), "--model", str(random_artifact), "--out", str(out),
                 "--log", str(log), "--no-progress"]) == 0
    truth = probe_times(clips[clip])
    codec, written = _pts(out)
    assert codec == "h264" and len(written) == len(truth)
    assert max(abs(a - b) for a, b in zip(written, truth)) <= tolerance + 1e-6
    events = _events(log)
    assert events
    for e in events:
        assert e["t_start"] == pytest.approx(truth[e["frame_start"]], abs=tolerance + 1e-6)
        assert e["t_end"] == pytest.approx(truth[e["frame_end"]], abs=tolerance + 1e-6)


def test_replay_refuses_an_existing_log_unless_append(random_artifact, clips, tmp_path, capsys):
    log = tmp_path / "e.jsonl"
    args = ["replay", str(clips["vfr"]), "--model", str(random_artifact), "--log", str(log), "--no-progress"]
    assert main(args) == 0
    first = _events(log)
    assert main(args) == 2
    assert "already exists" in capsys.readouterr().err and _events(log) == first
    assert main(args + ["--append"]) == 0
    both = _events(log)
    assert len(both) == 2 * len(first) and len({e["run_id"] for e in both}) == 2
