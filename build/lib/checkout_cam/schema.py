"""The messages every layer speaks, declared once with their types.

The JSON-lines event log, MQTT, the HTTP API and the attendant console all
write and read these shapes; a consumer validates what it receives with
``from_dict`` (a payload it did not expect raises ``SchemaError`` naming the
field) before it acts on it.

- ``ItemRecord``: one item event (``type: "item"``), the event-log line.
- ``OutageRecord``: the camera was away (``type: "outage"``).
- ``ResolutionRecord``: an attendant's answer about a flagged item
  (``type: "resolution"``), referencing the item event by id.
- ``EventEnvelope``: how an item travels on MQTT, Frigate-like:
  ``{"type": "new"|"end", "id", "seq", "event": ItemRecord}``.

Identity: every run of a lane (a process start) gets a ``run_id`` that sorts
by its UTC start time; every item event of the run gets a sequence number
``seq`` (1, 2, ...) and an ``id`` ``<lane_id>-<run_id>-<seq>`` that is unique
across lanes and restarts. Per-lane order is (``run_id``, ``seq``).
"""

from __future__ import annotations

import math
import re
import secrets
import threading
from dataclasses import MISSING, asdict, dataclass, field, fields
from datetime import datetime, timezone
from typing import Any, ClassVar

SCHEMA_VERSION = 1

# Lane ids appear in MQTT topics, file names and event ids: keep them to safe characters.
LANE_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
RUN_ID_RE = re.compile(r"^\d{8}T\d{6}Z-[0-9a-f]{6}$")
EVENT_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}-\d{8}T\d{6}Z-[0-9a-f]{6}-\d{6,}$")

OUTCOMES = ("accept", "correct", "no_item")


class SchemaError(ValueError):
    """A message that does not have the declared shape; the message names the field."""


def utc_now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def new_run_id(now: datetime | None = None) -> str:
    """``20261201T153012Z-3f9a0c``: sorts by start time; the random tail keeps two starts in
    one second apart."""
    now = now or datetime.now(timezone.utc)
    return now.strftime("%Y%m%dT%H%M%SZ") + "-" + secrets.token_hex(3)


def check_lane_id(lane_id: str) -> str:
    if not isinstance(lane_id, str) or not LANE_ID_RE.match(lane_id):
        raise SchemaError(f"lane_id must be 1-64 characters of letters, digits, '_', '.', '-' "
                          f"(starting with a letter or digit), got {lane_id!r}")
    return lane_id


class RunIdentity:
    """The lane and run every record of this process carries, and the event counter."""

    def __init__(self, lane_id: str = "lane1", run_id: str | None = None):
        self.lane_id = check_lane_id(lane_id)
        self.run_id = run_id or new_run_id()
        self._seq = 0
        self._lock = threading.Lock()

    def next_event(self) -> tuple[str, int]:
        """(id, seq) for the next item event of this run."""
        with self._lock:
            self._seq += 1
            seq = self._seq
        return self.event_id(seq), seq

    def event_id(self, seq: int) -> str:
        return f"{self.lane_id}-{self.run_id}-{seq:06d}"

    def as_dict(self) -> dict:
        return {"lane_id": self.lane_id, "run_id": self.run_id}


# ---------------------------------------------------------------- validation


def _check(name: str, value: Any, kind: Any, *, optional: bool = False) -> Any:
    if value is None and optional:
        return None
    ok = {
        "str": isinstance(value, str),
        "int": isinstance(value, int) and not isinstance(value, bool),
        "num": isinstance(value, (int, float)) and not isinstance(value, bool)
               and math.isfinite(float(value)),
        "bool": isinstance(value, bool),
        "dict": isinstance(value, dict),
        "list": isinstance(value, list),
        "time": isinstance(value, str) or (isinstance(value, (int, float)) and not isinstance(value, bool)
                                           and math.isfinite(float(value))),
    }[kind]
    if not ok:
        raise SchemaError(f"{name}: expected {kind}{' or null' if optional else ''}, got {value!r:.80}")
    return value


