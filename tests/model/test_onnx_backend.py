"""The optional ONNX Runtime backend: same model, same answers, same pipeline."""

import json

import pytest

from checkout_cam.errors import CheckoutCamError, ModelFileError
from checkout_cam.images import read_image
from checkout_cam.model import OnnxRuntimeClassifier, open_classifier
from checkout_cam.model.artifact import ArtifactMeta, save_artifact

onnx = pytest.importorskip("onnx", reason="the onnx extra is part of .[test]; install it")
pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def random_onnx(tmp_path_factory, random_weights):
    out = tmp_path_factory.mktemp("onnx") / "random.onnx"
    meta = ArtifactMeta(name="random", arch="resnet18", labels=random_weights.labels,
                        weights_source=random_weights.source, weights_sha256=None, trained=False)
    assert save_artifact(random_weights.model, meta, out) == out  # the suffix picks the format
    return out


def test_onnx_model_gives_the_torchscript_answers_on_real_photos(random_onnx, random_artifact, grocery_images):
    images = [read_image(p) for p in grocery_images]
    ours, theirs = open_classifier(random_artifact), open_classifier(random_onnx)
    assert isinstance(theirs, OnnxRuntimeClassifier)
    assert theirs.labels == ours.labels and theirs.trained is False and theirs.meta.precision == "fp32"
    p_pt, p_onnx = ours.probabilities(images), theirs.probabilities(images)
    assert (p_pt - p_onnx).abs().max().item() < 1e-4
    assert [c.best.label for c in ours.classify(images)] == [c.best.label for c in theirs.classify(images)]
    assert theirs.info()["sha256"] != ours.info()["sha256"]  # logs tell the two files apart


def test_replay_runs_the_onnx_model_unchanged(random_onnx, random_artifact, videos, tmp_path):
    from checkout_cam.config import Config, override
    from checkout_cam.modes.replay import run_replay
    logs = {}
    for model in (random_artifact, random_onnx):
        cfg = override(override(Config(), "model.path", str(model)), "source.uri", str(videos / "cup.mp4"))
        logs[model.suffix] = tmp_path / f"{model.suffix[1:]}.jsonl"
        assert run_replay(cfg, log=logs[model.suffix], progress=False).frames == 217
    key = lambda e: (e["label"], e["frame_start"], e["frame_end"], e["review"])
    events = {k: [key(json.loads(line)) for line in p.read_text().splitlines()] for k, p in logs.items()}
    assert events[".pt"] and events[".onnx"] == events[".pt"]


def test_onnx_without_metadata_or_garbage_is_named(random_onnx, tmp_path):
    proto = onnx.load(str(random_onnx))
    del proto.metadata_props[:]
    bare = tmp_path / "bare.onnx"
    onnx.save(proto, str(bare))
    with pytest.raises(ModelFileError, match="bare.onnx is an ONNX file without checkout_cam metadata"):
        open_classifier(bare)
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"not a model")
    with pytest.raises(ModelFileError, match="junk.onnx is not a loadable ONNX model"):
        open_classifier(junk)
    with pytest.raises(ModelFileError, match="model file not found"):
        open_classifier(tmp_path / "missing.onnx")


def test_int8_is_refused_as_onnx(random_weights, grocery, tmp_path):
    from checkout_cam.model.quantize import save_int8_artifact
    meta = ArtifactMeta(name="r", arch="resnet18", labels=random_weights.labels,
                        weights_source="random", weights_sha256=None, trained=False)
    with pytest.raises(CheckoutCamError, match="int8 models are TorchScript artifacts"):
        save_int8_artifact(random_weights.model, meta, tmp_path / "m.onnx", grocery / "train.txt")
    assert not (tmp_path / "m.onnx").exists()


def test_finetune_refuses_int8_onnx_before_training(grocery, tmp_path, capsys):
    from checkout_cam.cli import main
    rc = main(["finetune", "--train", str(grocery / "train.txt"), "--classes", str(grocery / "classes.csv"),
               "--out", str(tmp_path / "m.onnx"), "--precision", "int8", "--epochs", "1", "--no-progress"])
    assert rc != 0
    assert "int8 models are TorchScript artifacts" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())  # nothing trained, nothing written


def test_damaged_onnx_weights_are_an_error_naming_the_file(random_onnx, tmp_path):
    from checkout_cam.model.onnx_backend import verify_checksum
    assert verify_checksum(random_onnx) is True
    data = bytearray(random_onnx.read_bytes())
    middle = len(data) // 2
    data[middle:middle + (1 << 20)] = b"\x55" * (1 << 20)  # 1 MiB of the weights overwritten
    damaged = tmp_path / "damaged.onnx"
    damaged.write_bytes(bytes(data))
    with pytest.raises(ModelFileError, match=r"damaged\.onnx is damaged"):
        open_classifier(damaged)


def test_onnx_files_get_the_umask_mode(random_onnx):
    import os
    mask = os.umask(0o022)
    os.umask(mask)
    assert random_onnx.stat().st_mode & 0o777 == 0o666 & ~mask
