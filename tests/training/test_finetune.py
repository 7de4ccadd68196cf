import numpy as np
import pytest
import torch
from torchvision.models import resnet18

from checkout_cam.images import read_image
from checkout_cam.model import open_classifier, read_meta
from checkout_cam.training import finetune as ft
from checkout_cam.training.data import load_labeled
from checkout_cam.training.finetune import CHECKPOINT_FILE, TrainingError, finetune, load_checkpoint, lr_at
from tests.training.conftest import tiny_recipe

QUIET = dict(progress=False, echo=lambda s: None)


def test_tiny_finetune_makes_a_trained_artifact_that_classifies(tiny_model, photo_sets):
    out, result = tiny_model
    meta = read_meta(out)
    assert meta.trained is True and meta.labels == ["Arla-Standard-Milk", "Banana", "Cucumber"]
    assert meta.input_size == 32 and meta.resize_size == 37
    assert meta.weights_source == "finetune:scratch:seed=0"
    info = meta.extra["finetune"]
    assert info["recipe"]["image_size"] == 32 and info["recipe"]["seed"] == 0
    assert info["data"]["train"]["images"] == 12 and len(info["data"]["train"]["sha256"]) == 64
    assert info["epochs_done"] == 1 and info["best_epoch"] == 1 and len(info["history"]) == 1

    clf = open_classifier(out)
    _, val = photo_sets
    data = load_labeled(val)
    images = [read_image(s.path) for s in data.samples]
    results = clf.classify(images, k=3)
    assert len(results) == 6 and all(r.best.label in meta.labels for r in results)
    # The artifact preprocesses like training validated: its val accuracy is the one recorded.
    hits = [r.best.index == s.label for r, s in zip(results, data.samples)]
    assert np.mean(hits) == pytest.approx(info["val_top1"])


def test_interrupted_run_resumes_where_it_stopped_and_matches_an_uninterrupted_one(photo_sets, tmp_path):
    train, val = (load_labeled(p) for p in photo_sets)
    recipe = tiny_recipe(epochs=2)

    def stop_after_first(record):
        if record.epoch == 1:
            raise KeyboardInterrupt

    out = tmp_path / "r.pt"
    with pytest.raises(KeyboardInterrupt):
        finetune(train, val, recipe, out, tmp_path / "ckpt", on_epoch_end=stop_after_first, **QUIET)
    assert not out.exists()
    ckpt = load_checkpoint(tmp_path / "ckpt" / CHECKPOINT_FILE)
    assert ckpt["epoch"] == 1 and [h["epoch"] for h in ckpt["history"]] == [1]
    assert set(ckpt) >= {"state_dict", "optimizer", "best", "recipe", "labels", "data", "init"}
    assert ckpt["best"]["epoch"] == 1 and ckpt["labels"] == train.classes

    resumed = finetune(train, val, recipe, out, tmp_path / "ckpt", resume=True, **QUIET)
    assert resumed.epochs_run == 1 and resumed.epochs_done == 2 and out.exists()
    assert [h["epoch"] for h in resumed.history] == [1, 2]

    straight = finetune(train, val, recipe, tmp_path / "s.pt", tmp_path / "ckpt2", **QUIET)
    a = load_checkpoint(tmp_path / "ckpt" / CHECKPOINT_FILE)["state_dict"]
    b = load_checkpoint(tmp_path / "ckpt2" / CHECKPOINT_FILE)["state_dict"]
    assert all(torch.allclose(a[k].float(), b[k].float(), atol=1e-5) for k in a)
    assert resumed.history[1]["train_loss"] == pytest.approx(straight.history[1]["train_loss"], abs=1e-4)


