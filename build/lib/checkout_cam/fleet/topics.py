"""The MQTT topics of a store's lanes, in one place (publisher, `events` subscriber and console).

Under ``<prefix>/<lane_id>/`` (prefix default ``checkout_cam``):

- ``available``   ``online`` / ``offline`` (the retained Last Will) / ``stopped``; retained, QoS 1
- ``events``      schema.EventEnvelope JSON: ``new`` when an item opens, ``end`` when it closes; QoS 1
- ``review/<event_id>``  a JPEG of the scanning area of a flagged item's most confident frame; QoS 1
- ``stats``       the stats line's figures as JSON, every ``serve.stats_interval_s``
- ``outage``      schema.OutageRecord JSON; QoS 1
- ``resolution``  schema.ResolutionRecord JSON from the attendant console to the lane; QoS 1
"""

from __future__ import annotations

from dataclasses import dataclass

from checkout_cam.schema import check_lane_id

DEFAULT_PREFIX = "checkout_cam"
KINDS = ("available", "events", "review", "stats", "outage", "resolution")


@dataclass(frozen=True)
class Topics:
    lane_id: str
    prefix: str = DEFAULT_PREFIX

    def __post_init__(self) -> None:
        check_lane_id(self.lane_id)
        if not self.prefix or any(c in self.prefix for c in "+#") or self.prefix.endswith("/"):
            raise ValueError(f"MQTT topic prefix must be non-empty, without + # or a trailing /, "
                             f"got {self.prefix!r}")

    @property
    def base(self) -> str:
        return f"{self.prefix}/{self.lane_id}"

    @property
    def available(self) -> str:
        return f"{self.base}/available"

    @property
    def events(self) -> str:
        return f"{self.base}/events"

    def review(self, event_id: str) -> str:
        return f"{self.base}/review/{event_id}"

    @property
    def stats(self) -> str:
        return f"{self.base}/stats"

    @property
    def outage(self) -> str:
        return f"{self.base}/outage"

    @property
    def resolution(self) -> str:
        return f"{self.base}/resolution"


def store_filter(kind: str, prefix: str = DEFAULT_PREFIX, lane_id: str = "+") -> str:
    """A subscription for one kind of message of every lane (``checkout_cam/+/events``), or one lane."""
    if kind not in KINDS:
        raise ValueError(f"unknown topic kind {kind!r}; one of {', '.join(KINDS)}")
    return f"{prefix}/{lane_id}/{kind}" + ("/+" if kind == "review" else "")


def parse(topic: str, prefix: str = DEFAULT_PREFIX) -> tuple[str, str, str | None] | None:
    """``checkout_cam/lane3/review/<id>`` -> ("lane3", "review", "<id>"); None for a foreign topic."""
    parts = topic.split("/")
    head = prefix.split("/")
    if parts[:len(head)] != head:
        return None
    rest = parts[len(head):]
    if len(rest) == 2 and rest[1] in KINDS and rest[1] != "review":
        return rest[0], rest[1], None
    if len(rest) == 3 and rest[1] == "review" and rest[2]:
        return rest[0], "review", rest[2]
    return None
