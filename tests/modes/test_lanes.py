"""Several lanes in one `serve`: one model, one engine; each lane its own source, ROI, policy, log."""

import json
import signal
import subprocess
import sys
import threading
import time

import pytest
import torch

from checkout_cam.config import config_from_dict, lane_config, load_config
from checkout_cam.engine import LANE, EngineClosed, InferenceEngine
from checkout_cam.errors import ConfigError
from checkout_cam.modes.lanes import LaneSet
from checkout_cam.results import Classification, Prediction
from checkout_cam.schema import record_from_dict
from tests.conftest import REPO
from tests.helpers.notify_socket import NotifySocket
from tests.modes.test_serve import Stderr

DEAD_CAMERA = "rtsp://127.0.0.1:9/no-camera"   # port 9 (discard): refused at once


def _lanes_cfg(tmp_path, model, lanes, **serve):
    return config_from_dict({
        "model": {"path": str(model)},
        "source": {"reconnect_initial_s": 0.2, "reconnect_max_s": 1.0, "stall_timeout_s": 2.0},
        "serve": {"log_path": str(tmp_path / "events.jsonl"), "stats_interval_s": 1, "lanes": lanes, **serve}})


# ---------------------------------------------------------------- config

def test_lanes_config_derives_each_lanes_settings(tmp_path):
    cfg = config_from_dict({
        "preprocess": {"roi": [0.0, 0.0, 0.5, 0.5]}, "review": {"min_confidence": 0.7},
        "serve": {"log_path": "logs/events.jsonl", "lanes": [
            {"lane_id": "lane1", "source": 0},
            {"lane_id": "lane2", "source": "rtsp://cam2/s", "roi": [0.5, 0.5, 0.5, 0.5], "min_confidence": 0.4,
             "log_path": "logs/two.jsonl"}]}})
    one, two = (lane_config(cfg, lane) for lane in cfg.serve.lanes)
    assert one.source.uri == "0" and one.serve.lane_id == "lane1" and one.serve.log_path == "logs/events-lane1.jsonl"
    assert one.preprocess.roi == [0.0, 0.0, 0.5, 0.5] and one.review.min_confidence == 0.7
    assert two.preprocess.roi == [0.5, 0.5, 0.5, 0.5] and two.review.min_confidence == 0.4
    assert two.serve.log_path == "logs/two.jsonl" and two.review.min_margin == cfg.review.min_margin
    assert one.serve.lanes == [] and one.mqtt.state_dir.endswith("lane1") != two.mqtt.state_dir.endswith("lane1")


def test_bad_lanes_are_named_by_key_path():
    with pytest.raises(ConfigError) as exc:
        config_from_dict({"serve": {"lanes": [
            {"lane_id": "a", "source": "0"}, {"lane_id": "a", "source": "1"},
            {"lane_id": "b", "source": "", "roi": [0.8, 0.0, 0.5, 0.5]}, {"lane_id": "c", "source": "2"},
            {"lane_id": "d", "source": "3", "log_path": "logs/events-a.jsonl"}]}})
    errs = "\n".join(exc.value.errors)
    assert "serve.lanes[1].lane_id: 'a' is used by an earlier lane" in errs
    assert "serve.lanes[2].source: every lane needs its camera" in errs
    assert "serve.lanes[2].roi: x+width" in errs
    assert "serve.lanes[4].log_path: logs/events-a.jsonl is the log of an earlier lane" in errs
    with pytest.raises(ConfigError, match=r"serve.lanes\[0\].bogus: unknown setting"):
        config_from_dict({"serve": {"lanes": [{"lane_id": "c", "source": "2", "bogus": 1}]}})


def test_single_source_form_is_unchanged():
    cfg = load_config(REPO / "config.yaml")
    assert cfg.serve.lanes == []


# ---------------------------------------------------------------- the engine

