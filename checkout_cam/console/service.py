"""The console's decisions: who may resolve what, what a resolution holds, where its photo goes.

The web app calls ``Console.resolve``; it validates the answer, records it
(the store's row is also the MQTT outbox), saves the photo as training data
under ``<data>/corrections/<label>/<event_id>.jpg`` and hands the resolution to
the publisher. The row is written first and the photo after it: a crash in
between leaves a row whose photo ``repair_corrections`` writes again at the
next start, never a photo without its answer.
"""

from __future__ import annotations

import logging
import os
import re
import socket
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from checkout_cam.console.store import AlreadyResolved, Store, UnknownEvent
from checkout_cam.schema import OUTCOMES, ResolutionRecord, SchemaError, utc_now_iso

logger = logging.getLogger(__name__)

CORRECTIONS = "corrections"
MAX_LABEL = 100
_UNSAFE = re.compile(r"[\x00-\x1f/\\:*?\"<>|]")


class Publisher(Protocol):
    def publish(self, record: ResolutionRecord) -> None: ...


class ResolveError(Exception):
    """An answer the console refuses; ``status`` is the HTTP status that says why."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def label_folder(label: str) -> str:
    """A label as one safe folder name; the model's labels pass unchanged (finetune's class names)."""
    name = _UNSAFE.sub("_", label).strip().strip(".")
    return name or "_"


def read_model_labels(model: str) -> tuple[str, list[str]]:
    """(sha256 of the file, its labels): the sha256 is what the lanes' events name their model by."""
    from checkout_cam.model.artifact import file_sha256, read_meta  # torch only when a model is named
    return file_sha256(model), list(read_meta(model).labels)


def read_labels(model: str | None, labels_file: str | None) -> list[str]:
    """The products an attendant can pick from: a model artifact's labels and/or a text file's lines."""
    out: list[str] = []
    if model:
        out.extend(read_model_labels(model)[1])
    if labels_file:
        text = Path(labels_file).read_text(encoding="utf-8-sig")
        out.extend(line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#"))
    seen: set[str] = set()
    return [x for x in out if not (x in seen or seen.add(x))]


@dataclass
class Console:
    store: Store
    publisher: Publisher | None = None
    labels: tuple[str, ...] = ()
    name: str = ""
    # model sha256 -> its labels (--model): a corrected label's index is the lane model's own class index
    models: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.name = self.name or f"console@{socket.gethostname()}"
        self._lock = threading.Lock()
        self.corrections = self.store.dir / CORRECTIONS

    def all_labels(self) -> list[str]:
        """The model's labels (from --model/--labels) and every label the lanes put in a Top-k."""
        seen = set(self.labels)
        return list(self.labels) + [x for x in self.store.known_labels() if x not in seen]

    def resolve(self, *, user: str, role: str, event_id: str, outcome: str, label: str | None = None,
                index: int | None = None) -> dict:
        if role != "attendant":
            raise ResolveError(403, f"user {user!r} is a {role}: only attendants resolve items")
        if outcome not in OUTCOMES:
            raise ResolveError(400, f"outcome must be one of {', '.join(OUTCOMES)}, got {outcome!r:.40}")
        event = self.store.event(event_id) if isinstance(event_id, str) else None
        if event is None:
            raise ResolveError(404, f"no item event {event_id!r:.80} is known to this console")
        record = event["record"]
        if outcome == "accept":
            label, index = record["label"], record["index"]
        elif outcome == "correct":
            if not isinstance(label, str) or not label.strip():
                raise ResolveError(400, "a correction needs the right product's label")
            label = " ".join(label.split())
            if len(label) > MAX_LABEL:
                raise ResolveError(400, f"label longer than {MAX_LABEL} characters")
            # the index travels only when it is really the lane model's index of that label: from the
            # event's own Top-k, or from the --model artifact the lane runs (same sha256); else None
            # (a label of another model, or "not in the list" free text). What the page sent is not trusted.
            index = {p["label"]: p["index"] for p in record.get("top", [])}.get(label)
            lane_labels = self.models.get((record.get("model") or {}).get("sha256"))
            if index is None and lane_labels and label in lane_labels:
                index = lane_labels.index(label)
        else:
            label, index = None, None
        try:
            resolution = ResolutionRecord.from_dict({
                "type": "resolution", "event_id": event_id, "lane_id": event["lane_id"], "outcome": outcome,
                "label": label, "index": index, "resolver": user, "resolved_at": utc_now_iso(),
                "model_label": record["label"], "console": self.name})
        except SchemaError as exc:
            raise ResolveError(400, str(exc)) from None
        picture = self.store.picture(event_id)
        rel = None
        if outcome in ("accept", "correct") and picture is not None:
            rel = f"{CORRECTIONS}/{label_folder(label)}/{event_id}.jpg"
        with self._lock:
            try:
                stored = self.store.add_resolution(resolution, correction=rel)
            except AlreadyResolved:
                raise ResolveError(409, f"item {event_id} is already resolved") from None
            except UnknownEvent as exc:
                raise ResolveError(404, str(exc)) from None
        if rel is not None:
            self._write_photo(rel, picture)
        logger.info("%s resolved %s on %s: %s%s", user, event_id, event["lane_id"], outcome,
                    f" {label!r}" if label else "")
        if self.publisher is not None:
            self.publisher.publish(resolution)
        return {"event_id": event_id, "outcome": outcome, "label": label, "index": index, "resolver": user,
                "waited_s": stored["waited_s"], "correction": rel}

    def _write_photo(self, rel: str, jpeg: bytes) -> None:
        path = self.store.dir / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        with open(tmp, "wb") as f:
            f.write(jpeg)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)

    def repair_corrections(self) -> int:
        """Write the photos of answers whose photo is missing (a crash right after the answer)."""
        n = 0
        for row in self.store.history(limit=1_000_000):
            rel = row["correction"]
            if rel and not (self.store.dir / rel).exists():
                picture = self.store.picture(row["event_id"])
                if picture is not None:
                    self._write_photo(rel, picture)
                    n += 1
        if n:
            logger.warning("wrote %d correction photo(s) missing after an interrupted run", n)
        return n
