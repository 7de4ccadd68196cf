"""The service sections: /predict under concurrent clients against the source material's Flask loop,
and the lane under HTTP load (http; the measuring is scripts/bench_http.py's), and what the MQTT
sink's SQLite outbox adds to closing an item event (mqtt_outbox)."""

from __future__ import annotations

import statistics

import bench_http

from . import core
from .core import Bench, Row, SectionResult, Stats

def bench_http_section(bench: "Bench") -> SectionResult:
    """/predict under 1/4/16 clients vs the source material's Flask loop; the lane under HTTP load
    (scripts/bench_http.py)."""
    return bench_http.run(bench, core)


def bench_mqtt_outbox(bench: "Bench") -> SectionResult:
    """What the MQTT sink adds to closing an item event: the `end` envelope's JSON and its SQLite commit
    (scripts/mqtt_load.py measures the same with 50 lanes and a live broker)."""
    from checkout_cam.fleet.connection import BrokerSettings
    from checkout_cam.fleet.publisher import MqttPublisher
    from checkout_cam.schema import ItemRecord, RunIdentity
    res = SectionResult()
    identity = RunIdentity("bench")
    top = [{"index": i, "label": f"product {i}", "prob": p} for i, p in ((12, 0.71), (40, 0.2), (3, 0.05))]
    # Not started: no broker, no network; the commit is all the inference thread pays.
    pub = MqttPublisher(BrokerSettings(host="127.0.0.1"), lane_id="bench", state_dir=str(bench.work / "mqtt"),
                        record_of=lambda e: e, review_images=False)
    n = 300 if bench.quick else 2000
    for seq in range(1, n + 1):
        record = ItemRecord(id=identity.event_id(seq), seq=seq, lane_id="bench", run_id=identity.run_id,
                            label="product 12", index=12, confidence=0.71, top=top, review=True,
                            review_reasons=["low_margin"], frame_start=seq, frame_end=seq + 40,
                            t_start="2026-12-01T15:00:00.000+00:00", t_end="2026-12-01T15:00:01.300+00:00",
                            results=40, source="rtsp://camera", model={"name": "m", "sha256": "ab" * 32,
                                                                      "trained": True},
                            policy={"min_confidence": 0.6}, closed_by="empty")
        pub.publish_envelope("end", record, timed=True)
        if seq % 100 == 0:   # the drain thread acknowledges as the broker would
            pub.outbox.ack([m.row for m in pub.outbox.pending(limit=100)])
    samples = list(pub.write_ms._values)
    pub.outbox.close()
    res.rows.append(Row("mqtt outbox", "SQLite WAL, synchronous=NORMAL", "write on closing an event",
                        Stats.of(samples), "ms", f"last {len(samples)} of {n} closes; target p95 <= 2 ms"))
    res.figures.update(outbox_write_p50_ms=round(statistics.median(samples), 3),
                       outbox_write_p95_ms=round(sorted(samples)[int(0.95 * (len(samples) - 1))], 3))
    return res
