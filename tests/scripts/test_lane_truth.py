"""scripts/lane_truth.py on its short clips: the issue's targets hold, and the scorer counts right."""

import importlib.util
import json
import sys

import pytest

from tests.conftest import REPO


@pytest.fixture(scope="module")
def lane_truth():
    spec = importlib.util.spec_from_file_location("checkout_cam_lane_truth", REPO / "scripts" / "lane_truth.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module   # dataclasses look their module up while the file runs
    spec.loader.exec_module(module)
    return module


def test_scorer_counts_found_missed_false_split_merged(lane_truth):
    truth = [{"start": 1.0, "end": 2.0}, {"start": 4.0, "end": 5.0}, {"start": 7.0, "end": 8.0}]
    events = [{"t_start": 1.0, "t_end": 1.4}, {"t_start": 1.5, "t_end": 2.0},   # the first, split
              {"t_start": 3.9, "t_end": 8.0},                                      # the other two, merged
              {"t_start": 10.0, "t_end": 11.0}]                                    # nothing there
    s = lane_truth.score(truth, events, dt=0.0)
    assert (s["found"], s["missed"], s["false"], s["split"], s["merged"]) == (2, 1, 1, 1, 1)
    assert lane_truth.score(truth, [], dt=0.0)["missed"] == 3
    exact = lane_truth.score(truth[:1], [{"t_start": 1.0, "t_end": 2.0}], dt=0.1)
    assert exact["iou"] == [1.0]


def test_short_lane_videos_meet_the_targets(lane_truth, random_artifact, videos, grocery, tmp_path, capsys):
    # The seeded random-weight model: its top-1 flickers, which is the flicker case.
    out = tmp_path / "lane.json"
    assert lane_truth.main(["--model", str(random_artifact), "--short", "--json", str(out), "--keep",
                            str(tmp_path / "clips"), "--only", "start_in_view", "swap", "outage", "cup"]) == 0
    result = json.loads(out.read_text())
    c = result["composed"]
    assert c["found"] == c["items"] == 6
    assert (c["false"], c["split"], c["merged"]) == (0, 0, 0)
    assert c["iou_median"] >= 0.8
    assert [g[2] for g in result["clips"]["outage"]["got"]] == ["camera_lost", "empty"]
    assert [g[2] for g in result["clips"]["swap"]["got"]] == ["swap", "empty"]
    cup = result["clips"]["cup"]
    assert cup["events"] == 1 and cup["found"] == 1
    assert "composed: 6/6 found" in capsys.readouterr().out
    # Each outage is in the log: the item first, then the record with its start, end and duration.
    lines = [json.loads(x) for x in (tmp_path / "clips" / "outage.jsonl").read_text().splitlines()]
    assert [x["type"] for x in lines] == ["item", "outage", "item"]
    assert lines[1]["item_closed"] == lines[0]["id"] and lines[1]["duration_s"] == pytest.approx(3.033, abs=0.01)