def test_ctrl_c_mid_epoch_keeps_the_last_finished_checkpoint(photo_sets, tmp_path, monkeypatch):
    train, val = (load_labeled(p) for p in photo_sets)
    calls = {"n": 0}
    real = ft.TrainAugment.__call__

    def interrupt_in_epoch_two(self, batch, gen):
        calls["n"] += 1
        if calls["n"] == 5:   # 3 steps per epoch: the 2nd step of epoch 2
            raise KeyboardInterrupt
        return real(self, batch, gen)

    monkeypatch.setattr(ft.TrainAugment, "__call__", interrupt_in_epoch_two)
    with pytest.raises(KeyboardInterrupt):
        finetune(train, val, tiny_recipe(epochs=3), tmp_path / "m.pt", tmp_path / "ckpt", **QUIET)
    assert load_checkpoint(tmp_path / "ckpt" / CHECKPOINT_FILE)["epoch"] == 1
    assert [p.name for p in (tmp_path / "ckpt").iterdir()] == [CHECKPOINT_FILE]   # no temp files left


def test_resume_refuses_other_data_and_a_fresh_run_refuses_to_overwrite(photo_sets, tmp_path):
    train, val = (load_labeled(p) for p in photo_sets)
    finetune(train, val, tiny_recipe(), tmp_path / "m.pt", tmp_path / "ckpt", **QUIET)
    with pytest.raises(TrainingError, match="already holds a checkpoint; add --resume"):
        finetune(train, val, tiny_recipe(), tmp_path / "m.pt", tmp_path / "ckpt", **QUIET)
    with pytest.raises(TrainingError, match=r"train data differ"):
        finetune(train.subset(range(9)), val, tiny_recipe(epochs=2), tmp_path / "m.pt", tmp_path / "ckpt",
                 resume=True, **QUIET)
    with pytest.raises(TrainingError, match=r"image_size was 32, now 48"):
        finetune(train, val, tiny_recipe(epochs=2, image_size=48), tmp_path / "m.pt", tmp_path / "ckpt",
                 resume=True, **QUIET)


def _changed(before: dict, after: dict, prefix: str) -> bool:
    return any(not torch.equal(before[k], after[k]) for k in before if k.startswith(prefix))


@pytest.mark.parametrize("freeze, trained_parts, fixed_parts", [
    ("head", [], ["layer4.", "layer1.", "bn1."]),
    ("layer4", ["layer4."], ["layer3.", "conv1."]),
])
def test_freeze_from_a_state_dict(photo_sets, tmp_path, freeze, trained_parts, fixed_parts):
    torch.manual_seed(3)
    init = tmp_path / "init.pth"
    torch.save(resnet18(num_classes=10).state_dict(), init)
    before = torch.load(init, weights_only=True)
    train, val = (load_labeled(p) for p in photo_sets)
    finetune(train, val, tiny_recipe(init=str(init), freeze=freeze, lr=0.01), tmp_path / "m.pt",
             tmp_path / "ckpt", **QUIET)
    after = load_checkpoint(tmp_path / "ckpt" / CHECKPOINT_FILE)["state_dict"]
    assert after["fc.weight"].shape == (3, 512)   # a new head for the 3 classes
    for part in trained_parts:
        assert _changed(before, after, part), part
    for part in fixed_parts:   # weights and BatchNorm running statistics alike
        assert not _changed(before, after, part), part
    assert read_meta(tmp_path / "m.pt").weights_source.startswith("finetune:file:")


def test_scratch_with_a_frozen_backbone_is_refused(photo_sets, tmp_path):
    train, val = (load_labeled(p) for p in photo_sets)
    with pytest.raises(TrainingError, match="--freeze head with --init scratch"):
        finetune(train, val, tiny_recipe(freeze="head"), tmp_path / "m.pt", tmp_path / "c", **QUIET)


def test_learning_rate_schedule():
    assert lr_at(0, 100, 10, 1.0) == pytest.approx(0.1)
    assert lr_at(10, 100, 10, 1.0) == pytest.approx(1.0)
    assert lr_at(55, 100, 10, 1.0) == pytest.approx(0.5)
    assert lr_at(100, 100, 10, 1.0) == pytest.approx(0.0)
    assert lr_at(0, 1, 5, 1.0) == pytest.approx(1.0)   # a warmup longer than the run is cut
