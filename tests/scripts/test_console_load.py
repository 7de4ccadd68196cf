import json
import subprocess
import sys

from tests.conftest import REPO


def test_console_load_script_sees_every_item_and_every_answer_reaches_its_lane(tmp_path):
    out = tmp_path / "load.json"
    r = subprocess.run([sys.executable, "scripts/console_load.py", "--lanes", "5", "--seconds", "3",
                        "--per-lane-per-min", "60", "--queue-target", "2", "--json", str(out)],
                       cwd=REPO, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    f = json.loads(out.read_text())
    assert f["items_published"] > 0 and f["items_seen"] == f["items_published"]
    assert 0 < f["p50_s"] <= f["p95_s"] <= f["max_s"]
    assert f["answers"] > 0 and f["answers_acked_by_broker"] == f["answers"] == f["answers_received_by_lanes"]
    assert f["dropped"] == {}
