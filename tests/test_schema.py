"""schema: the one declaration of the messages; what the log writes, consumers read back."""

import json

import pytest

from checkout_cam.review import ItemEvent
from checkout_cam.results import Prediction
from checkout_cam.schema import (EventEnvelope, ItemRecord, ResolutionRecord, RunIdentity,
                                 SchemaError, new_run_id, record_from_dict, RUN_ID_RE, EVENT_ID_RE)

TOP = (Prediction(948, "Granny Smith", 0.8), Prediction(950, "orange", 0.1))


def _event(identity):
    event_id, seq = identity.next_event()
    return ItemEvent(label="Granny Smith", index=948, confidence=0.8, top=TOP, review=False, review_reasons=(),
                     frame_start=3, frame_end=40, t_start=0.1, t_end=1.4, results=30, id=event_id, seq=seq,
                     closed_by="empty")


def test_ids_are_unique_across_runs_and_ordered_within_one():
    a, b = RunIdentity("lane-2"), RunIdentity("lane-2")
    assert a.run_id != b.run_id and RUN_ID_RE.match(a.run_id)
    ids = [a.next_event() for _ in range(3)]
    assert [s for _, s in ids] == [1, 2, 3]
    assert all(EVENT_ID_RE.match(i) for i, _ in ids)
    assert ids[0][0] == f"lane-2-{a.run_id}-000001"
    assert sorted([new_run_id(), new_run_id()])  # sortable strings


def test_bad_lane_id_is_refused_by_name():
    with pytest.raises(SchemaError, match="lane_id"):
        RunIdentity("lane 1/#")


def test_item_record_round_trips_through_json():
    ident = RunIdentity("lane3")
    rec = _event(ident).record(identity=ident, source="box.mp4", model={"name": "m", "sha256": "x",
                                                                        "trained": True},
                               policy={"min_confidence": 0.6}, wall_clock_offset=None)
    line = json.loads(json.dumps(rec.to_dict()))
    assert line["type"] == "item" and line["lane_id"] == "lane3" and line["run_id"] == ident.run_id
    assert line["seq"] == 1 and line["id"].endswith("-000001") and line["closed_by"] == "empty"
    again = record_from_dict(line)
    assert again == rec
    env = EventEnvelope("end", rec.id, rec.seq, rec)
    assert EventEnvelope.from_dict(json.loads(json.dumps(env.to_dict()))) == env


@pytest.mark.parametrize("change, field", [
    ({"confidence": 1.5}, "confidence"),
    ({"confidence": float("nan")}, "confidence"),
    ({"seq": "1"}, "seq"),
    ({"review": "no"}, "review"),
    ({"top": [{"label": "a", "index": 1, "prob": 2.0}]}, "top[0].prob"),
    ({"lane_id": "a/b"}, "lane_id"),
])
def test_item_record_names_the_bad_field(change, field):
    ident = RunIdentity("lane3")
    line = _event(ident).to_dict(identity=ident, source="s", model={}, policy={}, wall_clock_offset=None)
    line.update(change)
    with pytest.raises(SchemaError, match=field.replace("[", r"\[").replace("]", r"\]")):
        ItemRecord.from_dict(line)


def test_envelope_must_agree_with_its_event():
    ident = RunIdentity("lane3")
    line = _event(ident).to_dict(identity=ident, source="s", model={}, policy={}, wall_clock_offset=None)
    with pytest.raises(SchemaError, match="differ"):
        EventEnvelope.from_dict({"type": "new", "id": "other", "seq": 1, "event": line})
    with pytest.raises(SchemaError, match="envelope.type"):
        EventEnvelope.from_dict({"type": "delete", "id": line["id"], "seq": 1, "event": line})


def test_resolution_and_outage_validate():
    ident = RunIdentity("lane3")
    eid, _ = ident.next_event()
    ok = {"type": "resolution", "event_id": eid, "lane_id": "lane3", "outcome": "correct", "label": "Banana",
          "index": 954, "resolver": "ana", "resolved_at": "2026-12-01T10:00:00.000+00:00"}
    assert ResolutionRecord.from_dict(ok).to_dict() == {**ok, "model_label": None, "console": None}
    with pytest.raises(SchemaError, match="outcome"):
        ResolutionRecord.from_dict({**ok, "outcome": "maybe"})
    with pytest.raises(SchemaError, match="label"):
        ResolutionRecord.from_dict({**ok, "label": None})
    with pytest.raises(SchemaError, match="event_id"):
        ResolutionRecord.from_dict({**ok, "event_id": "../../etc"})
    out = {"type": "outage", "lane_id": "lane3", "run_id": ident.run_id, "source": "rtsp://cam",
           "start": "2026-12-01T10:00:00.000+00:00", "end": None, "duration_s": None, "reason": "camera_lost"}
    assert record_from_dict(out).to_dict()["reason"] == "camera_lost"
    with pytest.raises(SchemaError, match="type"):
        record_from_dict({"type": "nope"})