class _Record:
    """Shared from_dict/to_dict for the flat records below."""

    TYPE: ClassVar[str] = ""
    KINDS: ClassVar[dict[str, tuple[str, bool]]] = {}   # field -> (kind, optional)

    @classmethod
    def from_dict(cls, data: Any):
        if not isinstance(data, dict):
            raise SchemaError(f"{cls.TYPE or cls.__name__}: expected a JSON object, got {type(data).__name__}")
        if data.get("type") != cls.TYPE:
            raise SchemaError(f"type: expected {cls.TYPE!r}, got {data.get('type')!r:.40}")
        known = {f.name for f in fields(cls)}
        values = {}
        for f in fields(cls):
            if f.name not in data:
                if f.default is MISSING and f.default_factory is MISSING:  # type: ignore[misc]
                    raise SchemaError(f"{cls.TYPE}.{f.name}: missing")
                continue
            kind, optional = cls.KINDS.get(f.name, ("str", False))
            values[f.name] = _check(f"{cls.TYPE}.{f.name}", data[f.name], kind, optional=optional)
        record = cls(**values)
        record.extra = {k: v for k, v in data.items() if k not in known and k != "type"}
        record.validate()
        return record

    def validate(self) -> None:
        pass

    def to_dict(self) -> dict:
        out = {"type": self.TYPE}
        out.update(asdict(self))
        out.update(getattr(self, "extra", {}) or {})
        return out


@dataclass
class ItemRecord(_Record):
    """One item event: the event-log line, the ``event`` of an MQTT envelope, an API object."""

    TYPE: ClassVar[str] = "item"
    KINDS: ClassVar[dict[str, tuple[str, bool]]] = {
        "id": ("str", False), "seq": ("int", False), "lane_id": ("str", False), "run_id": ("str", False),
        "label": ("str", False), "index": ("int", False), "confidence": ("num", False),
        "top": ("list", False), "review": ("bool", False), "review_reasons": ("list", False),
        "frame_start": ("int", False), "frame_end": ("int", False), "t_start": ("time", False),
        "t_end": ("time", True), "results": ("int", False), "source": ("str", False),
        "model": ("dict", False), "policy": ("dict", False), "closed_by": ("str", True),
    }

    id: str
    seq: int
    lane_id: str
    run_id: str
    label: str
    index: int
    confidence: float
    top: list
    review: bool
    review_reasons: list
    frame_start: int
    frame_end: int
    t_start: float | str
    t_end: float | str | None
    results: int
    source: str
    model: dict
    policy: dict
    closed_by: str | None = None   # why it closed: "empty", "label_change", "camera_lost", "end", ...
    extra: dict = field(default_factory=dict, repr=False, compare=False)

    def validate(self) -> None:
        if not 0.0 <= float(self.confidence) <= 1.0 + 1e-6:
            raise SchemaError(f"item.confidence: must be in [0, 1], got {self.confidence}")
        for i, p in enumerate(self.top):
            if not isinstance(p, dict):
                raise SchemaError(f"item.top[{i}]: expected an object")
            _check(f"item.top[{i}].label", p.get("label"), "str")
            _check(f"item.top[{i}].index", p.get("index"), "int")
            prob = _check(f"item.top[{i}].prob", p.get("prob"), "num")
            if not 0.0 <= prob <= 1.0 + 1e-6:
                raise SchemaError(f"item.top[{i}].prob: must be in [0, 1], got {prob}")
        for i, r in enumerate(self.review_reasons):
            _check(f"item.review_reasons[{i}]", r, "str")
        if self.seq < 1:
            raise SchemaError(f"item.seq: must be >= 1, got {self.seq}")
        check_lane_id(self.lane_id)

    def to_dict(self) -> dict:
        d = super().to_dict()
        d.pop("extra", None)
        return d


