"""`serve` as systemd runs it: a child process, the notify protocol on a real socket, SIGTERM."""

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from datetime import datetime, timezone

import pytest

from tests.conftest import REPO
from tests.helpers.notify_socket import NotifySocket
from tests.helpers.stream_server import StreamServer

needs_ffmpeg = pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="needs ffmpeg (apt-get install ffmpeg)")


class Stderr:
    """Collects a child's stderr in a thread, so the test can wait for lines."""

    def __init__(self, proc):
        self.lines: list[str] = []
        self._thread = threading.Thread(target=self._read, args=(proc,), daemon=True)
        self._thread.start()

    def _read(self, proc):
        for line in proc.stderr:
            self.lines.append(line)

    def wait_for(self, text: str, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(text in line for line in self.lines):
                return True
            time.sleep(0.1)
        return False

    @property
    def text(self) -> str:
        return "".join(self.lines)


def _serve(tmp_path, model, source, notify: NotifySocket | None = None, watchdog_sec=None):
    cfg = tmp_path / "config.yaml"
    cfg.write_text("serve:\n  stats_interval_s: 1\nsource:\n  reconnect_initial_s: 0.2\n"
                   "  reconnect_max_s: 1.0\n  stall_timeout_s: 2.0\n")
    env = {**os.environ, **(notify.env(watchdog_sec) if notify else {})}
    proc = subprocess.Popen([sys.executable, "-m", "checkout_cam", "serve", "--config", str(cfg), "--model",
                             str(model), "--source", str(source), "--log", str(tmp_path / "events.jsonl")],
                            cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    return proc, Stderr(proc)


def _stop(proc, notify: NotifySocket | None = None, sig=signal.SIGTERM) -> float:
    t0 = time.monotonic()
    proc.send_signal(sig)
    while proc.poll() is None and time.monotonic() - t0 < 30:
        if notify is not None:
            notify.drain(0.1)  # keep reading, as systemd does, so STOPPING=1 is not dropped
        else:
            time.sleep(0.1)
    proc.wait(timeout=1)
    return time.monotonic() - t0


def test_serve_speaks_notify_and_stops_cleanly_on_sigterm(tmp_path, random_artifact, videos):
    with NotifySocket(tmp_path) as notify:
        proc, err = _serve(tmp_path, random_artifact, videos / "box.mp4", notify, watchdog_sec=2)
        try:
            assert notify.wait_for("READY=1", timeout=60), err.text
            assert notify.wait_for("WATCHDOG=1", timeout=10), err.text
            deadline = time.monotonic() + 30
            while not err.wait_for("stats:", timeout=0.1) and time.monotonic() < deadline:
                notify.drain(0.2)
            assert err.wait_for("stats:", timeout=0.1), err.text
            notify.drain(5)  # long enough for an item to open in box.mp4
            took = _stop(proc, notify)
        finally:
            if proc.poll() is None:
                proc.kill()
        assert proc.returncode == 0, err.text
        assert took < 10.0  # a hang guard; the 5 s target is measured, not asserted (noisy CI)
        assert notify.wait_for("STOPPING=1", timeout=2)
        assert notify.messages.index(next(m for m in notify.messages if "READY=1" in m)) < \
            notify.messages.index(next(m for m in notify.messages if "STOPPING=1" in m))
    assert "UNTRAINED" in err.text
    events = [json.loads(line) for line in (tmp_path / "events.jsonl").read_text().splitlines()]
    assert events, "the item open at SIGTERM was not closed and written"
    last = events[-1]
    assert last["type"] == "item" and last["model"]["trained"] is False
    assert isinstance(last["t_start"], str) and "T" in last["t_start"]  # ISO 8601 wall time
    # A file played in serve: the wall clock when its frames were shown, and where in the file.
    start = datetime.fromisoformat(last["t_start"])
    assert abs((datetime.now(timezone.utc) - start).total_seconds()) < 120   # not boot time + video seconds
    assert last["clock"].startswith("wall") and 0 <= last["video_t_start"] <= last["video_t_end"] <= 15.2
    assert "item " in err.text  # the journald line for the event


def test_a_camera_lost_mid_item_is_written_at_once_and_survives_a_kill(tmp_path, random_artifact, videos):
    """The item in view closes at its last frame when the camera drops, and is in the log with the
    outage record before the camera returns, so a kill during the outage loses nothing."""
    log = tmp_path / "events.jsonl"
    with StreamServer(videos / "box.mp4") as server:
        proc, err = _serve(tmp_path, random_artifact, server.url)
        try:
            assert err.wait_for("first frame read", timeout=60), err.text
            time.sleep(4)  # box.mp4 moves from its first frames: the item opens within a second
            server.stop()
            assert err.wait_for("camera lost", timeout=20), err.text
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and '"outage"' not in (log.read_text() if log.exists() else ""):
                time.sleep(0.1)
            proc.kill()   # SIGKILL, during the outage
            proc.wait(timeout=10)
        finally:
            if proc.poll() is None:
                proc.kill()
    lines = [json.loads(x) for x in log.read_text().splitlines()]
    assert [x["type"] for x in lines] == ["item", "outage"], err.text
    item, outage = lines
    assert item["closed_by"] == "camera_lost" and "camera_lost" in item["review_reasons"]
    assert outage["item_closed"] == item["id"] and outage["end"] is None and outage["last_frame"] == item["frame_end"]
    assert outage["start"] == item["t_end"] and outage["run_id"] == item["run_id"]


def test_serve_without_a_model_says_how_to_make_one(tmp_path, videos):
    proc, err = _serve(tmp_path, tmp_path / "none.pt", videos / "box.mp4")
    proc.wait(timeout=60)
    assert proc.returncode == 2 and "export-model" in err.text


@needs_ffmpeg
def test_camera_loss_and_return_at_the_source(videos):
    from checkout_cam.sources import CameraSource
    stop = threading.Event()
    with StreamServer(videos / "box.mp4") as server:  # started by `with`
        src = CameraSource(server.url, stop=stop, reconnect_initial_s=0.2, reconnect_max_s=1.0, stall_timeout_s=2.0)
        frames, offline_seen = [], []

        def consume():
            for f in src:
                frames.append(f.frame_id)

        t = threading.Thread(target=consume, daemon=True)
        t.start()
        deadline = time.monotonic() + 30
        while len(frames) < 20 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(frames) >= 20 and src.online
        server.stop()  # the camera drops
        deadline = time.monotonic() + 15
        while src.online and time.monotonic() < deadline:
            time.sleep(0.05)
        offline_seen.append(not src.online)
        before = len(frames)
        time.sleep(1.5)  # retrying with backoff meanwhile
        server.start()  # the camera returns
        deadline = time.monotonic() + 30
        while len(frames) < before + 20 and time.monotonic() < deadline:
            time.sleep(0.05)
        stop.set()
        t.join(10)
    assert offline_seen == [True]
    assert len(frames) >= before + 20, "frames did not resume after the camera returned"
    assert frames == sorted(set(frames)), "frame ids must keep increasing across reconnects"
    assert src.reconnects >= 1 and not t.is_alive()


@needs_ffmpeg
def test_serve_survives_a_dropped_camera(tmp_path, random_artifact, videos):
    with NotifySocket(tmp_path) as notify, StreamServer(videos / "box.mp4") as server:
        proc, err = _serve(tmp_path, random_artifact, server.url, notify, watchdog_sec=4)
        try:
            assert notify.wait_for("READY=1", timeout=60), err.text
            assert err.wait_for("first frame read", timeout=30), err.text  # READY=1 no longer waits for it
            server.stop()
            assert err.wait_for("camera offline", timeout=15), err.text
            notify.drain(2)
            assert proc.poll() is None, "serve exited because the camera dropped"
            pings = notify.count("WATCHDOG=1")
            server.start()
            assert err.wait_for(f"camera {server.url} online", timeout=30), err.text
            notify.drain(3)
            assert notify.count("WATCHDOG=1") > pings  # still alive and pinging
            took = _stop(proc, notify)
        finally:
            if proc.poll() is None:
                proc.kill()
    assert proc.returncode == 0 and took < 10.0, err.text  # hang guard


def test_outage_lines_go_to_mqtt_as_they_go_to_the_log(tmp_path):
    from checkout_cam.modes.serve import OutageToMqtt
    from checkout_cam.review import Outage
    from checkout_cam.schema import OutageRecord, record_from_dict
    from checkout_cam.sinks import EventLogSink

    class FakeMqtt:
        def __init__(self):
            self.sent = []

        def publish_record(self, kind, record):
            self.sent.append((kind, record))

    mqtt = FakeMqtt()
    with EventLogSink(tmp_path / "e.jsonl", max_bytes=10**6, backups=1, source="rtsp://cam", model={}, policy={},
                      wall_clock_offset=1_700_000_000.0) as log:
        sink = OutageToMqtt(mqtt, log)
        start = Outage(start=10.0, end=None, reason="camera stopped", last_frame=41, item_closed=None)
        log.outage(start)
        sink.outage(start)
    assert [k for k, _ in mqtt.sent] == ["outage"]
    record = mqtt.sent[0][1]
    assert isinstance(record, OutageRecord) and record.end is None and record.last_frame == 41
    line = json.loads((tmp_path / "e.jsonl").read_text())
    assert record_from_dict(line).to_dict() == record.to_dict()   # the same line on both


def test_serve_is_ready_without_its_camera_and_says_so(tmp_path, random_artifact):
    """An unplugged camera at start: READY=1 once the model is loaded, camera state in STATUS=, the
    watchdog pinged: systemd must not restart-loop a lane (reloading the model each time)."""
    with NotifySocket(tmp_path) as notify:
        proc, err = _serve(tmp_path, random_artifact, "http://127.0.0.1:9/nothing.mjpg", notify, watchdog_sec=2)
        try:
            assert notify.wait_for("READY=1", timeout=60), err.text
            notify.drain(4)
            assert proc.poll() is None, err.text
            assert notify.count("WATCHDOG=1") >= 2
            statuses = [m for m in notify.messages if "STATUS=" in m]
            assert any("OFFLINE" in m for m in statuses), statuses
            took = _stop(proc, notify)
        finally:
            if proc.poll() is None:
                proc.kill()
    assert proc.returncode == 0 and took < 10.0, err.text


def test_sighup_reopens_the_event_log_and_keeps_serving(tmp_path, random_artifact, videos):
    with NotifySocket(tmp_path) as notify:
        proc, err = _serve(tmp_path, random_artifact, videos / "box.mp4", notify)
        try:
            assert notify.wait_for("READY=1", timeout=60), err.text
            assert err.wait_for("first result", timeout=30), err.text
            log = tmp_path / "events.jsonl"
            rotated = tmp_path / "events.jsonl.1"
            assert log.exists()
            log.rename(rotated)  # what logrotate does, then:
            proc.send_signal(signal.SIGHUP)
            assert err.wait_for("reopened (SIGHUP)", timeout=10), err.text
            assert proc.poll() is None, "SIGHUP killed serve"
            notify.drain(5)  # long enough for an item to open in box.mp4
            took = _stop(proc, notify)
        finally:
            if proc.poll() is None:
                proc.kill()
        assert proc.returncode == 0 and took < 10.0, err.text
        assert notify.wait_for("STOPPING=1", timeout=2)
    assert rotated.exists()
    # The item open at SIGTERM went to the new file at the configured path, not the rotated one.
    events = [json.loads(line) for line in log.read_text().splitlines()]
    assert events and events[-1]["type"] == "item"


def test_a_run_that_lost_events_does_not_exit_0(tmp_path, random_artifact, videos):
    """Disk full: every event-log write fails. The stats line counts the errors and the exit is 1."""
    cfg = tmp_path / "config.yaml"
    cfg.write_text("serve:\n  stats_interval_s: 1\n")
    proc = subprocess.Popen([sys.executable, "-m", "checkout_cam", "serve", "--config", str(cfg), "--model",
                             str(random_artifact), "--source", str(videos / "box.mp4"), "--log", "/dev/full"],
                            cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    err = Stderr(proc)
    try:
        assert err.wait_for("first result", timeout=60), err.text
        time.sleep(5)  # an item opens; it is closed (and fails to be written) at SIGTERM
        _stop(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 1, err.text
    stopped = next(ln for ln in err.lines if "stopped (" in ln)
    assert "errors 1 (inference 0, sinks 1; 1 events lost)" in stopped and "items 1" in stopped
    assert "not written by every event sink" in err.text
