"""Console fixtures: the broker, a model whose labels the lanes use, item records from real frames."""

from __future__ import annotations

import pytest

from tests.helpers.mosquitto import Broker


@pytest.fixture
def mosquitto(tmp_path):
    """A real broker on a free 127.0.0.1 port; stop()/start() keep its port and persistence."""
    with Broker(tmp_path, name="mosquitto") as broker:
        yield broker


@pytest.fixture(scope="session")
def classifier(random_artifact):
    from checkout_cam.model import open_classifier
    return open_classifier(random_artifact, threads=1)


def make_record(lane="lane1", seq=1, *, review=True, label="Banana", run_id="20261201T150000Z-abcdef",
                top=None, reasons=("low_confidence",)):
    """An ItemRecord as the lane's schema reader returns it."""
    from checkout_cam.schema import ItemRecord
    top = top or [{"index": 3, "label": label, "prob": 0.41}, {"index": 7, "label": "Apple", "prob": 0.33},
                  {"index": 1, "label": "Kiwi", "prob": 0.1}]
    return ItemRecord.from_dict({
        "type": "item", "id": f"{lane}-{run_id}-{seq:06d}", "seq": seq, "lane_id": lane, "run_id": run_id,
        "label": label, "index": top[0]["index"], "confidence": top[0]["prob"], "top": top, "review": review,
        "review_reasons": list(reasons) if review else [], "frame_start": 10, "frame_end": 40,
        "t_start": "2026-12-01T15:00:00.000+00:00", "t_end": None, "results": 12, "source": "box.mp4",
        "model": {"name": "m", "sha256": "x", "trained": True}, "policy": {"min_confidence": 0.6}})
