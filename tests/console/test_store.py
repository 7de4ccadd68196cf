from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from checkout_cam.console.store import AlreadyResolved, Store, UnknownEvent
from checkout_cam.schema import ResolutionRecord, utc_now_iso
from tests.console.conftest import make_record


def resolution(rec, outcome="accept", label=None, user="ann"):
    return ResolutionRecord.from_dict({
        "type": "resolution", "event_id": rec.id, "lane_id": rec.lane_id, "outcome": outcome,
        "label": label if label is not None else (None if outcome == "no_item" else rec.label),
        "index": None, "resolver": user, "resolved_at": utc_now_iso(), "model_label": rec.label})


def test_events_are_merged_by_id_and_never_reopen(tmp_path):
    with Store(tmp_path) as s:
        new = make_record(seq=1)
        assert s.add_event("new", new) is True
        assert s.add_event("new", new) is False             # a redelivery
        assert [q.id for q in s.queue()] == [new.id]
        assert s.lanes()[0]["current_event"] == new.id
        end = make_record(seq=1, label="Banana")
        end.closed_by = "empty"
        assert s.add_event("end", end) is True
        assert s.add_event("new", new) is False             # late `new` after `end`: ignored
        assert s.event(new.id)["state"] == "closed"
        assert s.lanes()[0]["current_event"] is None
        assert s.add_event("new", make_record(seq=2, review=False)) is True
        assert [q.id for q in s.queue()] == [new.id]         # unflagged items do not queue
    with Store(tmp_path) as s:                                # a restart keeps it all
        assert [q.id for q in s.queue()] == [new.id]
        assert s.event(new.id)["record"]["closed_by"] == "empty"


def test_queue_is_oldest_first_across_lanes_and_resolution_removes_it(tmp_path):
    with Store(tmp_path) as s:
        a = make_record("lane2", 1)
        b = make_record("lane1", 5)
        s.add_event("new", a, now="2026-12-01T15:00:01.000+00:00")
        s.add_event("new", b, now="2026-12-01T15:00:02.000+00:00")
        s.add_picture("lane1", b.id, b"\xff\xd8\xffjpeg")
        q = s.queue()
        assert [x.id for x in q] == [a.id, b.id] and [x.has_picture for x in q] == [False, True]
        s.add_resolution(resolution(a), correction=None)
        assert [x.id for x in s.queue()] == [b.id]
        with pytest.raises(AlreadyResolved):
            s.add_resolution(resolution(a, "no_item"), correction=None)
        with pytest.raises(UnknownEvent):
            s.add_resolution(resolution(make_record("lane1", 99)), correction=None)
        assert [r.event_id for r in s.unpublished()] == [a.id]
        s.mark_published(a.id)
        assert s.unpublished() == []
        h = s.history()
        assert len(h) == 1 and h[0]["resolver"] == "ann" and h[0]["published"] and h[0]["model_label"] == "Banana"
        assert s.history(lane="lane1") == [] and s.history(outcome="no_item") == []
        assert len(s.history(since="2000-01-01")) == 1 and s.history(until="2000-01-01") == []


def test_counters_users_sessions_and_prune(tmp_path):
    with Store(tmp_path) as s:
        s.count("dropped_events")
        s.count("dropped_events", 2)
        assert s.counters() == {"dropped_events": 3}
        assert s.add_user("ann", "attendant", "h") is True
        s.add_session("tok", "ann", "csrf", ttl_s=60)
        assert s.session("tok") == {"user": "ann", "csrf": "csrf", "role": "attendant"}
        assert s.add_user("ann", "viewer", "h2") is False   # replaced: her sessions end
        assert s.session("tok") is None
        s.add_session("old", "ann", "c", ttl_s=-1)
        assert s.session("old") is None
        old = make_record(seq=3, review=False)
        s.add_event("new", old, now="2020-01-01T00:00:00.000+00:00")
        s.add_event("end", old, now="2020-01-01T00:00:01.000+00:00")
        s.add_event("new", make_record(seq=4), now="2020-01-01T00:00:00.000+00:00")
        gone = s.prune(30, now=datetime.now(timezone.utc) + timedelta(days=1))
        assert gone["events"] == 1 and s.event(old.id) is None and len(s.queue()) == 1