class SlowFake:
    """A classifier stand-in: 'classifies' each image as its first pixel value, slowly."""

    labels = [f"c{i}" for i in range(10)]

    def __init__(self, delay_s=0.02, fail_on=None):
        self.delay_s, self.fail_on, self.calls = delay_s, fail_on, []

    def batch_probabilities(self, batch):
        self.calls.append([int(v) for v in batch[:, 0, 0, 0]])
        if self.fail_on is not None and self.fail_on in self.calls[-1]:
            raise RuntimeError("bad frame")
        time.sleep(self.delay_s)
        return torch.nn.functional.one_hot(batch[:, 0, 0, 0].long(), 10).float()

    def top_k(self, probs, k):
        return [Classification((Prediction(int(p.argmax()), self.labels[int(p.argmax())], 1.0),)) for p in probs]


def _img(v):
    return torch.full((1, 3, 2, 2), float(v))


def test_engine_batches_waiting_lanes_round_robin_so_none_starves():
    fake = SlowFake()
    with InferenceEngine(fake, max_batch=3) as engine:
        blocker = engine.submit(_img(9), caller="busy", priority=LANE)   # occupies the model
        time.sleep(0.005)
        busy = [engine.submit(_img(1), caller="busy", priority=LANE) for _ in range(5)]
        quiet = engine.submit(_img(2), caller="quiet", priority=LANE)
        other = engine.submit(_img(3), caller="other", priority=LANE)
        assert quiet.result(5)[0].best.label == "c2" and other.result(5)[0].best.label == "c3"
        for f in busy + [blocker]:
            f.result(5)
    # The call after the blocker holds one frame of each waiting lane, not three of the busy one.
    second = fake.calls[1]
    assert sorted(second) == [1, 2, 3]
    assert engine.status()["lane"]["images"] == 8


def test_engine_isolates_a_failing_frame_and_fails_what_waits_on_close():
    fake = SlowFake(fail_on=4)
    with InferenceEngine(fake, max_batch=4) as engine:
        blocker = engine.submit(_img(9), caller="a", priority=LANE)
        time.sleep(0.005)
        good, bad = engine.submit(_img(1), caller="b", priority=LANE), engine.submit(_img(4), caller="c", priority=LANE)
        assert good.result(5)[0].best.label == "c1"
        with pytest.raises(RuntimeError, match="bad frame"):
            bad.result(5)
        blocker.result(5)
    assert engine.status()["lane"]["failed"] == 1
    with pytest.raises(EngineClosed):
        engine.submit(_img(1), caller="a", priority=LANE)


# ---------------------------------------------------------------- lanes in one process

def _events(path):
    return [record_from_dict(json.loads(line)) for line in path.read_text().splitlines() if line.strip()]


def test_two_lanes_and_a_dead_camera_share_one_model(tmp_path, random_artifact, videos, caplog):
    cfg = _lanes_cfg(tmp_path, random_artifact, [
        {"lane_id": "box", "source": str(videos / "box.mp4")},
        {"lane_id": "cup", "source": str(videos / "cup.mp4"), "roi": [0.1, 0.1, 0.8, 0.8], "min_confidence": 0.3},
        {"lane_id": "dead", "source": DEAD_CAMERA}])
    stop = threading.Event()
    with caplog.at_level("INFO", logger="checkout_cam.modes.lanes"):
        with LaneSet(cfg, stop) as lanes:
            by_id = {lane.lane_id: lane for lane in lanes.lanes}
            assert len({id(lane.pipeline.classifier.classifier) for lane in lanes.lanes}) == 1  # one model
            # Each lane crops its own scanning area.
            assert by_id["cup"].pipeline.classifier.preprocess.roi == (0.1, 0.1, 0.8, 0.8)
            assert by_id["box"].pipeline.classifier.preprocess.roi is None
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and not all(
                    by_id[k].pipeline.worker.model_runs >= 20 for k in ("box", "cup")):
                time.sleep(0.2)
            health, per_lane = lanes.health(30)
            # The dead camera is reported, but the service is alive: its threads loop.
            assert health.alive and not health.ok and not per_lane["dead"].camera_online
            assert any(r.startswith("dead: camera") and "offline" in r for r in health.reasons)
            assert by_id["dead"].pipeline.worker.model_runs == 0
            assert lanes.engine_summary()["images"] >= 40
    box, cup = tmp_path / "events-box.jsonl", tmp_path / "events-cup.jsonl"
    for path, lane_id in ((box, "box"), (cup, "cup")):
        events = _events(path)
        assert events and all(e.lane_id == lane_id for e in events), path
    assert {e.source for e in _events(cup)} == {str(videos / "cup.mp4")}
    assert _events(cup)[0].policy["min_confidence"] == 0.3   # the lane's own review threshold
    assert not (tmp_path / "events-dead.jsonl").exists() or not _events(tmp_path / "events-dead.jsonl")


