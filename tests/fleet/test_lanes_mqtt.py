"""Several lanes in one `serve` publish to a real broker as single lanes do: each its own topics, its own
outbox, its stats every interval."""

from __future__ import annotations

import json

from checkout_cam.config import config_from_dict
from checkout_cam.modes.lanes import run_lanes
from checkout_cam.schema import EventEnvelope
from tests.fleet.conftest import Collector

DEAD_CAMERA = "rtsp://127.0.0.1:9/no-camera"


def test_each_lane_publishes_its_events_stats_and_availability(tmp_path, broker, random_artifact, videos):
    cfg = config_from_dict({
        "model": {"path": str(random_artifact)},
        "source": {"loop": True, "reconnect_initial_s": 0.2, "reconnect_max_s": 1.0},
        "mqtt": {"host": broker.host, "port": broker.port, "state_dir": str(tmp_path / "state")},
        "serve": {"log_path": str(tmp_path / "events.jsonl"), "stats_interval_s": 1, "lanes": [
            {"lane_id": "box", "source": str(videos / "box.mp4")},
            {"lane_id": "dead", "source": DEAD_CAMERA}]}})
    seen = Collector(broker)
    try:
        assert run_lanes(cfg, max_seconds=6) == 0
        assert seen.wait_for(lambda: seen.on("checkout_cam/box/events") and seen.on("checkout_cam/box/stats"))
        stats = [json.loads(p) for p in seen.on("checkout_cam/box/stats")]
        assert len(stats) >= 2 and all(s["lane_id"] == "box" and s["camera_online"] for s in stats)
        dead = [json.loads(p) for p in seen.on("checkout_cam/dead/stats")]
        assert dead and all(s["lane_id"] == "dead" and not s["camera_online"] for s in dead)
        # The item open at shutdown went out through the box lane's own outbox.
        envelopes = [EventEnvelope.from_dict(json.loads(p)) for p in seen.on("checkout_cam/box/events")]
        assert envelopes and all(e.event.lane_id == "box" for e in envelopes)
        assert not seen.on("checkout_cam/dead/events")
        assert seen.on("checkout_cam/box/available")[-1] == b"stopped"
        assert (tmp_path / "state" / "box").is_dir() and (tmp_path / "state" / "dead").is_dir()
    finally:
        seen.close()
