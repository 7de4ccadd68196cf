"""The lane's MQTT publisher against a real Mosquitto: envelopes, review pictures, availability, outbox
draining through a broker outage, and attendant resolutions."""

import json
import time

import cv2
import numpy as np
import paho.mqtt.client as mqtt

from checkout_cam.fleet.publisher import MqttPublisher
from checkout_cam.fleet.subscriber import EventSubscriber
from checkout_cam.fleet.topics import Topics
from checkout_cam.schema import RunIdentity
from checkout_cam.sinks import EventLogSink
from tests.fleet.conftest import Collector, drive_items, settings_for


def _log(tmp_path, identity, name="events.jsonl"):
    return EventLogSink(tmp_path / name, max_bytes=10_000_000, backups=1, source="synthetic",
                        model={"name": "fake", "sha256": None, "trained": False}, policy={},
                        wall_clock_offset=None, identity=identity)


def _publisher(b, tmp_path, log, **kw):
    return MqttPublisher(settings_for(b), lane_id=log.identity.lane_id, state_dir=str(tmp_path / "state"),
                         record_of=log.record, **kw)


def test_items_go_out_as_new_and_end_envelopes_with_a_review_picture(broker, tmp_path):
    identity = RunIdentity("lane1")
    topics = Topics("lane1")
    sub = Collector(broker)
    try:
        with _log(tmp_path, identity) as log, _publisher(broker, tmp_path, log) as pub:
            assert pub.wait_connected(10)
            # apple rises to 0.95 in its 3rd frame: that frame is the review picture at the end
            policy = drive_items([log, pub], [(1, [0.5, 0.6, 0.95, 0.7]), (2, [0.8, 0.8, 0.8])])
            assert policy.close() is None
            assert pub.wait_drained(10)
            assert sub.wait_for(lambda: len(sub.on(topics.events)) == 4)
        assert sub.wait_for(lambda: sub.on(topics.available)[-1:] == [b"stopped"])
    finally:
        sub.close()
    logged = [json.loads(line) for line in (tmp_path / "events.jsonl").read_text().splitlines()]
    envelopes = [json.loads(p) for p in sub.on(topics.events)]
    assert [(e["type"], e["seq"]) for e in envelopes] == [("new", 1), ("end", 1), ("new", 2), ("end", 2)]
    assert [e["event"] for e in envelopes if e["type"] == "end"] == logged  # the very objects the log holds
    assert envelopes[0]["id"] == envelopes[1]["id"] == logged[0]["id"]
    assert envelopes[0]["event"]["review"] is True and envelopes[0]["event"]["review_reasons"]
    assert sub.on(topics.available)[0] == b"online"
    for event in logged:  # untrained model: every item flagged, every item has its picture
        pictures = sub.on(topics.review(event["id"]))
        assert 1 <= len(pictures) <= 2
        image = cv2.imdecode(np.frombuffer(pictures[-1], np.uint8), cv2.IMREAD_COLOR)
        assert image is not None and max(image.shape[:2]) <= 320 and len(pictures[-1]) < 50_000
    stats = pub.status()
    assert stats.outbox_depth == 0 and stats.acked >= 6 and stats.dropped == 0
    assert stats.outbox_write_ms_p95 is not None


def test_a_broker_outage_fills_the_outbox_and_it_drains_in_order(broker, tmp_path):
    identity = RunIdentity("lane1")
    got = []
    with _log(tmp_path, identity) as log, _publisher(broker, tmp_path, log, review_images=False) as pub, \
            EventSubscriber(settings_for(broker), got.append, session="test-consumer", log_lines=True) as sub:
        assert pub.wait_connected(10) and sub.connected.wait(10)
        drive_items([log, pub], [(1, [0.9, 0.9])] * 3, identity=identity)
        assert pub.wait_drained(10)
        broker.stop()
        t0 = time.perf_counter()
        drive_items([log, pub], [(2, [0.9, 0.9])] * 10, identity=identity)
        assert time.perf_counter() - t0 < 5, "a dead broker must not slow the lane"
        assert pub.status().outbox_depth == 20 and not pub.status().connected
        assert pub.status().state == "disconnected" and "lost the broker" in pub.status().last_error
        broker.start()
        assert pub.wait_drained(20), pub.status()
        deadline = time.monotonic() + 15
        while len(got) < 13 and time.monotonic() < deadline:
            time.sleep(0.05)
    logged = [json.loads(line) for line in (tmp_path / "events.jsonl").read_text().splitlines()]
    assert [e["seq"] for e in got] == [e["seq"] for e in logged]
    assert got == logged and len(got) == 13
    assert [e["seq"] for e in got] == list(range(1, 14))
    assert pub.status().reconnects >= 1


def test_what_a_killed_lane_left_unacknowledged_is_sent_at_its_next_start(broker, tmp_path):
    identity = RunIdentity("lane1")
    broker.stop()
    with _log(tmp_path, identity) as log:
        pub = _publisher(broker, tmp_path, log, review_images=False).start()
        drive_items([log, pub], [(1, [0.9, 0.9])] * 4, identity=identity)
        assert pub.outbox.depth == 8
        pub.client.loop_stop()   # as good as dead: nothing more leaves this one
        pub.outbox.close()
        broker.start()
        sub = Collector(broker, "checkout_cam/lane1/events")
        try:
            with _publisher(broker, tmp_path, log) as again:
                assert again.wait_drained(15)
            assert sub.wait_for(lambda: len(sub.on("checkout_cam/lane1/events")) == 8)
        finally:
            sub.close()
    seqs = [(json.loads(p)["type"], json.loads(p)["seq"]) for p in sub.on("checkout_cam/lane1/events")]
    assert seqs == [(t, s) for s in (1, 2, 3, 4) for t in ("new", "end")]