def test_watchdog_lapses_when_any_lanes_thread_stops_looping(tmp_path, random_artifact, videos):
    cfg = _lanes_cfg(tmp_path, random_artifact, [
        {"lane_id": "a", "source": str(videos / "box.mp4")}, {"lane_id": "b", "source": str(videos / "cup.mp4")}])
    stop = threading.Event()
    with LaneSet(cfg, stop) as lanes:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not all(lane.pipeline.first_result.is_set() for lane in lanes.lanes):
            time.sleep(0.1)
        assert lanes.health(30)[0].alive
        lanes.lanes[1].pipeline.worker.heartbeat -= 100   # lane b's worker has not looped for 100 s
        health, _ = lanes.health(30)
        assert not health.alive and any(r.startswith("b: the inference thread has not looped") for r in health.reasons)


def test_serve_runs_lanes_from_the_config_file(tmp_path, random_artifact, videos):
    """The real command: `serve --config` with serve.lanes, READY and WATCHDOG on a real notify socket,
    SIGTERM, per-lane logs and summary lines."""
    cfg = tmp_path / "lanes.yaml"
    cfg.write_text(f"""
source: {{loop: true, reconnect_initial_s: 0.2, reconnect_max_s: 1.0}}
serve:
  log_path: {tmp_path / 'events.jsonl'}
  stats_interval_s: 1
  lanes:
    - {{lane_id: lane1, source: {videos / 'box.mp4'}}}
    - {{lane_id: lane2, source: {videos / 'cup.mp4'}}}
""")
    with NotifySocket(tmp_path) as notify:
        import os
        proc = subprocess.Popen([sys.executable, "-m", "checkout_cam", "serve", "--config", str(cfg), "--model",
                                 str(random_artifact)], cwd=REPO, env={**os.environ, **notify.env(10)},
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        err = Stderr(proc)
        try:
            assert err.wait_for("lane2: first result", 90) and err.wait_for("lane1: first result", 30), err.text
            notify.drain(3)
            assert "READY=1" in notify.fields() and notify.count("WATCHDOG=1") >= 1
            assert err.wait_for("stats: engine:", 10)
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(60)
    assert proc.returncode == 0, err.text
    summaries = [json.loads(line.split("lane summary ", 1)[1]) for line in err.lines if "lane summary " in line]
    assert [s["lane_id"] for s in summaries] == ["lane1", "lane2"]
    assert all(s["model_runs"] > 0 and s["captured"] > 0 and s["peak_rss_mb"] for s in summaries)
    assert "serving 2 lanes" in err.text


def test_validate_config_checks_each_lanes_files(tmp_path):
    from checkout_cam.config import path_problems
    cfg = config_from_dict({"serve": {"log_path": str(tmp_path / "events.jsonl"), "lanes": [
        {"lane_id": "a", "source": str(tmp_path / "missing.mp4")}, {"lane_id": "b", "source": "rtsp://cam/s"}]}})
    problems = path_problems(cfg, base=tmp_path)
    assert any(p.startswith("serve.lanes[0].source: video file") for p in problems)
    assert not any(p.startswith("serve.lanes[1]") for p in problems)


def test_serve_refuses_source_when_the_config_lists_lanes(tmp_path):
    cfg = tmp_path / "lanes.yaml"
    cfg.write_text("serve:\n  lanes:\n    - {lane_id: a, source: 0}\n    - {lane_id: b, source: 1}\n")
    r = subprocess.run([sys.executable, "-m", "checkout_cam", "serve", "--config", str(cfg), "--source", "2"],
                       cwd=REPO, capture_output=True, text=True, timeout=60)
    assert r.returncode == 2
    assert "--source 2: the config lists 2 lanes (serve.lanes), each with its own source" in r.stderr
