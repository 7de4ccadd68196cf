"""The lane on the store's MQTT broker: a sink that commits each message to the outbox, and the
thread that drains the outbox to the broker.

- The sink (``(frame, decision) -> None`` and ``close_event``) runs in the
  inference thread and only commits to SQLite: a broker that is down or slow
  never slows the lane. An outbox write that fails raises, so the pipeline
  counts a sink failure; a full outbox drops and counts instead (the event
  log still has everything).
- The drain thread publishes committed rows in order with QoS 1, at most
  ``WINDOW`` unacknowledged at a time, and deletes a row when its PUBACK comes
  (paho's ``mid`` -> row). paho retransmits in-flight messages itself on
  reconnect, in order; after a crash the next start sends every row left.
- ``available`` is ``online`` on connect, the retained Last Will ``offline``,
  ``stopped`` on a clean shutdown.
- The lane subscribes to its own ``resolution`` topic. A payload is acted on
  only when it is a valid ``ResolutionRecord`` for this lane and for an event
  id this lane produced (the outbox DB remembers them across restarts); then
  it is handed to ``on_resolution`` (serve writes it into the event log).
"""

from __future__ import annotations

import collections
import json
import logging
import math
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import paho.mqtt.client as mqtt

from checkout_cam.fleet.connection import BrokerSettings, connect_async, make_client, reason_text
from checkout_cam.fleet.outbox import Outbox
from checkout_cam.fleet.review_image import review_jpeg
from checkout_cam.fleet.topics import Topics
from checkout_cam.frames import Frame
from checkout_cam.review import Decision, ItemEvent
from checkout_cam.schema import EventEnvelope, ItemRecord, ResolutionRecord, SchemaError
from checkout_cam.stats import Percentiles

logger = logging.getLogger(__name__)

WINDOW = 200                 # outbox rows handed to paho and not yet acknowledged
PAHO_INFLIGHT = 20           # on the wire unacknowledged (mosquitto's default receive maximum)
MAX_RESOLUTION_BYTES = 64_000
WARN_INTERVAL_S = 60.0       # repeated connection problems: one line per this long


@dataclass(frozen=True)
class MqttStatus:
    """What /metrics, /readyz and the stats line show about the broker link."""

    broker: str
    state: str               # connected | connecting | disconnected | refused | stopped
    connected: bool
    outbox_depth: int
    outbox_bytes: int
    dropped: int             # refused by a full outbox
    acked: int               # acknowledged by the broker (this run)
    rejected: int            # acknowledged with an error reason (MQTT 5, e.g. not authorized)
    reconnects: int
    last_error: str | None
    outbox_write_ms_p95: float | None
    outbox_write_cpu_ms_p95: float | None
    resolutions_accepted: int
    resolutions_refused: int
    resolutions_malformed: int

    def to_dict(self) -> dict:
        return asdict(self)


