"""The durable outbox: every MQTT message is committed here before it is published.

One SQLite file in the lane's state directory (``outbox.sqlite3``), WAL mode,
standard library only. Why SQLite: a commit is atomic and survives SIGKILL
(the WAL is in the OS page cache the moment ``commit`` returns), rows come back
in insertion order by their integer key, and a months-long service needs no
compaction code of its own. ``synchronous=NORMAL`` is the same durability as the
JSON-lines event log (flushed, not fsynced per line): a process crash loses
nothing; a power cut may lose the last commits, which the log also would.

Rows are deleted only when the broker acknowledges them (QoS 1 PUBACK), so a
lane restarted after a crash sends again what was not acknowledged
(at-least-once; the consumer drops duplicates by event id).

The same file remembers the lane's own event ids (so a resolution for an event
this lane never produced is refused, across restarts) and the resolutions it
accepted (the "resolved by attendant" reader).
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from checkout_cam.errors import CheckoutCamError

logger = logging.getLogger(__name__)

FILENAME = "outbox.sqlite3"
# Remembered event ids: enough for months of one lane (an item every few seconds, 12 h a day is ~15k a day).
MAX_EVENT_IDS = 1_000_000
MAX_RESOLUTIONS = 10_000
# When full, one loud line per this many seconds (the counter says how many since).
FULL_LOG_INTERVAL_S = 30.0

_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    topic TEXT NOT NULL,
    payload BLOB NOT NULL,
    qos INTEGER NOT NULL,
    retain INTEGER NOT NULL,
    created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS event_ids (
    id TEXT PRIMARY KEY,
    created REAL NOT NULL,
    ended INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS resolutions (
    event_id TEXT PRIMARY KEY,
    record TEXT NOT NULL,
    received REAL NOT NULL
);
"""
_REMEMBER = ("INSERT INTO event_ids (id, created, ended) VALUES (?, ?, ?) "
             "ON CONFLICT(id) DO UPDATE SET ended = MAX(ended, excluded.ended)")


@dataclass(frozen=True)
class Message:
    row: int
    topic: str
    payload: bytes
    qos: int
    retain: bool
    created: float   # time.time() when committed


