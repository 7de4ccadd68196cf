"""The stats line's figures as one JSON object (the ``stats`` topic), read from a running Pipeline."""

from __future__ import annotations

from checkout_cam.schema import utc_now_iso


def lane_stats(pipeline, identity, mqtt=None) -> dict:
    """Camera and inference rates, latency, drops, items, errors, sink failures and the broker link."""
    s = pipeline.status()
    out = {
        "lane_id": identity.lane_id, "run_id": identity.run_id, "time": utc_now_iso(),
        "camera_fps": round(s.camera_fps, 2), "inference_fps": round(s.inference_fps, 2),
        "latency_p50_ms": round(pipeline.latency_ms.get(50), 1), "latency_p95_ms": round(pipeline.latency_ms.get(95), 1),
        "dropped_frames": s.dropped, "model_share": round(pipeline.model_share, 3),
        "items": pipeline.items, "flagged": pipeline.flagged, "errors": pipeline.worker.errors,
        "camera_online": not s.offline, "sink_failures": dict(pipeline.sinks.failures),
    }
    if mqtt is not None:
        out["mqtt"] = mqtt.status().to_dict()
    return out
