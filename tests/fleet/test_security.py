"""Broker passwords and the documented ACL, on a real Mosquitto."""

import json
import re
import time

import paho.mqtt.client as mqtt

from checkout_cam.fleet.connection import BrokerSettings
from checkout_cam.fleet.publisher import MqttPublisher
from checkout_cam.fleet.subscriber import EventSubscriber
from checkout_cam.fleet.topics import Topics
from checkout_cam.schema import RunIdentity
from tests.conftest import REPO
from tests.fleet.conftest import drive_items
from tests.fleet.lanes import Consumer, Lane
from tests.fleet.test_publisher import _log, _resolution
from tests.helpers.mosquitto import Broker

ACL = (REPO / "docs" / "mqtt" / "acl.conf").read_text()
PASSWORDS = {"laneA": "pw-a", "laneB": "pw-b", "store-it": "pw-it", "console": "pw-console"}


def test_a_wrong_password_is_a_clear_error_and_the_lane_keeps_logging(tmp_path, random_artifact, lane_video):
    secret = tmp_path / "laneA.pw"
    secret.write_text("not-the-password\n")
    it_secret = tmp_path / "it.pw"
    it_secret.write_text("pw-it\n")
    with Broker(tmp_path, passwords=PASSWORDS) as broker:
        consumer = Consumer(tmp_path, broker.port, extra=["--username", "store-it", "--password-file", str(it_secret)])
        extra = f"  username: laneA\n  password_file: {secret}\n"
        lane = Lane(tmp_path, "laneA", lane_video, random_artifact, broker.port, extra=extra).start()
        try:
            assert lane.err.wait_for("refused the connection", timeout=60), lane.text[-3000:]
            assert lane.wait_items(1, timeout=60), lane.text[-3000:]   # still classifying and logging
            assert lane.err.wait_for("mqtt refused, outbox", timeout=10), lane.text[-3000:]
            assert lane.proc.poll() is None
            assert lane.stop() == 0
            text = lane.text
            assert "Not authorized" in text or "Bad user name or password" in text
            assert "mqtt.password" in text and "keeps running and logging events locally" in text
            logged = lane.items()
            assert consumer.lines() == []
            # the right password: what waited in the lane's outbox arrives
            with MqttPublisher(_settings(broker, "laneA"), lane_id="laneA", state_dir=str(lane.dir / "state"),
                               record_of=lambda e: e) as again:
                assert again.wait_drained(20), again.status()
            assert consumer.wait_lines(len(logged), timeout=20)
        finally:
            lane.close()
            consumer.stop()
    assert consumer.lines() == logged


def _settings(broker, user, protocol="3.1.1"):
    return BrokerSettings(host=broker.host, port=broker.port, protocol=protocol, username=user,
                          password=PASSWORDS[user], reconnect_min_s=0.2, reconnect_max_s=1.0)


def test_under_the_documented_acl_each_lane_writes_only_its_own_topics(tmp_path):
    identity = RunIdentity("laneA")
    got, accepted = [], []
    with Broker(tmp_path, passwords=PASSWORDS, acl=ACL) as broker, _log(tmp_path, identity) as log, \
            EventSubscriber(_settings(broker, "store-it"), got.append, log_lines=True) as it:
        assert it.connected.wait(10)
        console = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="console")
        console.username_pw_set("console", PASSWORDS["console"])
        console.connect(broker.host, broker.port)
        console.loop_start()
        # MQTT 5, so the broker says when it refuses a message (3.1.1 drops it silently)
        pub = MqttPublisher(_settings(broker, "laneA", "5"), lane_id="laneA", state_dir=str(tmp_path / "state"),
                            record_of=log.record, on_resolution=accepted.append)
        try:
            with pub:
                assert pub.wait_connected(10)
                drive_items([log, pub], [(1, [0.9, 0.9]), (2, [0.8, 0.9])], identity=identity)
                assert pub.wait_drained(10)
                first = json.loads((tmp_path / "events.jsonl").read_text().splitlines()[0])["id"]
                time.sleep(0.3)
                console.publish(Topics("laneA").resolution, json.dumps(_resolution(first, lane="laneA")),
                                qos=1).wait_for_publish(5)
                # lane A pretending to be lane B: refused by the ACL, never delivered
                pub.outbox.add(Topics("laneB").events, b'{"forged": true}')
                pub._wake.set()
                deadline = time.monotonic() + 10
                while (not accepted or pub.status().rejected < 1) and time.monotonic() < deadline:
                    time.sleep(0.05)
                status = pub.status()
                assert status.rejected == 1 and status.outbox_depth == 0
                assert [r.event_id for r in accepted] == [first]
                deadline = time.monotonic() + 10
                while len(got) < 2 and time.monotonic() < deadline:
                    time.sleep(0.05)
        finally:
            console.disconnect()
            console.loop_stop()
    logged = [json.loads(line) for line in (tmp_path / "events.jsonl").read_text().splitlines()]
    assert got == [line for line in logged if line["type"] == "item"] and len(got) == 2
    assert it.malformed == 0  # the forged message never reached store IT
    assert re.search(r"Denied PUBLISH from checkout_cam-laneA .*'checkout_cam/laneB/events'", broker.log_text())


def test_tls_to_the_broker_checks_its_certificate(tmp_path):
    from tests.fleet.conftest import Collector
    from tests.helpers.mosquitto import free_port
    from tests.helpers.tls import make_ca_and_server_cert
    pki = make_ca_and_server_cert(tmp_path / "pki")
    stranger = make_ca_and_server_cert(tmp_path / "other", name="other-ca")["ca"]
    tls_port = free_port()
    extra = (f"listener {tls_port} 127.0.0.1\ncafile {pki['ca']}\ncertfile {pki['cert']}\n"
             f"keyfile {pki['key']}\n")
    identity = RunIdentity("laneT")
    with Broker(tmp_path, extra=extra) as broker, _log(tmp_path, identity) as log:
        sub = Collector(broker, "checkout_cam/laneT/events")   # the plain listener, inside the store
        try:
            tls = BrokerSettings(host="127.0.0.1", port=tls_port, tls_ca=str(pki["ca"]), reconnect_min_s=0.2,
                                 reconnect_max_s=1.0)
            with MqttPublisher(tls, lane_id="laneT", state_dir=str(tmp_path / "state"), record_of=log.record,
                               review_images=False) as pub:
                assert pub.wait_connected(10), pub.status()
                assert pub.status().broker.endswith("(TLS)")
                drive_items([log, pub], [(1, [0.9, 0.9])], identity=identity)
                assert pub.wait_drained(10)
            assert sub.wait_for(lambda: len(sub.on("checkout_cam/laneT/events")) == 2)
            # a broker whose certificate our CA did not sign is never talked to
            wrong = BrokerSettings(host="127.0.0.1", port=tls_port, tls_ca=str(stranger), reconnect_min_s=0.2,
                                   reconnect_max_s=1.0)
            with MqttPublisher(wrong, lane_id="laneT", state_dir=str(tmp_path / "state2"), record_of=log.record,
                               review_images=False, shutdown_drain_s=0) as pub:
                assert not pub.wait_connected(3)
                assert pub.status().state == "disconnected" and "cannot reach" in pub.status().last_error
        finally:
            sub.close()
