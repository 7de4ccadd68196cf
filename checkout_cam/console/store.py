"""The console's state on disk: one SQLite file under the data folder.

What it holds, and why on disk: the lanes (availability and since when, the
last stats, the item on the counter), every item event (one row per event id,
so a redelivered or replayed MQTT message never makes a second row), the
pictures the lanes sent for flagged items (the review requests), the
resolutions (one per event: a second answer for the same item is refused),
the users and their sessions, and counters of dropped messages. A restarted
console finds all of it; what happened while it was down arrives from the
broker (retained availability, the persistent session's queued messages) and
merges in by event id.

Resolutions are also the console's outbox: a row stays ``published_at IS
NULL`` until the broker acknowledged it (QoS 1), and is sent again after a
reconnect or a restart.

One connection shared by the MQTT thread and the web server's threads,
serialized by a lock: the console writes a few rows a second at most, and one
writer is what SQLite wants anyway. WAL journal with synchronous=FULL: a
committed resolution survives a crash or a power cut.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Iterable

from checkout_cam.schema import ItemRecord, ResolutionRecord, utc_now_iso

logger = logging.getLogger(__name__)

DB_FILE = "console.db"
SCHEMA = """
CREATE TABLE IF NOT EXISTS lanes (
    lane_id TEXT PRIMARY KEY,
    available TEXT, available_since TEXT,
    stats TEXT, stats_at TEXT,
    current_event TEXT,
    last_seen TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS events (
    id TEXT PRIMARY KEY,
    lane_id TEXT NOT NULL, run_id TEXT NOT NULL, seq INTEGER NOT NULL,
    state TEXT NOT NULL,                -- open | closed
    review INTEGER NOT NULL,            -- the lane asks a person to look
    label TEXT NOT NULL,
    record TEXT NOT NULL,               -- the latest schema.ItemRecord as JSON
    received_at TEXT NOT NULL,          -- when this console first heard of it (UTC)
    closed_at TEXT
);
CREATE INDEX IF NOT EXISTS events_queue ON events (review, received_at);
CREATE INDEX IF NOT EXISTS events_lane ON events (lane_id, received_at);
CREATE TABLE IF NOT EXISTS pictures (
    event_id TEXT PRIMARY KEY,
    lane_id TEXT NOT NULL,
    jpeg BLOB NOT NULL,
    received_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS resolutions (
    event_id TEXT PRIMARY KEY,
    lane_id TEXT NOT NULL,
    outcome TEXT NOT NULL,
    label TEXT, label_index INTEGER,
    resolver TEXT NOT NULL,
    resolved_at TEXT NOT NULL,
    model_label TEXT,
    waited_s REAL,                      -- from the console first hearing of it to the answer
    correction TEXT,                    -- the saved training photo, relative to the data folder
    record TEXT NOT NULL,               -- the schema.ResolutionRecord sent to the lane
    published_at TEXT                   -- NULL until the broker acknowledged it
);
CREATE INDEX IF NOT EXISTS resolutions_time ON resolutions (resolved_at);
CREATE TABLE IF NOT EXISTS users (
    name TEXT PRIMARY KEY,
    role TEXT NOT NULL,
    password TEXT NOT NULL,             -- console.users hash string (scrypt, salted)
    created_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS sessions (
    token_hash TEXT PRIMARY KEY,
    user TEXT NOT NULL REFERENCES users(name) ON DELETE CASCADE,
    csrf TEXT NOT NULL,
    created_at TEXT NOT NULL,
    expires_at REAL NOT NULL            -- time.time()
);
CREATE TABLE IF NOT EXISTS counters (
    name TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
"""


class StoreError(Exception):
    pass


class AlreadyResolved(StoreError):
    pass


class UnknownEvent(StoreError):
    pass


@dataclass(frozen=True)
class QueueItem:
    id: str
    lane_id: str
    state: str
    record: dict
    received_at: str
    has_picture: bool
    picture_at: str | None = None


def _parse_iso(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        dt = datetime.fromisoformat(text)
    except ValueError:
        return None
    return dt if dt.tzinfo else dt.replace(tzinfo=timezone.utc)


def seconds_between(a: str | None, b: str | None) -> float | None:
    da, db = _parse_iso(a), _parse_iso(b)
    if da is None or db is None:
        return None
    return (db - da).total_seconds()


class Store:
    """The console's SQLite state. Thread-safe; a context manager that closes the file."""

    def __init__(self, data_dir: str | Path):
        self.dir = Path(data_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.path = self.dir / DB_FILE
        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)
        self._version = 0
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=10)
        self._db.row_factory = sqlite3.Row
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute("PRAGMA foreign_keys=ON")
            self._db.executescript(SCHEMA)

    # ------------------------------------------------------------ plumbing

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _tx(self, statements: Iterable[tuple[str, tuple]]) -> None:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                for sql, params in statements:
                    self._db.execute(sql, params)
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def _one(self, sql: str, params: tuple = ()) -> sqlite3.Row | None:
        with self._lock:
            return self._db.execute(sql, params).fetchone()

    def _all(self, sql: str, params: tuple = ()) -> list[sqlite3.Row]:
        with self._lock:
            return self._db.execute(sql, params).fetchall()

    def _bump(self) -> None:
        with self._changed:
            self._version += 1
            self._changed.notify_all()

    @property
    def version(self) -> int:
        """Goes up on every change the page shows; the page's live updates wait on it."""
        return self._version

    def wait_change(self, version: int, timeout: float) -> int:
        with self._changed:
            self._changed.wait_for(lambda: self._version != version, timeout=timeout)
            return self._version

    # ------------------------------------------------------------ counters

    def count(self, name: str, n: int = 1) -> None:
        self._tx([("INSERT INTO counters (name, value) VALUES (?, ?) "
                   "ON CONFLICT(name) DO UPDATE SET value = value + excluded.value", (name, n))])

    def counters(self) -> dict[str, int]:
        return {r["name"]: r["value"] for r in self._all("SELECT name, value FROM counters ORDER BY name")}

    # ------------------------------------------------------------ lanes

    def _touch_lane(self, lane_id: str, now: str) -> tuple[str, tuple]:
        return ("INSERT INTO lanes (lane_id, last_seen) VALUES (?, ?) "
                "ON CONFLICT(lane_id) DO UPDATE SET last_seen = excluded.last_seen", (lane_id, now))

    def set_available(self, lane_id: str, state: str, now: str | None = None) -> None:
        now = now or utc_now_iso()
        row = self._one("SELECT available FROM lanes WHERE lane_id = ?", (lane_id,))
        stmts = [self._touch_lane(lane_id, now)]
        if row is None or row["available"] != state:
            stmts.append(("UPDATE lanes SET available = ?, available_since = ? WHERE lane_id = ?",
                          (state, now, lane_id)))
        self._tx(stmts)
        self._bump()

    def set_stats(self, lane_id: str, stats: dict, now: str | None = None) -> None:
        now = now or utc_now_iso()
        self._tx([self._touch_lane(lane_id, now),
                  ("UPDATE lanes SET stats = ?, stats_at = ? WHERE lane_id = ?",
                   (json.dumps(stats), now, lane_id))])
        self._bump()

    def lanes(self) -> list[dict]:
        rows = self._all("SELECT l.*, e.label AS current_label, e.review AS current_review "
                         "FROM lanes l LEFT JOIN events e ON e.id = l.current_event ORDER BY l.lane_id")
        out = []
        for r in rows:
            out.append({"lane_id": r["lane_id"], "available": r["available"] or "unknown",
                        "available_since": r["available_since"],
                        "stats": json.loads(r["stats"]) if r["stats"] else None, "stats_at": r["stats_at"],
                        "current_event": r["current_event"], "current_label": r["current_label"],
                        "current_review": bool(r["current_review"]) if r["current_review"] is not None else None,
                        "last_seen": r["last_seen"]})
        return out

    # ------------------------------------------------------------ events

    def add_event(self, kind: str, record: ItemRecord, now: str | None = None) -> bool:
        """Merge one ``new``/``end`` envelope by event id; True when it changed anything.

        A repeated message changes nothing; an ``end`` replaces the ``new``; a ``new`` that arrives
        after its ``end`` (a redelivery) is ignored, so an event never goes back to open.
        """
        now = now or utc_now_iso()
        state = "closed" if kind == "end" else "open"
        data = json.dumps(record.to_dict(), sort_keys=True)
        with self._lock:
            row = self._one("SELECT state, record FROM events WHERE id = ?", (record.id,))
            if row is not None and ((row["record"] == data and row["state"] == state)
                                    or (row["state"] == "closed" and state == "open")):
                return False
            lane = self._one("SELECT current_event FROM lanes WHERE lane_id = ?", (record.lane_id,))
            stmts = [self._touch_lane(record.lane_id, now)]
            if row is None:
                stmts.append(("INSERT INTO events (id, lane_id, run_id, seq, state, review, label, record, "
                              "received_at, closed_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                              (record.id, record.lane_id, record.run_id, record.seq, state, int(record.review),
                               record.label, data, now, now if state == "closed" else None)))
            else:
                stmts.append(("UPDATE events SET state = ?, review = ?, label = ?, record = ?, "
                              "closed_at = COALESCE(closed_at, ?) WHERE id = ?",
                              (state, int(record.review), record.label, data,
                               now if state == "closed" else None, record.id)))
            if state == "open":
                stmts.append(("UPDATE lanes SET current_event = ? WHERE lane_id = ?", (record.id, record.lane_id)))
            elif lane is not None and lane["current_event"] == record.id:
                stmts.append(("UPDATE lanes SET current_event = NULL WHERE lane_id = ?", (record.lane_id,)))
            self._tx(stmts)
        self._bump()
        return True

    def event(self, event_id: str) -> dict | None:
        row = self._one("SELECT * FROM events WHERE id = ?", (event_id,))
        if row is None:
            return None
        return {"id": row["id"], "lane_id": row["lane_id"], "state": row["state"], "review": bool(row["review"]),
                "record": json.loads(row["record"]), "received_at": row["received_at"]}

    def add_picture(self, lane_id: str, event_id: str, jpeg: bytes, now: str | None = None) -> None:
        now = now or utc_now_iso()
        self._tx([self._touch_lane(lane_id, now),
                  ("INSERT INTO pictures (event_id, lane_id, jpeg, received_at) VALUES (?, ?, ?, ?) "
                   "ON CONFLICT(event_id) DO UPDATE SET jpeg = excluded.jpeg, received_at = excluded.received_at",
                   (event_id, lane_id, jpeg, now))])
        self._bump()

    def picture(self, event_id: str) -> bytes | None:
        row = self._one("SELECT jpeg FROM pictures WHERE event_id = ?", (event_id,))
        return bytes(row["jpeg"]) if row else None

    def queue(self, limit: int = 200) -> list[QueueItem]:
        """Flagged items nobody has answered yet, across lanes, oldest first."""
        rows = self._all(
            "SELECT e.id, e.lane_id, e.state, e.record, e.received_at, p.event_id IS NOT NULL AS has_picture, "
            "p.received_at AS picture_at "
            "FROM events e LEFT JOIN resolutions r ON r.event_id = e.id "
            "LEFT JOIN pictures p ON p.event_id = e.id "
            "WHERE e.review = 1 AND r.event_id IS NULL ORDER BY e.received_at, e.id LIMIT ?", (limit,))
        return [QueueItem(r["id"], r["lane_id"], r["state"], json.loads(r["record"]), r["received_at"],
                          bool(r["has_picture"]), r["picture_at"]) for r in rows]

    def queue_length(self) -> int:
        row = self._one("SELECT COUNT(*) AS n FROM events e LEFT JOIN resolutions r ON r.event_id = e.id "
                        "WHERE e.review = 1 AND r.event_id IS NULL")
        return int(row["n"])

    def known_labels(self, limit: int = 5000) -> list[str]:
        """Every label the lanes' models have put in a Top-k, for the Correct search box."""
        labels: set[str] = set()
        for r in self._all("SELECT record FROM events ORDER BY received_at DESC LIMIT ?", (limit,)):
            for p in json.loads(r["record"]).get("top", []):
                if isinstance(p, dict) and isinstance(p.get("label"), str):
                    labels.add(p["label"])
        return sorted(labels)

    # ------------------------------------------------------------ resolutions

    def add_resolution(self, record: ResolutionRecord, *, correction: str | None) -> dict:
        """Store an answer (the outbox row the publisher sends). Raises UnknownEvent / AlreadyResolved."""
        with self._lock:
            event = self._one("SELECT lane_id, received_at FROM events WHERE id = ?", (record.event_id,))
            if event is None:
                raise UnknownEvent(record.event_id)
            if event["lane_id"] != record.lane_id:
                raise UnknownEvent(f"{record.event_id} is not an event of lane {record.lane_id}")
            if self._one("SELECT 1 FROM resolutions WHERE event_id = ?", (record.event_id,)):
                raise AlreadyResolved(record.event_id)
            waited = seconds_between(event["received_at"], record.resolved_at)
            self._tx([("INSERT INTO resolutions (event_id, lane_id, outcome, label, label_index, resolver, "
                       "resolved_at, model_label, waited_s, correction, record) "
                       "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                       (record.event_id, record.lane_id, record.outcome, record.label, record.index,
                        record.resolver, record.resolved_at, record.model_label, waited, correction,
                        json.dumps(record.to_dict(), sort_keys=True)))])
        self._bump()
        return {"event_id": record.event_id, "waited_s": waited}

    def unpublished(self) -> list[ResolutionRecord]:
        rows = self._all("SELECT record FROM resolutions WHERE published_at IS NULL ORDER BY resolved_at")
        return [ResolutionRecord.from_dict(json.loads(r["record"])) for r in rows]

    def mark_published(self, event_id: str, now: str | None = None) -> None:
        self._tx([("UPDATE resolutions SET published_at = ? WHERE event_id = ? AND published_at IS NULL",
                   (now or utc_now_iso(), event_id))])
        self._bump()

    def history(self, *, lane: str | None = None, outcome: str | None = None, since: str | None = None,
                until: str | None = None, limit: int = 1000) -> list[dict]:
        """Resolved items, newest first, with the event they answer."""
        where, params = [], []
        if lane:
            where.append("r.lane_id = ?")
            params.append(lane)
        if outcome:
            where.append("r.outcome = ?")
            params.append(outcome)
        if since:
            where.append("r.resolved_at >= ?")
            params.append(since)
        if until:
            where.append("r.resolved_at < ?")
            params.append(until)
        sql = ("SELECT r.*, e.record AS event_record, e.received_at FROM resolutions r "
               "LEFT JOIN events e ON e.id = r.event_id"
               + (" WHERE " + " AND ".join(where) if where else "")
               + " ORDER BY r.resolved_at DESC, r.event_id LIMIT ?")
        out = []
        for r in self._all(sql, (*params, limit)):
            event = json.loads(r["event_record"]) if r["event_record"] else {}
            top = event.get("top") or []
            out.append({"event_id": r["event_id"], "lane_id": r["lane_id"], "outcome": r["outcome"],
                        "label": r["label"], "index": r["label_index"], "resolver": r["resolver"],
                        "resolved_at": r["resolved_at"], "model_label": r["model_label"],
                        "model_confidence": top[0].get("prob") if top else None,
                        "review_reasons": event.get("review_reasons", []),
                        "flagged_at": r["received_at"], "waited_s": r["waited_s"],
                        "correction": r["correction"], "published": r["published_at"] is not None})
        return out

    # ------------------------------------------------------------ users and sessions

    def add_user(self, name: str, role: str, password_hash: str) -> bool:
        """Create or replace a user; True when it is new. A replaced user's sessions end."""
        with self._lock:
            exists = self._one("SELECT 1 FROM users WHERE name = ?", (name,)) is not None
            self._tx([("INSERT INTO users (name, role, password, created_at) VALUES (?, ?, ?, ?) "
                       "ON CONFLICT(name) DO UPDATE SET role = excluded.role, password = excluded.password",
                       (name, role, password_hash, utc_now_iso())),
                      ("DELETE FROM sessions WHERE user = ?", (name,))])
        return not exists

    def remove_user(self, name: str) -> bool:
        with self._lock:
            exists = self._one("SELECT 1 FROM users WHERE name = ?", (name,)) is not None
            self._tx([("DELETE FROM sessions WHERE user = ?", (name,)), ("DELETE FROM users WHERE name = ?", (name,))])
        return exists

    def user(self, name: str) -> dict | None:
        row = self._one("SELECT name, role, password FROM users WHERE name = ?", (name,))
        return dict(row) if row else None

    def users(self) -> list[dict]:
        return [dict(r) for r in self._all("SELECT name, role, created_at FROM users ORDER BY name")]

    def add_session(self, token_hash: str, user: str, csrf: str, ttl_s: float) -> None:
        self._tx([("DELETE FROM sessions WHERE expires_at < ?", (time.time(),)),
                  ("INSERT INTO sessions (token_hash, user, csrf, created_at, expires_at) VALUES (?, ?, ?, ?, ?)",
                   (token_hash, user, csrf, utc_now_iso(), time.time() + ttl_s))])

    def session(self, token_hash: str) -> dict | None:
        row = self._one("SELECT s.user, s.csrf, s.expires_at, u.role FROM sessions s JOIN users u ON u.name = s.user "
                        "WHERE s.token_hash = ?", (token_hash,))
        if row is None or row["expires_at"] < time.time():
            return None
        return {"user": row["user"], "csrf": row["csrf"], "role": row["role"]}

    def end_session(self, token_hash: str) -> None:
        self._tx([("DELETE FROM sessions WHERE token_hash = ?", (token_hash,))])

    # ------------------------------------------------------------ housekeeping

    def prune(self, keep_days: float, now: datetime | None = None) -> dict[str, int]:
        """Forget unflagged events and the pictures of answered items older than ``keep_days``.

        Flagged events and resolutions are the audit trail and stay; a resolved item's photo stays
        under corrections/ when it was saved there.
        """
        cutoff = ((now or datetime.now(timezone.utc)) - timedelta(days=keep_days)).isoformat(timespec="milliseconds")
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                events = self._db.execute("DELETE FROM events WHERE review = 0 AND received_at < ? AND id NOT IN "
                                          "(SELECT current_event FROM lanes WHERE current_event IS NOT NULL)",
                                          (cutoff,)).rowcount
                pictures = self._db.execute("DELETE FROM pictures WHERE received_at < ? AND event_id IN "
                                            "(SELECT event_id FROM resolutions)", (cutoff,)).rowcount
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")
        return {"events": events, "pictures": pictures}
