"""The console under the broker's documented ACL (docs/mqtt/acl.conf): with its credentials it reads the
lanes and answers them; with a wrong password the broker refuses it, and it says so."""

from __future__ import annotations

import logging
import time

from checkout_cam.console.ingest import Ingest
from checkout_cam.console.store import Store
from checkout_cam.schema import ResolutionRecord, utc_now_iso
from tests.conftest import REPO
from tests.helpers.lane_publisher import LanePublisher
from tests.helpers.mosquitto import Broker

PASSWORDS = {"console": "console-pass", "lane1": "lane1-pass"}


def test_console_with_credentials_under_the_acl_and_without(tmp_path, videos, classifier, caplog):
    acl = (REPO / "docs" / "mqtt" / "acl.conf").read_text()
    with Broker(tmp_path, passwords=PASSWORDS, acl=acl) as broker, Store(tmp_path / "console") as store:
        with Ingest(store, broker.host, broker.port, client_id="console-acl", username="console",
                    password="console-pass") as ingest, \
                LanePublisher(broker.host, broker.port, "lane1", videos / "box.mp4", classifier,
                              username="lane1", password="lane1-pass") as lane:
            assert ingest.connected.wait(10)
            item = lane.item(200)
            lane.open(item)
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and not (store.queue() and store.picture(item.id)):
                time.sleep(0.05)
            assert [q.id for q in store.queue()] == [item.id] and store.picture(item.id) == lane.jpeg(item)
            rec = ResolutionRecord.from_dict({
                "type": "resolution", "event_id": item.id, "lane_id": "lane1", "outcome": "accept",
                "label": item.label, "index": item.index, "resolver": "ann", "resolved_at": utc_now_iso()})
            store.add_resolution(rec, correction=None)
            ingest.publish(rec)
            assert [r.event_id for r in lane.wait_resolutions(1)] == [item.id]

        caplog.set_level(logging.WARNING, logger="checkout_cam.console.ingest")
        with Ingest(store, broker.host, broker.port, client_id="console-wrong", username="console",
                    password="not-it") as wrong:
            assert not wrong.connected.wait(3)
        assert "refused the console" in caplog.text
