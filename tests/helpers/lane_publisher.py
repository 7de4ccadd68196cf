"""A lane's MQTT side for console tests: real schema envelopes and JPEGs from real video frames.

It speaks exactly the contract of ``checkout_cam/fleet/topics.py`` and
``checkout_cam/schema.py`` (retained ``available`` with an ``offline`` Last
Will, ``review/<event_id>`` JPEG, ``events`` ``new``/``end`` envelopes,
``stats``), with item events made by ``ItemEvent.record`` from the model's
Top-3 on a frame of box.mp4 or cup.mp4. It also listens on its lane's
``resolution`` topic and keeps what it receives, validated, so a test can
check what the console told the lane.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import cv2
import paho.mqtt.client as mqtt

from checkout_cam.fleet.topics import Topics
from checkout_cam.preprocess import crop_roi
from checkout_cam.review import LOW_CONFIDENCE, LOW_MARGIN, UNTRAINED, ItemEvent
from checkout_cam.schema import EventEnvelope, ResolutionRecord, RunIdentity, SchemaError


def read_frame(video: Path, index: int):
    """Frame ``index`` of the video (wrapping around at its end)."""
    cap = cv2.VideoCapture(str(video))
    try:
        count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) or 1
        cap.set(cv2.CAP_PROP_POS_FRAMES, index % count)
        ok, frame = cap.read()
    finally:
        cap.release()
    if not ok:
        raise RuntimeError(f"cannot read frame {index} of {video}")
    return frame


class LanePublisher:
    def __init__(self, host: str, port: int, lane_id: str, video: Path, classifier, *, roi=None,
                 username: str | None = None, password: str | None = None):
        self.lane_id = lane_id
        self.video = Path(video)
        self.classifier = classifier
        self.roi = roi
        self.identity = RunIdentity(lane_id)
        self.topics = Topics(lane_id)
        self.resolutions: list[ResolutionRecord] = []
        self.refused: list[str] = []
        self.published_at: dict[str, float] = {}     # event id -> time.time() of its `new`
        self._got = threading.Condition()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"test-lane-{lane_id}",
                                  clean_session=False)
        self.client.will_set(self.topics.available, "offline", qos=1, retain=True)
        if username:
            self.client.username_pw_set(username, password)
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self._connected = threading.Event()
        self.client.connect(host, port, keepalive=10)
        self.client.loop_start()
        if not self._connected.wait(10):
            raise RuntimeError(f"test lane {lane_id} could not connect to {host}:{port}")

    def _on_connect(self, client, userdata, flags, reason_code, properties):
        client.subscribe(self.topics.resolution, qos=1)
        client.publish(self.topics.available, "online", qos=1, retain=True)
        self._connected.set()

    def _on_message(self, client, userdata, msg):
        try:
            record = ResolutionRecord.from_dict(json.loads(msg.payload))
        except (ValueError, SchemaError) as exc:
            self.refused.append(str(exc))
            return
        with self._got:
            self.resolutions.append(record)
            self._got.notify_all()

    def wait_resolutions(self, n: int, timeout: float = 10.0) -> list[ResolutionRecord]:
        with self._got:
            self._got.wait_for(lambda: len(self.resolutions) >= n, timeout)
            return list(self.resolutions)

    def item(self, frame_index: int, *, closed: bool = False) -> ItemEvent:
        """An item event with the model's real Top-3 on that frame; flagged the way the lane would."""
        frame = read_frame(self.video, frame_index)
        top = self.classifier.classify([frame], k=3)[0].top
        reasons = []
        if top[0].prob < 0.6:
            reasons.append(LOW_CONFIDENCE)
        if top[0].prob - top[1].prob < 0.15:
            reasons.append(LOW_MARGIN)
        if not self.classifier.trained:
            reasons.append(UNTRAINED)
        ident, seq = self.identity.next_event()
        t = time.monotonic()
        self._frames = getattr(self, "_frames", {})
        self._frames[ident] = frame
        return ItemEvent(label=top[0].label, index=top[0].index, confidence=top[0].prob, top=top,
                         review=bool(reasons), review_reasons=tuple(reasons), frame_start=frame_index,
                         frame_end=frame_index + 10, t_start=t, t_end=t + 0.3, results=5, id=ident, seq=seq,
                         closed_by="empty" if closed else None)

    def record(self, event: ItemEvent):
        return event.record(identity=self.identity, source=str(self.video), model=self.classifier.info(),
                            policy={"min_confidence": 0.6, "min_margin": 0.15},
                            wall_clock_offset=time.time() - time.monotonic())

    def jpeg(self, event: ItemEvent) -> bytes:
        ok, buf = cv2.imencode(".jpg", crop_roi(self._frames[event.id], self.roi), [cv2.IMWRITE_JPEG_QUALITY, 85])
        assert ok
        return buf.tobytes()

    def open(self, event: ItemEvent, *, picture: bool = True, picture_first: bool = False) -> str:
        """Publish the ``new`` envelope and then the review picture, as a lane does when a flagged item
        opens (``picture_first``: the other way round, which a console must handle too)."""
        if picture and event.review and picture_first:
            self.client.publish(self.topics.review(event.id), self.jpeg(event), qos=1).wait_for_publish(5)
        rec = self.record(event)
        self.published_at[event.id] = time.time()
        env = EventEnvelope("new", event.id, event.seq, rec)
        self.client.publish(self.topics.events, json.dumps(env.to_dict()), qos=1).wait_for_publish(5)
        if picture and event.review and not picture_first:
            self.client.publish(self.topics.review(event.id), self.jpeg(event), qos=1).wait_for_publish(5)
        return event.id

    def end(self, event: ItemEvent) -> None:
        rec = self.record(event)
        env = EventEnvelope("end", event.id, event.seq, rec)
        self.client.publish(self.topics.events, json.dumps(env.to_dict()), qos=1).wait_for_publish(5)

    def stats(self, **figures) -> None:
        self.client.publish(self.topics.stats, json.dumps(figures), qos=1, retain=True).wait_for_publish(5)

    def raw(self, topic: str, payload: bytes | str) -> None:
        self.client.publish(topic, payload, qos=1).wait_for_publish(5)

    def close(self, *, stopped: bool = True) -> None:
        if stopped:
            self.client.publish(self.topics.available, "stopped", qos=1, retain=True).wait_for_publish(5)
        self.client.disconnect()
        self.client.loop_stop()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