@dataclass
class OutageRecord(_Record):
    """The camera delivered no frames from ``start`` to ``end`` (ISO 8601 UTC, or video seconds)."""

    TYPE: ClassVar[str] = "outage"
    KINDS: ClassVar[dict[str, tuple[str, bool]]] = {
        "lane_id": ("str", False), "run_id": ("str", False), "source": ("str", False),
        "start": ("time", False), "end": ("time", True), "duration_s": ("num", True),
        "reason": ("str", False), "last_frame": ("int", True), "item_closed": ("str", True),
    }

    lane_id: str
    run_id: str
    source: str
    start: float | str
    end: float | str | None
    duration_s: float | None
    reason: str
    last_frame: int | None = None
    item_closed: str | None = None    # the id of the item event the outage closed, if one was open
    extra: dict = field(default_factory=dict, repr=False, compare=False)

    def to_dict(self) -> dict:
        d = super().to_dict()
        d.pop("extra", None)
        return d


@dataclass
class ResolutionRecord(_Record):
    """An attendant's answer about one flagged item event."""

    TYPE: ClassVar[str] = "resolution"
    KINDS: ClassVar[dict[str, tuple[str, bool]]] = {
        "event_id": ("str", False), "lane_id": ("str", False), "outcome": ("str", False),
        "label": ("str", True), "index": ("int", True), "resolver": ("str", False),
        "resolved_at": ("str", False), "model_label": ("str", True), "console": ("str", True),
    }

    event_id: str
    lane_id: str
    outcome: str                  # accept | correct | no_item
    label: str | None             # the product the attendant chose (None for no_item)
    index: int | None             # its model label index, or None for "not in the list"
    resolver: str
    resolved_at: str
    model_label: str | None = None
    console: str | None = None
    extra: dict = field(default_factory=dict, repr=False, compare=False)

    def validate(self) -> None:
        if self.outcome not in OUTCOMES:
            raise SchemaError(f"resolution.outcome: must be one of {', '.join(OUTCOMES)}, got {self.outcome!r}")
        if self.outcome != "no_item" and not self.label:
            raise SchemaError(f"resolution.label: needed for outcome {self.outcome!r}")
        if not EVENT_ID_RE.match(self.event_id):
            raise SchemaError(f"resolution.event_id: not an event id: {self.event_id!r:.80}")
        check_lane_id(self.lane_id)

    def to_dict(self) -> dict:
        d = super().to_dict()
        d.pop("extra", None)
        return d


ENVELOPE_TYPES = ("new", "end")


@dataclass(frozen=True)
class EventEnvelope:
    """An item event on MQTT: ``new`` when it opens (with its review flag so far), ``end`` when it
    closes (the same object as the event-log line)."""

    type: str
    id: str
    seq: int
    event: ItemRecord

    def to_dict(self) -> dict:
        return {"type": self.type, "id": self.id, "seq": self.seq, "event": self.event.to_dict()}

    @classmethod
    def from_dict(cls, data: Any) -> "EventEnvelope":
        if not isinstance(data, dict):
            raise SchemaError("envelope: expected a JSON object")
        kind = data.get("type")
        if kind not in ENVELOPE_TYPES:
            raise SchemaError(f"envelope.type: expected new or end, got {kind!r:.40}")
        event = ItemRecord.from_dict(data.get("event"))
        ident = _check("envelope.id", data.get("id"), "str")
        seq = _check("envelope.seq", data.get("seq"), "int")
        if ident != event.id or seq != event.seq:
            raise SchemaError("envelope: id/seq differ from the event's own")
        return cls(kind, ident, seq, event)


RECORD_TYPES: dict[str, type[_Record]] = {c.TYPE: c for c in (ItemRecord, OutageRecord, ResolutionRecord)}


def record_from_dict(data: Any) -> _Record:
    """Any log line: dispatch on its ``type``."""
    if not isinstance(data, dict) or data.get("type") not in RECORD_TYPES:
        raise SchemaError(f"type: expected one of {', '.join(RECORD_TYPES)}, got "
                          f"{data.get('type') if isinstance(data, dict) else type(data).__name__!r:.40}")
    return RECORD_TYPES[data["type"]].from_dict(data)
