import json

import pytest

from checkout_cam.cli import main
from checkout_cam.training.data import read_classes
from tests.training.conftest import one_thread


@pytest.fixture(scope="module")
def grocery_untrained(grocery, tmp_path_factory):
    """An UNTRAINED artifact with the 81 grocery labels, and a 24-photo slice of grocery val."""
    tmp = tmp_path_factory.mktemp("grocery_eval")
    names = list(read_classes(grocery / "classes.csv").values())
    (tmp / "labels.txt").write_text("\n".join(names) + "\n")
    model = tmp / "untrained81.pt"
    with one_thread():
        assert main(["export-model", "--weights", "random", "--labels", str(tmp / "labels.txt"),
                     "--out", str(model)]) == 0
    lines = (grocery / "val.txt").read_text().splitlines()[::12]
    listing = tmp / "val-slice.txt"
    listing.write_text("".join(f"{grocery / ln.split(',')[0].strip()}, {ln.split(',', 1)[1].strip()}\n" for ln in lines))
    return model, listing, len(lines)


def test_untrained_model_on_real_photos_flags_everything(grocery, grocery_untrained, capsys):
    model, listing, n = grocery_untrained
    csv = str(grocery / "classes.csv")
    assert main(["evaluate", "--model", str(model), "--data", str(listing), "--classes", csv, "--coarse", csv,
                 "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["n"] == n and r["trained"] is False
    assert r["flagged_share"] == 1.0 and r["unflagged_accuracy"] is None and r["suggested_min_confidence"] is None
    assert 0.0 <= r["top1"] <= r["top3"] <= 1.0 and r["top1"] <= r["coarse_top1"] <= 1.0
    assert set(r["per_class"]) <= set(read_classes(grocery / "classes.csv").values())
    assert main(["evaluate", "--model", str(model), "--data", str(listing), "--classes", csv,
                 "--min-confidence", "0.2"]) == 0
    text = capsys.readouterr().out
    assert "UNTRAINED" in text and "min_confidence 0.2," in text and "temporal smoothing" in text


def test_evaluate_skips_unreadable_and_refuses_foreign_classes(tiny_model, photos, tmp_path, capsys):
    out, _ = tiny_model
    _, val = photos
    (val / "Banana" / "broken.jpg").write_text("no")
    assert main(["evaluate", "--model", str(out), "--data", str(val), "--json"]) == 0
    cap = capsys.readouterr()
    assert json.loads(cap.out)["n"] == 6 and json.loads(cap.out)["skipped"] == 1
    assert "broken.jpg" in cap.err and "skipped 1 of 7" in cap.err
    (val / "Kiwi").mkdir()
    (val / "Banana" / "broken.jpg").rename(val / "Kiwi" / "k.jpg")
    assert main(["evaluate", "--model", str(out), "--data", str(val)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Kiwi are not known classes" in err