class Outbox:
    """Thread-safe: the inference thread adds, the publisher thread reads and acknowledges."""

    def __init__(self, state_dir: str | Path, *, max_bytes: int = 200_000_000):
        self.dir = Path(state_dir)
        self.path = self.dir / FILENAME
        self.max_bytes = int(max_bytes)
        self.dropped = 0          # messages refused because the outbox was full
        self.added = 0
        self.acked = 0
        self._last_full_log = -1e9
        self._lock = threading.Lock()
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=10)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(_SCHEMA)
            self._depth, self._bytes = self._db.execute(
                "SELECT COUNT(*), COALESCE(SUM(LENGTH(payload)), 0) FROM outbox").fetchone()
        except (OSError, sqlite3.Error) as exc:
            raise CheckoutCamError(f"cannot open the MQTT outbox {self.path}: {exc}; choose a writable "
                                   f"directory (mqtt.state_dir in config.yaml)") from None
        if self._depth:
            logger.info("outbox %s holds %d unacknowledged message(s) from before; they go first",
                        self.path, self._depth)

    def __enter__(self) -> "Outbox":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None

    # ------------------------------------------------------------ adding

    def add(self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False,
            event_id: str | None = None, ended: bool = False) -> int | None:
        """Commit one message (and remember ``event_id`` as this lane's, ``ended``: its closed event was
        handed over); its row, or None when full."""
        if isinstance(payload, str):
            payload = payload.encode("utf-8")
        now = time.time()
        with self._lock:
            if self._db is None:
                raise CheckoutCamError(f"outbox {self.path} is closed; message for {topic} not kept")
            if self._bytes + len(payload) > self.max_bytes:
                self.dropped += 1
                if event_id is not None:  # still this lane's event: a resolution for it must be accepted
                    self._db.execute(_REMEMBER, (event_id, now, int(ended)))
                self._log_full(topic)
                return None
            db = self._db
            db.execute("BEGIN IMMEDIATE")
            try:
                row = db.execute("INSERT INTO outbox (topic, payload, qos, retain, created) VALUES (?, ?, ?, ?, ?)",
                                 (topic, payload, qos, int(retain), now)).lastrowid
                if event_id is not None:
                    db.execute(_REMEMBER, (event_id, now, int(ended)))
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
            self._depth += 1
            self._bytes += len(payload)
            self.added += 1
            return row

    def _log_full(self, topic: str) -> None:
        now = time.monotonic()
        if now - self._last_full_log >= FULL_LOG_INTERVAL_S:
            self._last_full_log = now
            logger.error("MQTT OUTBOX FULL (%s: %d messages, %.1f MB of mqtt.outbox_max_mb %.1f): message for %s "
                         "DROPPED (%d dropped so far); the event log still has every event. Is the broker "
                         "reachable?", self.path, self._depth, self._bytes / 1e6, self.max_bytes / 1e6, topic,
                         self.dropped)

    # ------------------------------------------------------------ draining

    def pending(self, after_row: int = 0, limit: int = 100) -> list[Message]:
        """Messages not yet acknowledged, oldest first, after ``after_row``."""
        with self._lock:
            if self._db is None:
                return []
            rows = self._db.execute("SELECT id, topic, payload, qos, retain, created FROM outbox WHERE id > ? "
                                    "ORDER BY id LIMIT ?", (after_row, limit)).fetchall()
        return [Message(r[0], r[1], bytes(r[2]), r[3], bool(r[4]), r[5]) for r in rows]

    def ack(self, rows: list[int]) -> int:
        """Delete acknowledged messages; how many were deleted."""
        if not rows:
            return 0
        with self._lock:
            if self._db is None:
                return 0
            db = self._db
            db.execute("BEGIN IMMEDIATE")
            try:
                gone = 0
                for i in range(0, len(rows), 500):
                    chunk = rows[i:i + 500]
                    marks = ",".join("?" * len(chunk))
                    size = db.execute(f"SELECT COUNT(*), COALESCE(SUM(LENGTH(payload)), 0) FROM outbox "
                                      f"WHERE id IN ({marks})", chunk).fetchone()
                    db.execute(f"DELETE FROM outbox WHERE id IN ({marks})", chunk)
                    gone += size[0]
                    self._bytes -= size[1]
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
            self._depth -= gone
            self.acked += gone
            return gone

    @property
    def depth(self) -> int:
        return self._depth

    @property
    def bytes(self) -> int:
        return self._bytes

    # ------------------------------------------------------------ the lane's event ids, resolutions

    def known_event(self, event_id: str) -> bool:
        with self._lock:
            if self._db is None:
                return False
            return self._db.execute("SELECT 1 FROM event_ids WHERE id = ?", (event_id,)).fetchone() is not None

    def has_resolution(self, event_id: str, record_json: str) -> bool:
        """This very resolution was kept already (a redelivery)."""
        with self._lock:
            if self._db is None:
                return False
            old = self._db.execute("SELECT record FROM resolutions WHERE event_id = ?", (event_id,)).fetchone()
            return old is not None and old[0] == record_json

    def ended_event(self, event_id: str) -> bool:
        """The closed event was committed (or dropped by a full outbox) already."""
        with self._lock:
            if self._db is None:
                return False
            row = self._db.execute("SELECT ended FROM event_ids WHERE id = ?", (event_id,)).fetchone()
            return row is not None and bool(row[0])

    def remember_resolution(self, event_id: str, record_json: str) -> bool:
        """Keep an accepted resolution; False when the same one was already kept (a redelivery)."""
        if self.has_resolution(event_id, record_json):
            return False
        with self._lock:
            if self._db is None:
                return False
            self._db.execute("INSERT OR REPLACE INTO resolutions VALUES (?, ?, ?)", (event_id, record_json, time.time()))
            return True

    def resolutions(self, limit: int = 50) -> list[tuple[str, str]]:
        """(event_id, record JSON) of the latest accepted resolutions, newest first."""
        with self._lock:
            if self._db is None:
                return []
            return self._db.execute("SELECT event_id, record FROM resolutions ORDER BY received DESC LIMIT ?",
                                    (limit,)).fetchall()

    def prune(self) -> None:
        """Forget the oldest event ids and resolutions past their bounds (called now and then)."""
        with self._lock:
            if self._db is None:
                return
            self._db.execute("DELETE FROM event_ids WHERE id IN (SELECT id FROM event_ids ORDER BY created DESC "
                             "LIMIT -1 OFFSET ?)", (MAX_EVENT_IDS,))
            self._db.execute("DELETE FROM resolutions WHERE event_id IN (SELECT event_id FROM resolutions "
                             "ORDER BY received DESC LIMIT -1 OFFSET ?)", (MAX_RESOLUTIONS,))
