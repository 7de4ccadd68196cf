"""The retraining loop: attendants' answers become photos under corrections/, finetune trains on them
with the store's own photos, evaluate measures the model on them."""

from __future__ import annotations

import json

from checkout_cam.cli import main
from checkout_cam.console.service import Console
from checkout_cam.console.store import Store
from checkout_cam.model import read_meta
from checkout_cam.training.data import load_many
from tests.console.conftest import make_record
from tests.training.conftest import one_thread, photo_sets, photos  # noqa: F401  (fixtures)

TINY = ["--init", "scratch", "--image-size", "32", "--epochs", "1", "--batch-size", "4", "--no-progress"]


def answered(data, photos_dir):
    """A console that was asked about 4 items (real grocery photos as the lanes' pictures) and answered them."""
    store = Store(data)
    console = Console(store, labels=("Arla-Standard-Milk", "Banana", "Cucumber"))
    jpgs = sorted((photos_dir / "Banana").glob("*.jpg"))[:2] + sorted((photos_dir / "Cucumber").glob("*.jpg"))[:2]
    answers = [("accept", None), ("correct", "Banana"), ("correct", "Cucumber"), ("correct", "Oat bar (new)")]
    model_says = ["Banana", "Cucumber", "Arla-Standard-Milk", "Banana"]
    ids = []
    for seq, (jpg, (outcome, label), said) in enumerate(zip(jpgs, answers, model_says), 1):
        rec = make_record("lane1", seq, label=said)
        store.add_event("new", rec)
        store.add_picture("lane1", rec.id, jpg.read_bytes())
        out = console.resolve(user="ann", role="attendant", event_id=rec.id, outcome=outcome, label=label)
        assert out["correction"] == f"corrections/{label or said}/{rec.id}.jpg"
        ids.append(rec.id)
    store.close()
    return ids


def test_finetune_on_photos_and_corrections_then_evaluate_on_corrections(photos, tmp_path, capsys):  # noqa: F811
    train, _ = photos
    data = tmp_path / "console"
    ids = answered(data, train)
    corrections = data / "corrections"
    assert sorted(p.name for p in corrections.iterdir()) == ["Banana", "Cucumber", "Oat bar (new)"]
    assert (corrections / "Banana" / f"{ids[0]}.jpg").read_bytes() == sorted((train / "Banana").glob("*.jpg"))[0].read_bytes()

    merged = load_many([train, corrections])
    assert merged.classes == ["Arla-Standard-Milk", "Banana", "Cucumber", "Oat bar (new)"]
    assert merged.counts() == [4, 4 + 2, 4 + 1, 1]

    out = tmp_path / "models" / "store-2.pt"
    assert main(["finetune", "--train", str(train), "--train", str(corrections), "--out", str(out), *TINY]) == 0
    meta = read_meta(out)
    assert meta.labels == merged.classes and meta.trained
    assert meta.extra["finetune"]["data"]["train"]["source"] == f"{train} + {corrections}"
    capsys.readouterr()

    old = tmp_path / "models" / "store-1.pt"
    assert main(["finetune", "--train", str(train), "--out", str(old), *TINY]) == 0
    capsys.readouterr()
    # the old model does not know the new product: refused with the way out named, or left out and counted
    assert main(["evaluate", "--model", str(old), "--data", str(corrections)]) == 2
    assert "--skip-unknown" in capsys.readouterr().err
    assert main(["evaluate", "--model", str(old), "--data", str(corrections), "--skip-unknown", "--json"]) == 0
    cap = capsys.readouterr()
    r = json.loads(cap.out)
    assert r["n"] == 3 and r["skipped_unknown"] == 1 and "left out 1 photo" in cap.err
    assert main(["evaluate", "--model", str(out), "--data", str(corrections), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["n"] == 4
