"""The console's MQTT side: subscribe to every lane, validate into the store, publish resolutions.

One paho client (2.x) with a fixed client id and a persistent session
(``clean_session=False``): while the console is down the broker queues the
lanes' QoS 1 messages for it, and a restarted console receives them and merges
them by event id (the store ignores what it already has). The lanes'
``available`` is retained, so the lane grid is right at once after a restart.
paho reconnects by itself (1 s doubling to 30 s) after a broker restart; on
every (re)connect the console subscribes again and sends the resolutions the
broker has not acknowledged yet.

Every payload is size-checked and validated with the schema's readers before
anything is stored; one that fails is dropped, counted (``dropped_<kind>``,
shown on the page) and logged, never stored.
"""

from __future__ import annotations

import json
import logging
import socket
import threading
import time

import paho.mqtt.client as mqtt

from checkout_cam.console.store import Store
from checkout_cam.fleet.topics import DEFAULT_PREFIX, Topics, parse, store_filter
from checkout_cam.schema import EVENT_ID_RE, EventEnvelope, ResolutionRecord, SchemaError, check_lane_id

logger = logging.getLogger(__name__)

AVAILABLE_STATES = ("online", "offline", "stopped")
# Bytes. An event line is ~1 KB, a review JPEG of the scanning area some tens of KB.
MAX_PAYLOAD = {"events": 64 * 1024, "review": 2 * 1024 * 1024, "stats": 16 * 1024, "available": 64,
               "outage": 16 * 1024}
SUBSCRIBED = ("available", "events", "review", "stats", "outage")
JPEG_MAGIC = b"\xff\xd8\xff"
# A resolution sent but not acknowledged for this long is sent again (paho normally resends by itself).
INFLIGHT_RETRY_S = 60.0


