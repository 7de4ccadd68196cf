"""The documented store-to-head-office bridge (docs/mqtt/store-bridge.conf) between two real brokers."""

import json
import re
import time

from checkout_cam.fleet.publisher import MqttPublisher
from checkout_cam.fleet.subscriber import EventSubscriber
from checkout_cam.schema import RunIdentity
from tests.conftest import REPO
from tests.fleet.conftest import Collector, drive_items, settings_for
from tests.fleet.test_publisher import _log
from tests.helpers.mosquitto import Broker


def test_a_lane_on_the_store_broker_reaches_the_head_office_broker(tmp_path):
    bridge = (REPO / "docs" / "mqtt" / "store-bridge.conf").read_text()
    assert re.search(r"^topic checkout_cam/# out 1$", bridge, re.M)
    identity = RunIdentity("lane7")
    got = []
    with Broker(tmp_path, name="head-office") as central:
        conf = re.sub(r"^address .*$", f"address 127.0.0.1:{central.port}", bridge, flags=re.M)
        with Broker(tmp_path, name="store", extra=conf) as store:
            deadline = time.monotonic() + 20
            while " as store-0042 " not in central.log_text() and time.monotonic() < deadline:
                time.sleep(0.1)
            with EventSubscriber(settings_for(central), got.append, log_lines=True) as office, \
                    _log(tmp_path, identity) as log, \
                    MqttPublisher(settings_for(store), lane_id="lane7", state_dir=str(tmp_path / "state"),
                                  record_of=log.record) as pub:
                assert office.connected.wait(10) and pub.wait_connected(10)
                time.sleep(0.5)  # the bridge's subscription on the central side
                drive_items([log, pub], [(1, [0.9, 0.9]), (2, [0.9, 0.9]), (3, [0.9, 0.9])], identity=identity)
                assert pub.wait_drained(10)
                deadline = time.monotonic() + 15
                while len(got) < 3 and time.monotonic() < deadline:
                    time.sleep(0.05)
            available = Collector(central, "checkout_cam/lane7/available")
            try:
                assert available.wait_for(lambda: available.on("checkout_cam/lane7/available") == [b"stopped"])
            finally:
                available.close()
    logged = [json.loads(line) for line in (tmp_path / "events.jsonl").read_text().splitlines()]
    assert got == logged and len(got) == 3
