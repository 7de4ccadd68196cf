"""The store's events as they arrive on the broker, each once: what `checkout-cam events` prints.

Lanes publish at least once, so after a reconnect or a lane crash the same
envelope can arrive twice; it carries the same id, and this drops the second.
Every payload is validated with the schema before it is passed on.
"""

from __future__ import annotations

import json
import logging
import threading
from pathlib import Path
from typing import Callable

from checkout_cam.fleet.connection import BrokerSettings, connect_async, make_client, reason_text
from checkout_cam.fleet.topics import DEFAULT_PREFIX, parse, store_filter
from checkout_cam.schema import EventEnvelope, OutageRecord, SchemaError

logger = logging.getLogger(__name__)


def message_key(data: dict) -> str:
    """What makes two messages the same: an envelope's type and id; an outage's lane, run and start."""
    if data.get("type") in ("new", "end"):
        return f"{data['type']}:{data['id']}"
    if data.get("type") == "item":
        return f"end:{data['id']}"
    if data.get("type") == "outage":
        return f"outage:{data.get('lane_id')}:{data.get('run_id')}:{data.get('start')}"
    return json.dumps(data, sort_keys=True)


def keys_in_file(path: Path) -> set[str]:
    """Keys of the lines already in an output file, so appending to it never repeats one."""
    keys: set[str] = set()
    if path.exists():
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            try:
                keys.add(message_key(json.loads(line)))
            except (ValueError, KeyError, TypeError, AttributeError):
                continue
    return keys


class EventSubscriber:
    """Subscribes to ``<prefix>/<lane>/events`` and ``.../outage`` (``lane`` "+" = every lane).

    ``on_line(dict)`` gets each new message once, in arrival order: the envelope
    ``{"type": "new"|"end", ...}`` or the outage record; with ``log_lines`` only
    closed events, as the lane's JSON-lines log holds them (and outages).
    ``session``: a persistent session by that client id, so the broker keeps what
    arrives while this subscriber is away (QoS 1).
    """

    def __init__(self, settings: BrokerSettings, on_line: Callable[[dict], None], *, lane: str = "+",
                 prefix: str = DEFAULT_PREFIX, session: str | None = None, log_lines: bool = False,
                 seen: set[str] | None = None):
        self.settings, self.on_line, self.lane, self.prefix = settings, on_line, lane, prefix
        self.log_lines = log_lines
        self.seen: set[str] = set(seen or ())
        self.received = self.duplicates = self.malformed = 0
        self.connected = threading.Event()
        self.error: str | None = None
        self._lock = threading.Lock()
        self._persistent = session is not None
        import secrets
        self.client = make_client(settings, session or f"checkout_cam-events-{secrets.token_hex(4)}",
                                  persistent=self._persistent)
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.client.on_disconnect = lambda *a: self.connected.clear()

    def __enter__(self) -> "EventSubscriber":
        connect_async(self.client, self.settings, persistent=self._persistent)
        self.client.loop_start()
        return self

    def __exit__(self, *exc) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            self.error = f"broker {self.settings.address} refused the connection: {reason_text(reason_code)}"
            logger.error("%s", self.error)
            return
        client.subscribe([(store_filter("events", self.prefix, self.lane), 1),
                          (store_filter("outage", self.prefix, self.lane), 1)])
        self.error = None
        self.connected.set()

    def _on_message(self, client, userdata, msg) -> None:
        where = parse(msg.topic, self.prefix)
        try:
            data = json.loads(msg.payload.decode("utf-8"))
            if where is not None and where[1] == "outage":
                OutageRecord.from_dict(data)
            else:
                envelope = EventEnvelope.from_dict(data)
                if where is None or where[0] != envelope.event.lane_id:
                    raise SchemaError(f"envelope: lane {envelope.event.lane_id!r} on topic {msg.topic}")
        except (ValueError, UnicodeDecodeError) as exc:
            self.malformed += 1
            logger.warning("ignored a malformed message on %s: %s", msg.topic, exc)
            return
        if self.log_lines and data.get("type") == "new":
            return
        key = message_key(data)
        with self._lock:
            self.received += 1
            if key in self.seen:
                self.duplicates += 1
                return
            self.seen.add(key)
        line = data["event"] if self.log_lines and data.get("type") == "end" else data
        self.on_line(line)