class MqttPublisher:
    """A sink for serve, and a context manager owning the paho client and the drain thread."""

    name = "mqtt"

    def __init__(self, settings: BrokerSettings, *, lane_id: str, state_dir: str,
                 record_of: Callable[[ItemEvent], ItemRecord], prefix: str = "checkout_cam",
                 client_id: str = "", roi: Sequence[float] | None = None, review_images: bool = True,
                 review_max_px: int = 320, outbox_max_bytes: int = 200_000_000, shutdown_drain_s: float = 2.0,
                 on_resolution: Callable[[ResolutionRecord], None] | None = None, local_log: str = "the event log"):
        self.settings = settings
        self.topics = Topics(lane_id, prefix)
        self.lane_id = lane_id
        self.record_of = record_of
        self.roi = list(roi) if roi is not None else None
        self.review_images, self.review_max_px = review_images, review_max_px
        self.shutdown_drain_s = shutdown_drain_s
        self.on_resolution = on_resolution
        self.local_log = local_log
        self.client_id = client_id or f"checkout_cam-{lane_id}"
        self.outbox = Outbox(state_dir, max_bytes=outbox_max_bytes)
        self.write_ms = Percentiles(1000)   # the outbox commit of a closed event, as the lane pays it
        self.write_cpu_ms = Percentiles(1000)  # the same in this thread's CPU time (without waiting for a core)
        self._state = "connecting"
        self._connected = threading.Event()
        self._acks: collections.deque = collections.deque()   # (mid, failed) from paho's thread
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._closed = False
        self._last_error: str | None = None
        self._last_warn: dict[str, float] = {}
        self._reconnects = 0
        self._ever_connected = False
        self.acked = self.rejected = 0
        self.resolutions_accepted = self.resolutions_refused = self.resolutions_malformed = 0
        self._latest_resolutions: collections.OrderedDict[str, ResolutionRecord] = collections.OrderedDict()
        # Per item event: the sink's view (which open/close it already handled, the best frame so far).
        self._open_id: str | None = None
        self._open_index: int | None = None
        self._best: tuple[float, np.ndarray] | None = None
        self._review_sent: dict[str, float] = {}
        self._handled: collections.deque[str] = collections.deque(maxlen=64)
        self.client = make_client(settings, self.client_id, persistent=True)
        self.client.max_inflight_messages_set(PAHO_INFLIGHT)
        self.client.will_set(self.topics.available, "offline", qos=1, retain=True)
        self.client.on_connect = self._on_connect
        self.client.on_connect_fail = self._on_connect_fail
        self.client.on_disconnect = self._on_disconnect
        self.client.on_publish = self._on_publish
        self.client.on_message = self._on_message
        self.client.on_subscribe = self._on_subscribe

    # ------------------------------------------------------------ lifecycle

    def __enter__(self) -> "MqttPublisher":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def start(self) -> "MqttPublisher":
        if self._thread is None:
            connect_async(self.client, self.settings, persistent=True)
            self.client.loop_start()
            self._thread = threading.Thread(target=self._drain_loop, name="mqtt-outbox", daemon=True)
            self._thread.start()
            logger.info("MQTT: lane %s publishing to %s under %s/ (outbox %s, %d waiting)", self.lane_id,
                        self.settings.address, self.topics.base, self.outbox.path, self.outbox.depth)
        return self

    def close(self) -> None:
        """Drain for up to ``shutdown_drain_s``, say ``stopped``, disconnect. Idempotent."""
        if self._closed:
            return
        self._closed = True
        deadline = time.monotonic() + self.shutdown_drain_s
        while self._thread is not None and self.outbox.depth and self._connected.is_set() \
                and time.monotonic() < deadline:
            self._wake.set()
            time.sleep(0.02)
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(5.0)
            if self._thread.is_alive():
                logger.error("MQTT outbox thread did not stop within 5 s")
        if self._connected.is_set():
            info = self.client.publish(self.topics.available, "stopped", qos=1, retain=True)
            try:
                info.wait_for_publish(1.0)
            except (RuntimeError, ValueError):
                pass
        left = self.outbox.depth
        self._state = "stopped"
        try:
            self.client.disconnect()
        finally:
            self.client.loop_stop()
            self.outbox.close()
        if left:
            logger.warning("MQTT: %d message(s) not yet acknowledged stay in the outbox; they are sent at the "
                           "next start", left)

    # ------------------------------------------------------------ the sink

    def __call__(self, frame: Frame, decision: Decision | None) -> None:
        if decision is None:
            return
        if decision.closed is not None and self._first(decision.closed, "end"):
            self._publish_end(decision.closed)
        if decision.opened is not None and self._first(decision.opened, "new"):
            self._open_id, self._open_index = decision.opened.id, decision.opened.index
            self._best = None
            self._consider(frame, decision)
            self.publish_envelope("new", self.record_of(decision.opened), self._best_image()
                                  if decision.opened.review else None)
        elif self._open_id is not None and decision.item is not None:
            self._consider(frame, decision)

    def close_event(self, event: ItemEvent | None) -> None:
        if event is not None and self._first(event, "end"):
            self._publish_end(event)

    def _first(self, event: ItemEvent, kind: str) -> bool:
        key = f"{kind}:{event.id}"
        if key in self._handled:
            return False
        self._handled.append(key)
        return True

    def _consider(self, frame: Frame, decision: Decision) -> None:
        """Keep the frame where the open item's own label was most probable (its review picture)."""
        c = decision.result.classification
        if c is None or decision.empty or not self.review_images:
            return
        prob = next((float(p.prob) for p in c.top if p.index == self._open_index), None)
        if prob is not None and (self._best is None or prob > self._best[0]):
            self._best = (prob, frame.image)

    def _best_image(self) -> np.ndarray | None:
        return self._best[1] if self._best is not None else None

    def _publish_end(self, event: ItemEvent) -> None:
        image = None
        if event.review and event.id == self._open_id and self._best is not None:
            # A second picture only when a more confident frame came after the one sent at open.
            if self._review_sent.get(event.id) != self._best[0]:
                image = self._best[1]
        self.publish_envelope("end", self.record_of(event), image, timed=True)
        if event.id == self._open_id:
            self._open_id, self._open_index, self._best = None, None, None
        self._review_sent.pop(event.id, None)

    # ------------------------------------------------------------ what goes into the outbox

    def publish_envelope(self, kind: str, record: ItemRecord, image: np.ndarray | None = None, *,
                         timed: bool = False) -> None:
        """Commit one ``new``/``end`` envelope (and a flagged item's picture) to the outbox.
        ``timed``: add the envelope's serialisation and commit to ``write_ms`` (what closing an event costs
        the lane; the picture's JPEG encoding is not part of it)."""
        t0, c0 = time.perf_counter(), time.thread_time()
        envelope = EventEnvelope(kind, record.id, record.seq, record)
        payload = json.dumps(envelope.to_dict(), ensure_ascii=False, separators=(",", ":")).encode("utf-8")
        self._add(self.topics.events, payload, event_id=record.id, ended=kind == "end")
        if timed:
            self.write_ms.add((time.perf_counter() - t0) * 1000)
            self.write_cpu_ms.add((time.thread_time() - c0) * 1000)
        if image is not None and self.review_images:
            self._add(self.topics.review(record.id), review_jpeg(image, self.roi, max_px=self.review_max_px))
            if self._best is not None:
                self._review_sent[record.id] = self._best[0]

    def recover_from_log(self, log_path: str, tail_bytes: int = 2_000_000) -> int:
        """Publish closed events the event log holds but the outbox never got: the log is written first,
        so a lane killed between the two writes left such an event behind. Reads the log's tail."""
        path = Path(log_path)
        if not path.exists():
            return 0
        with open(path, "rb") as f:
            size = f.seek(0, 2)
            f.seek(max(0, size - tail_bytes))
            lines = f.read().splitlines()[1 if size > tail_bytes else 0:]
        recovered = 0
        for line in lines:
            try:
                data = json.loads(line)
                if not isinstance(data, dict) or data.get("type") != "item" or data.get("lane_id") != self.lane_id:
                    continue
                if self.outbox.ended_event(data["id"]):
                    continue
                self.publish_envelope("end", ItemRecord.from_dict(data))
                recovered += 1
            except (ValueError, KeyError, TypeError):
                continue   # a line cut by the crash, or not an item
        if recovered:
            logger.warning("MQTT: %d event(s) were in %s but not in the outbox (the lane stopped between the "
                           "two writes): queued now", recovered, path)
        return recovered

    def publish_record(self, kind: str, record) -> None:
        """Another schema record (``outage``) to its topic, through the outbox."""
        topic = getattr(self.topics, kind)
        self._add(topic, json.dumps(record.to_dict(), ensure_ascii=False, separators=(",", ":")))

    def publish_stats(self, stats: dict) -> None:
        """The stats line's figures, retained (a dashboard sees each lane's latest at once)."""
        self._add(self.topics.stats, json.dumps(_finite(stats), separators=(",", ":")), retain=True)

    def _add(self, topic: str, payload: bytes | str, *, retain: bool = False, event_id: str | None = None,
             ended: bool = False) -> None:
        self.outbox.add(topic, payload, qos=1, retain=retain, event_id=event_id, ended=ended)
        self._wake.set()

    # ------------------------------------------------------------ the drain thread

    def _drain_loop(self) -> None:
        inflight: dict[int, int] = {}   # paho mid -> outbox row
        last_row = 0
        pruned = time.monotonic()
        while True:
            self._apply_acks(inflight)
            if self._stop.is_set():
                break
            try:
                if self._connected.is_set() and len(inflight) < WINDOW:
                    for m in self.outbox.pending(last_row, WINDOW - len(inflight)):
                        info = self.client.publish(m.topic, m.payload, qos=m.qos, retain=m.retain)
                        if info.rc not in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_NO_CONN):
                            self._warn("publish", f"MQTT: publish to {m.topic} failed "
                                                  f"({mqtt.error_string(info.rc)}); retrying")
                            break
                        inflight[info.mid] = m.row
                        last_row = m.row
                if time.monotonic() - pruned > 3600:
                    pruned = time.monotonic()
                    self.outbox.prune()
            except Exception:   # this thread must outlive any one bad moment; the rows stay for later
                logger.exception("MQTT: the outbox thread failed; retrying in 1 s")
                self._stop.wait(1.0)
            self._wake.wait(0.5)
            self._wake.clear()

    def _apply_acks(self, inflight: dict[int, int]) -> None:
        rows = []
        while self._acks:
            mid, failed = self._acks.popleft()
            row = inflight.pop(mid, None)
            if row is not None:
                rows.append(row)
        if rows:
            try:
                self.outbox.ack(rows)
            except Exception:
                logger.exception("MQTT: deleting %d acknowledged message(s) from the outbox failed", len(rows))

    # ------------------------------------------------------------ paho callbacks (paho's thread)

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            self._state = "refused"
            self._last_error = f"broker {self.settings.address} refused the connection: {reason_text(reason_code)}"
            self._warn("refused", f"MQTT: {self._last_error}; the lane keeps running and logging events locally "
                                  f"to {self.local_log}, and keeps them in the outbox ({self.outbox.depth} "
                                  f"waiting) until the broker accepts it", level=logging.ERROR)
            return
        if self._ever_connected:
            self._reconnects += 1
        self._ever_connected = True
        self._state = "connected"
        self._last_warn.pop("lost", None)
        client.publish(self.topics.available, "online", qos=1, retain=True)
        client.subscribe(self.topics.resolution, qos=1)
        self._connected.set()
        self._wake.set()
        logger.info("MQTT: connected to %s as %s; %d message(s) in the outbox", self.settings.address,
                    self.client_id, self.outbox.depth)

    def _on_connect_fail(self, client, userdata) -> None:
        self._state = "disconnected" if self._state != "refused" else "refused"
        tls = (" (or TLS failed: check that mqtt.tls_ca signed the broker's certificate and that it names "
               f"{self.settings.host})") if self.settings.tls_ca else ""
        self._last_error = self._last_error if self._state == "refused" else \
            f"cannot reach the broker at {self.settings.address}{tls}"
        self._warn("unreachable", f"MQTT: cannot reach the broker at {self.settings.address}{tls}; retrying with backoff "
                                  f"(up to {self.settings.reconnect_max_s:g} s). The lane keeps running and "
                                  f"logging locally; events wait in the outbox ({self.outbox.depth})")

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        was = self._connected.is_set()
        self._connected.clear()
        if self._state in ("stopped",) or self._closed:
            return
        if self._state != "refused":
            self._state = "disconnected"
        if was:
            self._last_error = f"lost the broker at {self.settings.address}: {reason_text(reason_code)}"
            self._warn("lost", f"MQTT: {self._last_error}; reconnecting, events wait in the outbox")

    def _on_publish(self, client, userdata, mid, reason_code, properties) -> None:
        failed = bool(getattr(reason_code, "is_failure", False))
        if failed:
            self.rejected += 1
            self._warn("rejected", f"MQTT: the broker rejected a message ({reason_text(reason_code)}); it is "
                                   f"dropped from the outbox", level=logging.ERROR)
        else:
            self.acked += 1
        self._acks.append((mid, failed))
        self._wake.set()

    def _on_subscribe(self, client, userdata, mid, reason_codes, properties) -> None:
        for rc in reason_codes:
            if getattr(rc, "is_failure", False):
                self._warn("subscribe", f"MQTT: the broker refused the subscription to {self.topics.resolution} "
                                        f"({reason_text(rc)}): attendant resolutions will not reach this lane",
                           level=logging.ERROR)

    def _on_message(self, client, userdata, msg) -> None:
        try:
            self._resolution(msg.topic, msg.payload)
        except Exception:
            logger.exception("MQTT: handling a message on %s failed", msg.topic)

    def _resolution(self, topic: str, payload: bytes) -> None:
        if topic != self.topics.resolution:
            self.resolutions_malformed += 1
            self._warn("foreign", f"MQTT: ignored a message on {topic}: this lane only acts on "
                                  f"{self.topics.resolution}")
            return
        try:
            if len(payload) > MAX_RESOLUTION_BYTES:
                raise SchemaError(f"resolution: {len(payload)} bytes, more than {MAX_RESOLUTION_BYTES}")
            record = ResolutionRecord.from_dict(json.loads(payload.decode("utf-8")))
        except (ValueError, UnicodeDecodeError) as exc:  # SchemaError is a ValueError, and so is bad JSON
            self.resolutions_malformed += 1
            self._warn("malformed", f"MQTT: ignored a malformed resolution on {topic}: {exc}")
            return
        if record.lane_id != self.lane_id or not self.outbox.known_event(record.event_id):
            self.resolutions_refused += 1
            logger.warning("MQTT: refused a resolution for event %s (lane %s): this lane did not produce that "
                           "event", record.event_id, record.lane_id)
            return
        text = json.dumps(record.to_dict(), sort_keys=True)
        if self.outbox.has_resolution(record.event_id, text):
            logger.debug("resolution for %s received again; already logged", record.event_id)
            return
        if self.on_resolution is not None:
            self.on_resolution(record)   # logged first: kept only once it is in the event log
        self.outbox.remember_resolution(record.event_id, text)
        self.resolutions_accepted += 1
        self._latest_resolutions[record.event_id] = record
        self._latest_resolutions.move_to_end(record.event_id)
        while len(self._latest_resolutions) > 200:
            self._latest_resolutions.popitem(last=False)
        logger.info("resolution for %s: %s%s by %s", record.event_id, record.outcome,
                    f" ({record.label})" if record.label else "", record.resolver)

    def _warn(self, key: str, message: str, level: int = logging.WARNING) -> None:
        now = time.monotonic()
        if now - self._last_warn.get(key, -1e9) >= WARN_INTERVAL_S:
            self._last_warn[key] = now
            logger.log(level, "%s", message)

    # ------------------------------------------------------------ readers

    def status(self) -> MqttStatus:
        p95, cpu95 = self.write_ms.get(95), self.write_cpu_ms.get(95)
        return MqttStatus(broker=self.settings.address, state=self._state, connected=self._connected.is_set(),
                          outbox_depth=self.outbox.depth, outbox_bytes=self.outbox.bytes,
                          dropped=self.outbox.dropped, acked=self.acked, rejected=self.rejected,
                          reconnects=self._reconnects, last_error=self._last_error,
                          outbox_write_ms_p95=None if math.isnan(p95) else round(p95, 3),
                          outbox_write_cpu_ms_p95=None if math.isnan(cpu95) else round(cpu95, 3),
                          resolutions_accepted=self.resolutions_accepted,
                          resolutions_refused=self.resolutions_refused,
                          resolutions_malformed=self.resolutions_malformed)

    def stats_text(self) -> str:
        s = self.status()
        write = (f", outbox write p95 {s.outbox_write_ms_p95:.2f} ms ({s.outbox_write_cpu_ms_p95:.2f} ms CPU)"
                 if s.outbox_write_ms_p95 is not None else "")
        dropped = f" ({s.dropped} DROPPED: outbox full)" if s.dropped else ""
        return f"mqtt {s.state}, outbox {s.outbox_depth}{dropped}{write}"

    def resolution(self, event_id: str) -> ResolutionRecord | None:
        """The attendant's resolution of one of this lane's events (this run, or from the outbox DB)."""
        if event_id in self._latest_resolutions:
            return self._latest_resolutions[event_id]
        for eid, text in self.outbox.resolutions(limit=MAX_RESOLUTION_LOOKUP):
            if eid == event_id:
                return ResolutionRecord.from_dict(json.loads(text))
        return None

    def latest_resolutions(self, limit: int = 20) -> list[ResolutionRecord]:
        """The newest accepted resolutions first (for an overlay's "resolved by attendant")."""
        return [ResolutionRecord.from_dict(json.loads(t)) for _, t in self.outbox.resolutions(limit)]

    def wait_connected(self, timeout: float) -> bool:
        return self._connected.wait(timeout)

    def wait_drained(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while self.outbox.depth and time.monotonic() < deadline:
            time.sleep(0.02)
        return self.outbox.depth == 0


MAX_RESOLUTION_LOOKUP = 1000


def _finite(value):
    """JSON has no NaN: a figure not measured yet is null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def publisher_for_serve(cfg, *, record_of: Callable[[ItemEvent], ItemRecord],
                        on_resolution: Callable[[ResolutionRecord], None] | None = None) -> MqttPublisher | None:
    """The publisher serve wires in when ``mqtt.host`` is set (None when it is not)."""
    m = cfg.mqtt
    if not m.host:
        return None
    publisher = MqttPublisher(BrokerSettings.from_config(m), lane_id=cfg.serve.lane_id, state_dir=m.state_dir,
                         record_of=record_of, prefix=m.topic_prefix, client_id=m.client_id,
                         roi=cfg.preprocess.roi, review_images=m.review_images, review_max_px=m.review_max_px,
                         outbox_max_bytes=int(m.outbox_max_mb * 1e6), shutdown_drain_s=m.shutdown_drain_s,
                         on_resolution=on_resolution, local_log=cfg.serve.log_path)
    publisher.recover_from_log(cfg.serve.log_path)
    return publisher
