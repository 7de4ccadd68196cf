"""A real Mosquitto broker per test (Debian's `mosquitto`, which .ci/run installs), and synthetic items."""

from __future__ import annotations

import threading
import time

import numpy as np
import paho.mqtt.client as mqtt
import pytest

from checkout_cam.config import ReviewConfig
from checkout_cam.fleet.connection import BrokerSettings
from checkout_cam.frames import Frame
from checkout_cam.results import Classification, InferenceResult, Prediction
from checkout_cam.review import ReviewPolicy
from checkout_cam.schema import RunIdentity
from tests.helpers.mosquitto import Broker

LABELS = ["empty", "apple", "milk", "juice"]


@pytest.fixture
def broker(tmp_path):
    with Broker(tmp_path) as b:
        yield b


def settings_for(b: Broker, **kw) -> BrokerSettings:
    return BrokerSettings(host=b.host, port=b.port, reconnect_min_s=0.2, reconnect_max_s=1.0, **kw)


class Collector:
    """A plain paho subscriber that keeps (topic, payload, retain) of everything it gets."""

    def __init__(self, b: Broker, topic: str = "checkout_cam/#", **auth):
        self.messages: list[tuple[str, bytes, bool]] = []
        self._lock = threading.Lock()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"collector-{id(self)}")
        if auth:
            self.client.username_pw_set(auth["username"], auth["password"])
        self.client.on_message = lambda c, u, m: self._keep(m)
        self.subscribed = threading.Event()
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe(topic, qos=1)
        self.client.on_subscribe = lambda *a: self.subscribed.set()
        self.client.connect(b.host, b.port)
        self.client.loop_start()
        assert self.subscribed.wait(10)

    def _keep(self, m) -> None:
        with self._lock:
            self.messages.append((m.topic, bytes(m.payload), bool(m.retain)))

    def on(self, topic: str) -> list[bytes]:
        with self._lock:
            return [p for t, p, _ in self.messages if t == topic]

    def wait_for(self, predicate, timeout: float = 15.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return True
            time.sleep(0.05)
        return predicate()

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def _frame(i: int, value: int) -> Frame:
    image = np.full((120, 160, 3), value, np.uint8)
    if value:
        image[30:90, 40:120] = (value, 255 - value, 128)  # a 'product' in the scanning area
    return Frame(image, frame_id=i, timestamp=time.monotonic(), source="synthetic", video_time=i / 30)


def _result(frame: Frame, index: int | None, prob: float) -> InferenceResult:
    if index is None:
        c = Classification((Prediction(0, LABELS[0], 0.9), Prediction(1, LABELS[1], 0.05)))
    else:
        other = 2 if index != 2 else 3
        c = Classification((Prediction(index, LABELS[index], prob), Prediction(other, LABELS[other], 1 - prob)))
    return InferenceResult(frame_id=frame.frame_id, timestamp=frame.timestamp, video_time=frame.video_time,
                           classification=c, inference_ms=1.0, done=time.monotonic())


def drive_items(sinks, items: list[tuple[int, list[float]]], *, lane_id: str = "lane1", trained: bool = False,
                identity: RunIdentity | None = None) -> ReviewPolicy:
    """Feed a real ReviewPolicy: per item (label index, its per-frame probabilities) between empty scenes,
    calling every sink once per result like the pipeline does."""
    identity = identity or RunIdentity(lane_id)
    policy = ReviewPolicy(ReviewConfig(stable_results=2, empty_results=2, smoothing_window=1), trained=trained,
                          labels=LABELS, identity=identity)
    # The empty lane is known (as a lane that ran a while has learned it), so items start at once.
    policy.set_background(_frame(0, 0).image)
    i = 0

    def step(value, index, prob):
        nonlocal i
        frame = _frame(i, value)
        decision = policy.update(frame, _result(frame, index, prob))
        for sink in sinks:
            sink(frame, decision)
        i += 1

    for _ in range(3):
        step(0, None, 0.9)
    for n, (index, probs) in enumerate(items):
        for prob in probs:
            step(60 + 40 * (n % 4), index, prob)
        for _ in range(3):
            step(0, None, 0.9)
    return policy
