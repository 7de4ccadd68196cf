import json
import os
import signal
import subprocess
import sys

import cv2
import pytest

from checkout_cam.cli import main
from checkout_cam.model import read_meta
from tests.conftest import REPO

TINY = ["--init", "scratch", "--image-size", "32", "--epochs", "1", "--batch-size", "4", "--no-progress"]


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err


def test_the_two_readme_commands_on_a_folder_of_photos(photos, tmp_path, capsys):
    train, _ = photos
    out = tmp_path / "models" / "store.pt"
    assert main(["finetune", "--train", str(train), "--out", str(out), *TINY]) == 0
    printed = capsys.readouterr().out
    held = out.with_suffix(".val.txt")
    assert f"listed in {held}" in printed and "epoch 1/1:" in printed and f"wrote {out}" in printed
    assert f"checkout-cam evaluate --model {out} --data {held}" in printed
    assert read_meta(out).trained and read_meta(out).extra["finetune"]["data"]["val"]["images"] == 3

    report = tmp_path / "report"
    assert main(["evaluate", "--model", str(out), "--data", str(held), "--json", "--report", str(report)]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["n"] == 3 and r["trained"] is True
    for key in ("top1", "top3", "flagged_share"):
        assert 0.0 <= r[key] <= 1.0
    assert r["top3"] == 1.0                        # 3 classes: the truth is always in the top 3
    assert r["unflagged_accuracy"] is None or 0.0 <= r["unflagged_accuracy"] <= 1.0
    assert r["errors_caught"] is None or 0.0 <= r["errors_caught"] <= 1.0
    assert "suggested_min_confidence" in r and set(r["per_class"]) == {"Arla-Standard-Milk", "Banana", "Cucumber"}
    png = cv2.imread(str(report / "confusion.png"))
    assert png is not None and png.shape[0] > 100 and png.shape[1] > 100
    assert json.loads((report / "metrics.json").read_text())["top1"] == r["top1"]
    assert len((report / "predictions.csv").read_text().splitlines()) == 4

    # Every mode loads the artifact as it is; classify stands in for them here.
    assert main(["classify", "--model", str(out), str(train / "Banana")]) == 0
    assert "Banana" in capsys.readouterr().out


def _list_and_csv(tmp_path, train, extra_line=""):
    csv = tmp_path / "classes.csv"
    csv.write_text("name,id\nArla-Standard-Milk,0\nBanana,1\nCucumber,2\n")
    ids = {"Arla-Standard-Milk": 0, "Banana": 1, "Cucumber": 2}
    listing = tmp_path / "train.txt"
    listing.write_text("".join(f"{p.relative_to(tmp_path)}, {ids[p.parent.name]}\n"
                               for p in sorted(train.rglob("*.jpg"))) + extra_line)
    return listing, csv


@pytest.mark.parametrize("case, expected", [
    ("missing file", r"train.txt: 1 listed file(s) do not exist: {tmp}/train/Banana/gone.jpg"),
    ("id out of range", r"train.txt line 13: class id 5 is out of range"),
    ("empty class", r"1 class(es) have no usable images: Kiwi"),
    ("no classes csv", r"classes file not found: {tmp}/missing.csv"),
])
def test_bad_data_is_one_line_naming_the_path(photos, tmp_path, capsys, case, expected):
    train, _ = photos
    extra = {"missing file": "train/Banana/gone.jpg, 1\n", "id out of range": "train/Banana/Banana_001.jpg, 5\n"}
    listing, csv = _list_and_csv(tmp_path, train, extra.get(case, ""))
    args = ["finetune", "--train", str(listing), "--classes", str(csv), "--out", str(tmp_path / "m.pt"), *TINY]
    if case == "empty class":
        (train / "Kiwi").mkdir()
        args = ["finetune", "--train", str(train), "--out", str(tmp_path / "m.pt"), *TINY]
    if case == "no classes csv":
        args[args.index(str(csv))] = str(tmp_path / "missing.csv")
    assert main(args) == 2
    err = _one_line_error(capsys)
    assert expected.format(tmp=tmp_path) in err
    assert not (tmp_path / "m.pt").exists()


def test_unreadable_images_are_skipped_and_counted(photos, tmp_path, capsys, caplog):
    train, val = photos
    (train / "Banana" / "truncated.jpg").write_bytes((train / "Banana").glob("*.jpg").__next__().read_bytes()[:300])
    (train / "Cucumber" / "notes.jpg").write_text("not a photo")
    out = tmp_path / "m.pt"
    assert main(["finetune", "--train", str(train), "--val", str(val), "--out", str(out), *TINY]) == 0
    cap = capsys.readouterr()
    assert "skipped 2 unreadable training and 0 unreadable validation image(s)" in cap.out
    warned = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert any("Banana/truncated.jpg" in w for w in warned) and any("Cucumber/notes.jpg" in w for w in warned)
    assert read_meta(out).extra["finetune"]["skipped_images"] == {"train": 2, "val": 0}


def test_imagenet_init_offline_is_the_usual_clear_error(photos, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    train, _ = photos
    args = ["finetune", "--train", str(train), "--out", str(tmp_path / "m.pt"), "--epochs", "1", "--image-size", "32"]
    assert main(args) == 2
    assert "resnet18-f37072fd.pth" in _one_line_error(capsys)


def test_ctrl_c_then_resume_exports_the_best_finished_epoch(photos, tmp_path, capsys):
    train, val = photos
    out = tmp_path / "m.pt"
    cmd = [sys.executable, "-m", "checkout_cam", "finetune", "--train", str(train), "--val", str(val),
           "--out", str(out), "--init", "scratch", "--image-size", "32", "--batch-size", "4", "--no-progress", "--threads", "1"]
    proc = subprocess.Popen([*cmd, "--epochs", "40"], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        for line in proc.stdout:
            if line.startswith("epoch 1/40:"):
                proc.send_signal(signal.SIGINT)
                break
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130
    assert "run the same command with --resume" in err and "Traceback" not in err
    assert not out.exists()
    assert main([*cmd[3:], "--epochs", "1", "--resume"]) == 0
    assert "already done; exporting the best epoch" in capsys.readouterr().out and out.exists()
    assert read_meta(out).extra["finetune"]["epochs_done"] >= 1



def test_int8_finetune_writes_the_int8_model_and_its_fp32_twin(photos, tmp_path, capsys):
    from checkout_cam.images import list_images, read_image
    from checkout_cam.model import open_classifier
    train, _ = photos
    out = tmp_path / "store.pt"
    assert main(["finetune", "--train", str(train), "--out", str(out), "--precision", "int8", *TINY]) == 0
    printed = capsys.readouterr().out
    twin = tmp_path / "store-fp32.pt"
    assert f"wrote {twin}" in printed and "int8" in printed
    int8, fp32 = read_meta(out), read_meta(twin)
    assert int8.precision == "int8" and fp32.precision == "fp32" and int8.labels == fp32.labels
    assert int8.trained and int8.input_size == 32 and int8.extra["calibration"]["n_images"] > 0
    image = read_image(list_images([train])[0])
    assert len(open_classifier(out).classify([image], 3)[0].top) == 3
    assert main(["finetune", "--train", str(train), "--out", str(out), "--calibration", str(train), *TINY]) == 2
    assert "--calibration only applies to --precision int8" in _one_line_error(capsys)
