import torch
from torchvision.models import resnet18

from checkout_cam.cli import main
from checkout_cam.model import read_meta


def test_export_random_then_classify(tmp_path, grocery_images, capsys):
    out = tmp_path / "demo.pt"
    assert main(["export-model", "--weights", "random", "--seed", "1", "--out", str(out)]) == 0
    assert "UNTRAINED" in capsys.readouterr().out
    meta = read_meta(out)
    assert meta.name == "demo" and meta.trained is False and meta.weights_source == "random:seed=1"
    assert main(["classify", "--model", str(out), str(grocery_images[0])]) == 0


def test_export_state_dict_with_labels(tmp_path, capsys):
    weights = tmp_path / "store.pth"
    torch.save(resnet18(num_classes=2).state_dict(), weights)
    labels = tmp_path / "labels.txt"
    labels.write_text("milk\njuice\n")
    out = tmp_path / "store.pt"
    assert main(["export-model", "--weights", str(weights), "--labels", str(labels), "--out", str(out)]) == 0
    meta = read_meta(out)
    assert meta.labels == ["milk", "juice"] and meta.trained and len(meta.weights_sha256) == 64


def test_export_errors_are_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    assert main(["export-model", "--weights", "imagenet", "--out", str(tmp_path / "m.pt")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "resnet18-f37072fd.pth" in err and "Traceback" not in err
    assert main(["export-model", "--weights", str(tmp_path / "none.pth"), "--out", str(tmp_path / "m.pt")]) == 2
    assert "weights file not found" in capsys.readouterr().err
    assert not (tmp_path / "m.pt").exists()