class Ingest:
    """Subscriber and resolution publisher; a context manager (start on enter, stop on exit)."""

    def __init__(self, store: Store, host: str, port: int = 1883, *, client_id: str | None = None,
                 prefix: str = DEFAULT_PREFIX, username: str | None = None, password: str | None = None,
                 keepalive: int = 30):
        self.store = store
        self.host, self.port = host, port
        self.prefix = prefix
        self.client_id = client_id or f"checkout-cam-console-{socket.gethostname()}"
        self.connected = threading.Event()
        self._inflight: dict[int, tuple[str, float]] = {}   # paho message id -> (event id, sent at)
        self._acked_early: set[int] = set()
        self._sending: set[str] = set()
        self._lock = threading.Lock()
        self._log_times: dict[str, float] = {}
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=self.client_id,
                                  clean_session=False, reconnect_on_failure=True)
        if username:
            self.client.username_pw_set(username, password)
        self.client.reconnect_delay_set(1, 30)
        self.client.max_inflight_messages_set(100)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = self._on_message
        self.client.on_publish = self._on_publish
        self.client.on_subscribe = self._on_subscribe
        self._keepalive = keepalive
        self._started = False

    # ------------------------------------------------------------ lifecycle

    def start(self) -> "Ingest":
        # connect_async: the console starts (and serves its page from disk) with the broker away.
        self.client.connect_async(self.host, self.port, keepalive=self._keepalive)
        self.client.loop_start()
        self._started = True
        return self

    def stop(self) -> None:
        if not self._started:
            return
        self._started = False
        try:
            self.client.disconnect()
        finally:
            self.client.loop_stop()

    def __enter__(self) -> "Ingest":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # ------------------------------------------------------------ callbacks (paho's network thread)

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            logger.warning("MQTT broker %s:%s refused the console: %s (check --mqtt-username and its password; "
                           "retrying)", self.host, self.port, reason_code)
            return
        logger.info("connected to MQTT broker %s:%s as %s", self.host, self.port, self.client_id)
        client.subscribe([(store_filter(kind, self.prefix), 1) for kind in SUBSCRIBED])

    def _on_subscribe(self, client, userdata, mid, reason_codes, properties) -> None:
        refused = [str(rc) for rc in reason_codes if rc.is_failure]
        if refused:
            logger.error("the MQTT broker refused the console's subscriptions (%s): check its ACL",
                         ", ".join(refused))
            return
        # connected = subscribed: from now on nothing a lane sends is missed
        self.connected.set()
        self.store.count("mqtt_connects")
        self.flush()

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        # paho resends its unacknowledged QoS 1 messages itself after the reconnect: _inflight is kept,
        # so flush() does not send a second copy.
        self.connected.clear()
        if reason_code != 0:
            logger.warning("lost the MQTT broker %s:%s (%s); reconnecting", self.host, self.port, reason_code)

    def _on_publish(self, client, userdata, mid, reason_code, properties) -> None:
        with self._lock:
            event_id, _ = self._inflight.pop(mid, (None, 0.0))
            if event_id is None:
                self._acked_early.add(mid)   # the ack beat _publish's bookkeeping
        if event_id is not None and not reason_code.is_failure:
            self.store.mark_published(event_id)

    def _on_message(self, client, userdata, msg) -> None:
        try:
            self.handle(msg.topic, msg.payload)
        except Exception:   # a bug here must not kill paho's thread and with it every lane
            logger.exception("console could not handle a message on %s", msg.topic)
            self.store.count("errors")

    # ------------------------------------------------------------ messages

    def _drop(self, kind: str, topic: str, why: str) -> None:
        self.store.count(f"dropped_{kind}")
        now = time.monotonic()
        if now - self._log_times.get(kind, -1e9) > 10:   # a flood of bad messages logs once per 10 s
            self._log_times[kind] = now
            logger.warning("dropped a message on %s: %s", topic, why)

    def handle(self, topic: str, payload: bytes) -> bool:
        """Validate and store one message; False when it was dropped."""
        parsed = parse(topic, self.prefix)
        if parsed is None:
            self._drop("unknown", topic, "not a checkout_cam topic")
            return False
        lane_id, kind, event_id = parsed
        try:
            check_lane_id(lane_id)
        except SchemaError as exc:
            self._drop(kind, topic, str(exc))
            return False
        limit = MAX_PAYLOAD.get(kind)
        if limit is None:
            return False
        if len(payload) > limit:
            self._drop(kind, topic, f"{len(payload)} bytes, more than the {limit} allowed")
            return False
        if kind == "review":
            if not EVENT_ID_RE.match(event_id or "") or not event_id.startswith(lane_id + "-"):
                self._drop(kind, topic, "the topic does not end in an event id of this lane")
                return False
            if not payload.startswith(JPEG_MAGIC):
                self._drop(kind, topic, "not a JPEG")
                return False
            self.store.add_picture(lane_id, event_id, bytes(payload))
            return True
        if kind == "available":
            state = payload.decode("ascii", errors="replace").strip()
            if state not in AVAILABLE_STATES:
                self._drop(kind, topic, f"availability {state[:20]!r} is not one of {', '.join(AVAILABLE_STATES)}")
                return False
            self.store.set_available(lane_id, state)
            return True
        try:
            data = json.loads(payload)
        except (ValueError, UnicodeDecodeError) as exc:
            self._drop(kind, topic, f"not JSON: {exc}")
            return False
        if kind == "events":
            try:
                envelope = EventEnvelope.from_dict(data)
            except SchemaError as exc:
                self._drop(kind, topic, str(exc))
                return False
            if envelope.event.lane_id != lane_id:
                self._drop(kind, topic, f"event of lane {envelope.event.lane_id!r} on lane {lane_id!r}'s topic")
                return False
            self.store.add_event(envelope.type, envelope.event)
            return True
        if kind == "stats":
            if not isinstance(data, dict):
                self._drop(kind, topic, "stats must be a JSON object")
                return False
            self.store.set_stats(lane_id, data)
            return True
        if kind == "outage":
            self.store.count("outages")
            return True
        return False

    # ------------------------------------------------------------ resolutions out

    def flush(self) -> int:
        """Send every resolution the broker has not acknowledged yet (QoS 1); returns how many went out."""
        if not self.connected.is_set():
            return 0
        return sum(self._publish(record) for record in self.store.unpublished())

    def publish(self, record: ResolutionRecord) -> None:
        """Send one stored resolution now if connected; otherwise it waits in the store's outbox."""
        if self.connected.is_set():
            self._publish(record)

    def _publish(self, record: ResolutionRecord) -> bool:
        topic = Topics(record.lane_id, self.prefix).resolution
        with self._lock:   # one copy in flight per resolution, whoever calls (web, flush, reconnect)
            now = time.monotonic()
            if record.event_id in self._sending or any(
                    e == record.event_id and now - t < INFLIGHT_RETRY_S for e, t in self._inflight.values()):
                return False
            self._sending.add(record.event_id)
        try:
            # Not under self._lock: paho calls on_publish holding its own lock, which publish() takes too.
            info = self.client.publish(topic, json.dumps(record.to_dict()), qos=1)
            if info.rc != mqtt.MQTT_ERR_SUCCESS:
                logger.warning("could not send the resolution of %s now (%s); it is kept and sent on reconnect",
                               record.event_id, mqtt.error_string(info.rc))
                return False
            with self._lock:
                early = info.mid in self._acked_early
                self._acked_early.discard(info.mid)
                if not early:
                    self._inflight[info.mid] = (record.event_id, time.monotonic())
        finally:
            with self._lock:
                self._sending.discard(record.event_id)
        if early:
            self.store.mark_published(record.event_id)
        return True
