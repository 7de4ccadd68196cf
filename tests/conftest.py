"""Shared fixtures: a seeded random-weight artifact and the real data beside the checkout."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
GROCERY = SHARED_DATA / "grocery"
VIDEOS = SHARED_DATA / "videos"

# Tests never download weights.
os.environ["CHECKOUT_CAM_OFFLINE"] = "1"


def _need(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"real data not found at {path} (../shared/data beside the checkout; see its README)")
    return path


@pytest.fixture(scope="session")
def grocery() -> Path:
    return _need(GROCERY)


@pytest.fixture(scope="session")
def videos() -> Path:
    return _need(VIDEOS)


@pytest.fixture(scope="session")
def grocery_images(grocery) -> list[Path]:
    """A fixed handful of real store photos, one per fine class, in a stable order."""
    lines = (grocery / "val.txt").read_text().splitlines()
    seen, out = set(), []
    for line in lines:
        rel, fine = [s.strip() for s in line.split(",")[:2]]
        if fine not in seen:
            seen.add(fine)
            out.append(grocery / rel)
    return out[:8]


@pytest.fixture(scope="session")
def random_weights():
    from checkout_cam.model.weights import random_weights as make
    return make(seed=0)


@pytest.fixture(scope="session")
def random_artifact(tmp_path_factory, random_weights) -> Path:
    """An UNTRAINED ResNet-18 artifact (seed 0), exported once per test session."""
    from checkout_cam.model.artifact import ArtifactMeta, save_artifact
    out = tmp_path_factory.mktemp("models") / "random.pt"
    meta = ArtifactMeta(name="random", arch="resnet18", labels=random_weights.labels,
                        weights_source=random_weights.source, weights_sha256=None, trained=False)
    save_artifact(random_weights.model, meta, out)
    return out


@pytest.fixture(scope="session")
def clips(videos, tmp_path_factory):
    """Made-with-ffmpeg test clips (tests/helpers/clips.py): name -> path."""
    from tests.helpers import clips as c
    d = tmp_path_factory.mktemp("clips")
    return {
        "vfr": c.make_vfr(videos / "cup.mp4", d / "vfr.mp4"),
        "lying_avi": c.make_lying_avi(videos / "cup.mp4", d / "lie.avi"),
        "damaged": c.make_damaged(videos / "box.mp4", d / "damaged.mp4"),
        "truncated": c.make_truncated(videos / "box.mp4", d / "truncated.mp4"),
        "resized": c.make_resized(videos / "cup.mp4", d / "resized.ts", d),
    }


@pytest.fixture(scope="session")
def lane_video(videos, grocery, tmp_path_factory):
    """A composed checkout lane (scripts/lane_truth.py): 4 s empty, then a grocery product every 2.7 s
    for 24 s; looped, a serve lane with many real item events (box.mp4 and cup.mp4 show one item each)."""
    import importlib.util
    import sys
    spec = importlib.util.spec_from_file_location("checkout_cam_lane_truth", REPO / "scripts" / "lane_truth.py")
    lt = sys.modules.get(spec.name)
    if lt is None:
        lt = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = lt
        spec.loader.exec_module(lt)
    out = tmp_path_factory.mktemp("lane") / "lane.mp4"
    photos, _ = lt.product_photos(grocery, 10)
    lt.compose(lt.busy_lane(), lt.counter_background(videos), photos, out)
    return out
