"""The console's MQTT side against a real Mosquitto, with a lane publishing real envelopes and JPEGs."""

from __future__ import annotations

import json
import time

from checkout_cam.console.ingest import Ingest
from checkout_cam.console.store import Store
from checkout_cam.schema import ResolutionRecord, utc_now_iso
from tests.helpers.lane_publisher import LanePublisher


def wait_for(cond, timeout=10.0, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = cond()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def test_lane_messages_are_validated_stored_and_resolutions_go_back(tmp_path, mosquitto, videos, classifier):
    store = Store(tmp_path / "console")
    with Ingest(store, mosquitto.host, mosquitto.port, client_id="console-test") as ingest, \
            LanePublisher(mosquitto.host, mosquitto.port, "lane1", videos / "box.mp4", classifier) as lane:
        assert ingest.connected.wait(10)
        wait_for(lambda: store.lanes() and store.lanes()[0]["available"] == "online", what="availability")
        lane.stats(camera_fps=29.9, inference_fps=12.5, outbox=0)
        item = lane.item(200)
        assert item.review      # an untrained model: always flagged
        lane.open(item)
        q = wait_for(lambda: store.queue(), what="the flagged item in the queue")
        assert q[0].id == item.id and q[0].record["top"][0]["label"] == item.label
        wait_for(lambda: store.picture(item.id), what="the picture")
        assert store.picture(item.id) == lane.jpeg(item)
        assert store.lanes()[0]["stats"]["camera_fps"] == 29.9
        assert store.lanes()[0]["current_event"] == item.id

        # malformed, oversized and foreign payloads are dropped and counted, never stored
        lane.raw(lane.topics.events, b"{not json")
        lane.raw(lane.topics.events, json.dumps({"type": "new", "id": "x", "seq": 1, "event": {"type": "item"}}))
        lane.raw(lane.topics.review(item.id), b"GIF89a")
        lane.raw(lane.topics.review(item.id), b"\xff\xd8\xff" + b"0" * (3 * 1024 * 1024))
        lane.raw("checkout_cam/lane2/review/lane1-20261201T150000Z-abcdef-000001", b"\xff\xd8\xff")
        lane.raw(lane.topics.available, b"maybe")
        lane.raw(lane.topics.stats, b"[1, 2]")
        c = wait_for(lambda: (lambda c: c if sum(v for k, v in c.items() if k.startswith("dropped")) >= 7 else None)(
            store.counters()), what="7 drops")
        assert c["dropped_events"] == 2 and c["dropped_review"] == 3 and c["dropped_available"] == 1
        assert len(store.queue()) == 1 and store.picture(item.id) == lane.jpeg(item)

        lane.end(item)
        wait_for(lambda: store.event(item.id)["state"] == "closed", what="the end")
        rec = ResolutionRecord.from_dict({
            "type": "resolution", "event_id": item.id, "lane_id": "lane1", "outcome": "correct",
            "label": "Oatly", "index": None, "resolver": "ann", "resolved_at": utc_now_iso(),
            "model_label": item.label, "console": "test"})
        store.add_resolution(rec, correction=None)
        ingest.publish(rec)
        got = lane.wait_resolutions(1)
        assert [r.event_id for r in got] == [item.id] and got[0].resolver == "ann" and got[0].label == "Oatly"
        wait_for(lambda: not store.unpublished(), what="the broker's ack")
    store.close()


def test_console_restart_and_broker_restart_lose_and_double_nothing(tmp_path, mosquitto, videos, classifier):
    data = tmp_path / "console"
    lane = LanePublisher(mosquitto.host, mosquitto.port, "lane2", videos / "cup.mp4", classifier)
    try:
        store = Store(data)
        ingest = Ingest(store, mosquitto.host, mosquitto.port, client_id="console-restart").start()
        assert ingest.connected.wait(10)
        first = lane.item(50)
        lane.open(first)
        wait_for(lambda: len(store.queue()) == 1, what="first item")
        ingest.stop()
        store.close()

        # the console is down: the broker queues for its persistent session
        second = lane.item(120)
        lane.open(second)
        lane.end(first)
        lane.open(first)    # a lane's outbox replaying after its own reconnect: a duplicate

        store = Store(data)
        ingest = Ingest(store, mosquitto.host, mosquitto.port, client_id="console-restart").start()
        wait_for(lambda: len(store.queue()) == 2 and store.event(first.id)["state"] == "closed",
                 what="what was sent while the console was down")
        assert [q.id for q in store.queue()] == [first.id, second.id]

        # a resolution made while the broker is away waits in the outbox and goes out on reconnect
        mosquitto.stop()
        wait_for(lambda: not ingest.connected.is_set(), what="the disconnect")
        rec = ResolutionRecord.from_dict({
            "type": "resolution", "event_id": second.id, "lane_id": "lane2", "outcome": "no_item",
            "label": None, "index": None, "resolver": "bob", "resolved_at": utc_now_iso()})
        store.add_resolution(rec, correction=None)
        ingest.publish(rec)
        assert [r.event_id for r in store.unpublished()] == [second.id]
        mosquitto.start()
        got = lane.wait_resolutions(1, timeout=40)
        assert [r.event_id for r in got] == [second.id]
        wait_for(lambda: not store.unpublished(), timeout=20, what="the ack after reconnect")
        time.sleep(0.5)
        assert len(lane.resolutions) == 1
        assert len(store.history()) == 1 and [q.id for q in store.queue()] == [first.id]
        ingest.stop()
        store.close()
    finally:
        lane.close()