def _resolution(event_id, lane="lane1", **kw):
    return {"type": "resolution", "event_id": event_id, "lane_id": lane, "outcome": "correct", "label": "milk",
            "index": 2, "resolver": "anna", "resolved_at": "2026-12-01T15:00:00.000+00:00", **kw}


def test_the_lane_acts_only_on_valid_resolutions_of_its_own_events(broker, tmp_path):
    identity = RunIdentity("lane1")
    accepted = []
    console = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="console")
    console.connect(broker.host, broker.port)
    console.loop_start()
    topic = Topics("lane1").resolution
    try:
        with _log(tmp_path, identity) as log:
            with _publisher(broker, tmp_path, log, on_resolution=lambda r: (accepted.append(r),
                                                                          log.write_record(r))) as pub:
                assert pub.wait_connected(10)
                drive_items([log, pub], [(1, [0.9, 0.9])], identity=identity)
                own = json.loads((tmp_path / "events.jsonl").read_text().splitlines()[0])["id"]
                time.sleep(0.3)  # the subscription is made on connect
                for payload in [b"{not json", json.dumps({"type": "resolution", "event_id": own}).encode(),
                                json.dumps(_resolution(identity.event_id(99))).encode(),   # not produced
                                json.dumps(_resolution(own, lane="lane2")).encode(),       # not this lane
                                json.dumps(_resolution(own)).encode(),
                                json.dumps(_resolution(own)).encode()]:                    # redelivered
                    console.publish(topic, payload, qos=1).wait_for_publish(5)
                deadline = time.monotonic() + 10
                while pub.status().resolutions_malformed + pub.status().resolutions_refused < 4 \
                        and time.monotonic() < deadline:
                    time.sleep(0.05)
                time.sleep(0.3)
                s = pub.status()
                assert (s.resolutions_accepted, s.resolutions_refused, s.resolutions_malformed) == (1, 2, 2)
                assert [r.event_id for r in accepted] == [own]
                assert pub.resolution(own).label == "milk"
            # after a restart the lane still knows its events and what was resolved
            with _publisher(broker, tmp_path, log, on_resolution=accepted.append) as again:
                assert again.wait_connected(10)
                assert [r.event_id for r in again.latest_resolutions()] == [own]
                time.sleep(0.3)
                console.publish(topic, json.dumps(_resolution(own, outcome="accept", label="apple")),
                                qos=1).wait_for_publish(5)
                deadline = time.monotonic() + 10
                while len(accepted) < 2 and time.monotonic() < deadline:
                    time.sleep(0.05)
                assert [r.outcome for r in accepted] == ["correct", "accept"]
    finally:
        console.disconnect()
        console.loop_stop()
    lines = [json.loads(line) for line in (tmp_path / "events.jsonl").read_text().splitlines()]
    assert [line["type"] for line in lines] == ["item", "resolution"]
    assert lines[1]["event_id"] == own and lines[1]["outcome"] == "correct"


def test_an_event_logged_but_never_committed_to_the_outbox_is_recovered_from_the_log(broker, tmp_path):
    """SIGKILL between the log line and the outbox commit: the next start finds it in the log."""
    identity = RunIdentity("lane1")
    with _log(tmp_path, identity) as log:
        drive_items([log], [(1, [0.9, 0.9]), (2, [0.9, 0.9])], identity=identity)   # the log only
        sub = Collector(broker, "checkout_cam/lane1/events")
        try:
            with _publisher(broker, tmp_path, log) as pub:
                assert pub.recover_from_log(str(tmp_path / "events.jsonl")) == 2
                assert pub.recover_from_log(str(tmp_path / "events.jsonl")) == 0   # once only
                assert pub.wait_drained(10)
            assert sub.wait_for(lambda: len(sub.on("checkout_cam/lane1/events")) == 2)
        finally:
            sub.close()
    logged = [json.loads(line) for line in (tmp_path / "events.jsonl").read_text().splitlines()]
    assert [json.loads(p)["event"] for p in sub.on("checkout_cam/lane1/events")] == logged


def test_a_failing_outbox_is_a_sink_failure_and_a_dead_broker_is_not(tmp_path):
    from checkout_cam.fleet.connection import BrokerSettings
    from checkout_cam.sinks import SinkGroup
    from tests.helpers.mosquitto import free_port
    identity = RunIdentity("lane1")
    with _log(tmp_path, identity) as log:
        pub = MqttPublisher(BrokerSettings(host="127.0.0.1", port=free_port(), reconnect_min_s=0.2,
                                           reconnect_max_s=1.0),
                            lane_id="lane1", state_dir=str(tmp_path / "state"), record_of=log.record)
        with pub, SinkGroup([log, pub]) as group:
            drive_items([group], [(1, [0.9, 0.9])], identity=identity)   # nobody listening: fine
            assert group.failures == {} and pub.outbox.depth == 3 and pub.status().state != "connected"
            pub.outbox.close()   # the disk went away
            drive_items([group], [(2, [0.9, 0.9])], identity=identity)
            assert group.failures.get("mqtt", 0) >= 1 and "event log" not in " ".join(group.failures)
    assert len(log.path.read_text().splitlines()) == 2   # the log still has both
