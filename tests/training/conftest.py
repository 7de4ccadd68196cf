"""Tiny real-photo data sets (3 grocery classes) and one tiny fine-tuned model, made once per session."""

from __future__ import annotations

import contextlib
import shutil
from pathlib import Path

import pytest
import torch

@contextlib.contextmanager
def one_thread():
    """Run tiny networks on one thread, then restore torch's setting.

    On a machine shared with other jobs, two OpenMP threads wait for each other
    at every one of a ResNet's hundreds of small ops: measured 8x slower here
    for 32-pixel images, where there is nothing worth splitting anyway.
    """
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@pytest.fixture(autouse=True)
def one_torch_thread():
    with one_thread():
        yield


CLASSES = {"Banana": "Fruit/Banana", "Arla-Standard-Milk": "Packages/Milk/Arla-Standard-Milk",
           "Cucumber": "Vegetables/Cucumber"}


def _copy_folder(grocery: Path, split: str, per_class: int, dest: Path) -> Path:
    for name, rel in CLASSES.items():
        (dest / name).mkdir(parents=True)
        for src in sorted((grocery / split / rel).glob("*.jpg"))[:per_class]:
            shutil.copy(src, dest / name / src.name)
    return dest


@pytest.fixture(scope="session")
def photo_sets(grocery, tmp_path_factory) -> tuple[Path, Path]:
    """(train, val) class folders: 3 classes x 4 training and x 2 validation photos."""
    root = tmp_path_factory.mktemp("photos")
    return (_copy_folder(grocery, "train", 4, root / "train"),
            _copy_folder(grocery, "val", 2, root / "val"))


@pytest.fixture
def photos(photo_sets, tmp_path) -> tuple[Path, Path]:
    """A private copy of the (train, val) folders, for tests that damage them."""
    train, val = photo_sets
    return shutil.copytree(train, tmp_path / "train"), shutil.copytree(val, tmp_path / "val")


def tiny_recipe(**kw):
    from checkout_cam.training.finetune import Recipe
    base = dict(init="scratch", freeze="none", epochs=1, image_size=32, batch_size=4, lr=0.05,
                weight_decay=5e-4, warmup_epochs=0.0, seed=0)
    base.update(kw)
    return Recipe(**base)


@pytest.fixture(scope="session")
def tiny_model(photo_sets, tmp_path_factory):
    """A 1-epoch, 32-pixel fine-tune on the tiny set: (artifact path, FinetuneResult)."""
    from checkout_cam.training.data import load_labeled
    from checkout_cam.training.finetune import finetune
    train, val = photo_sets
    out = tmp_path_factory.mktemp("tiny") / "tiny.pt"
    with one_thread():
        result = finetune(load_labeled(train), load_labeled(val), tiny_recipe(), out,
                          out.with_suffix(".ckpt"), progress=False, echo=lambda s: None)
    return out, result
