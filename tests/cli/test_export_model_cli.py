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


def test_export_int8_with_calibration_folder(tmp_path, grocery, capsys):
    photos = tmp_path / "photos"
    photos.mkdir()
    for line in (grocery / "train.txt").read_text().splitlines()[::500][:4]:
        src = grocery / line.split(",")[0].strip()
        (photos / src.name).write_bytes(src.read_bytes())
    out = tmp_path / "int8.pt"
    assert main(["export-model", "--weights", "random", "--out", str(out), "--precision", "int8",
                 "--calibration", str(photos), "--calibration-images", "3"]) == 0
    assert "int8" in capsys.readouterr().out
    meta = read_meta(out)
    assert meta.precision == "int8" and meta.extra["calibration"]["n_images"] == 3
    assert meta.extra["calibration"]["found"] == 4
    assert main(["classify", "--model", str(out), str(photos)]) == 0


def test_int8_without_calibration_is_one_clear_error(tmp_path, capsys):
    out = tmp_path / "int8.pt"
    assert main(["export-model", "--weights", "random", "--out", str(out), "--precision", "int8"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--precision int8 needs --calibration" in err
    assert main(["export-model", "--weights", "random", "--out", str(out), "--calibration", str(tmp_path)]) == 2
    assert "only used with --precision int8" in capsys.readouterr().err
    assert main(["export-model", "--weights", "random", "--out", str(out), "--precision", "int8",
                 "--calibration", str(tmp_path / "none")]) == 2
    assert "calibration source not found" in capsys.readouterr().err
    assert not out.exists()


def test_export_writes_the_default_model_path_with_classes_from_a_csv(tmp_path, monkeypatch, capsys, grocery):
    monkeypatch.chdir(tmp_path)  # no config.yaml here: the built-in model.path, models/model.pt
    assert main(["export-model", "--weights", "random", "--classes", str(grocery / "classes.csv")]) == 0
    meta = read_meta(tmp_path / "models" / "model.pt")
    assert meta.name == "demo-untrained" and not meta.trained
    assert meta.labels[:2] == ["Golden-Delicious", "Granny-Smith"] and len(meta.labels) == 81


def test_offline_imagenet_error_points_to_the_demo_model(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    assert main(["export-model", "--weights", "imagenet", "--out", str(tmp_path / "m.pt")]) == 2
    assert "--weights random" in capsys.readouterr().err


def test_finetune_offline_error_names_init_scratch(tmp_path, monkeypatch):
    import pytest
    from checkout_cam.errors import WeightsError
    from checkout_cam.training.finetune import build_model
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(WeightsError) as exc:
        build_model("imagenet", 3, seed=0)
    assert "--init scratch" in str(exc.value) and "--weights" not in str(exc.value)
