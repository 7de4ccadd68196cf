import pytest
import torch
from torchvision.models import resnet18

from checkout_cam.errors import WeightsError
from checkout_cam.model.weights import imagenet_cache_path, imagenet_labels, load_weights


def test_imagenet_offline_names_the_cache_file(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setenv("CHECKOUT_CAM_OFFLINE", "1")
    def no_download(*a, **k):
        raise AssertionError("a test must never download")
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", no_download)
    with pytest.raises(WeightsError) as exc:
        load_weights("imagenet")
    msg = str(exc.value)
    assert str(tmp_path / "hub" / "checkpoints" / "resnet18-f37072fd.pth") in msg
    assert str(imagenet_cache_path()) in msg and "--weights" in msg


def test_imagenet_download_failure_is_the_same_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setenv("CHECKOUT_CAM_OFFLINE", "0")
    def offline(*a, **k):
        raise OSError("Name or service not known")
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    with pytest.raises(WeightsError, match="the download failed .*resnet18-f37072fd.pth"):
        load_weights("imagenet")


def test_imagenet_cache_is_used_and_hash_checked(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    path = imagenet_cache_path()
    path.parent.mkdir(parents=True)
    torch.save(resnet18().state_dict(), path)  # right layout, wrong bytes for the name's hash
    with pytest.raises(WeightsError, match="is corrupt .*delete it"):
        load_weights("imagenet")


def test_state_dict_file_with_labels(tmp_path):
    model = resnet18(num_classes=3)
    path = tmp_path / "head.pth"
    torch.save(model.state_dict(), path)
    labels = tmp_path / "labels.txt"
    labels.write_text("milk\njuice\n\noat milk\n")
    loaded = load_weights(str(path), labels)
    assert loaded.labels == ["milk", "juice", "oat milk"] and loaded.trained
    assert loaded.source == f"file:{path.resolve()}" and len(loaded.sha256) == 64
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        assert torch.equal(loaded.model(x), model.eval()(x))
    labels.write_text("milk\njuice\n")
    with pytest.raises(WeightsError, match="has 3 classes but the labels file has 2 names"):
        load_weights(str(path), labels)
    with pytest.raises(WeightsError, match="has 3 classes: pass --labels"):
        load_weights(str(path))


def test_wrong_layout_and_missing_files(tmp_path):
    with pytest.raises(WeightsError, match="weights file not found"):
        load_weights(str(tmp_path / "nope.pth"))
    bad = tmp_path / "other.pth"
    torch.save({"conv.weight": torch.zeros(3)}, bad)
    with pytest.raises(WeightsError, match="not in torchvision's resnet18 layout"):
        load_weights(str(bad))
    partial = tmp_path / "partial.pth"
    state = resnet18().state_dict()
    del state["layer4.1.bn2.weight"]
    torch.save(state, partial)
    with pytest.raises(WeightsError, match="1 missing .*layer4.1.bn2.weight"):
        load_weights(str(partial))
    text = tmp_path / "text.pth"
    text.write_text("hello")
    with pytest.raises(WeightsError, match="not a PyTorch state_dict file"):
        load_weights(str(text))


def test_random_is_seeded_and_untrained():
    a, b = load_weights("random", seed=3), load_weights("random", seed=3)
    assert not a.trained and a.source == "random:seed=3" and a.labels == imagenet_labels()
    assert torch.equal(a.model.fc.weight, b.model.fc.weight)
    assert not torch.equal(a.model.fc.weight, load_weights("random", seed=4).model.fc.weight)
