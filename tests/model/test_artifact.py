import zipfile

import pytest
import torch

from checkout_cam.errors import ModelFileError
from checkout_cam.images import read_image
from checkout_cam.model import load_artifact, open_classifier, read_meta
from checkout_cam.model.artifact import ArtifactMeta, save_artifact
from checkout_cam.preprocess import Preprocessor


def test_random_artifact_reloads_with_its_metadata(random_artifact):
    module, meta = load_artifact(random_artifact)
    assert meta.arch == "resnet18" and meta.num_classes == 1000
    assert meta.trained is False and meta.weights_source == "random:seed=0"
    assert meta.torch_version == torch.__version__
    assert meta.input_size == 224 and meta.mean == [0.485, 0.456, 0.406]
    assert read_meta(random_artifact) == meta
    assert module(torch.zeros(2, 3, 224, 224)).shape == (2, 1000)


def test_trace_matches_eager_on_real_images(random_artifact, random_weights, grocery_images):
    module, _ = load_artifact(random_artifact)
    batch = Preprocessor()([read_image(p) for p in grocery_images])
    with torch.no_grad():
        eager = random_weights.model(batch)
        traced = module(batch)
    assert (eager - traced).abs().max().item() <= 1e-4


def test_classifier_gives_topk_softmax(random_artifact, grocery_images):
    clf = open_classifier(random_artifact)
    images = [read_image(p) for p in grocery_images[:3]]
    results = clf.classify(images, k=3)
    assert len(results) == 3
    for r in results:
        assert len(r.top) == 3
        assert 0 < r.best.prob <= 1 and r.best.label == clf.labels[r.best.index]
    probs = clf.probabilities(images)
    assert torch.allclose(probs.sum(1), torch.ones(3), atol=1e-5)
    assert clf.info() == {"name": "random", "sha256": clf.sha256, "trained": False}


def test_label_count_must_match_outputs(tmp_path, random_weights):
    meta = ArtifactMeta(name="x", arch="resnet18", labels=["a", "b"], weights_source="random:seed=0",
                        weights_sha256=None, trained=False)
    with pytest.raises(ModelFileError, match="1000 outputs but 2 labels"):
        save_artifact(random_weights.model, meta, tmp_path / "x.pt")
    assert not (tmp_path / "x.pt").exists()


def test_bad_model_files_are_one_clear_error(tmp_path, random_artifact, random_weights):
    with pytest.raises(ModelFileError, match="model file not found: .*export-model"):
        load_artifact(tmp_path / "missing.pt")
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a model at all")
    with pytest.raises(ModelFileError, match="not a model artifact"):
        load_artifact(junk)
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(random_artifact.read_bytes()[: 1_000_000])
    with pytest.raises(ModelFileError, match="not a model artifact|corrupt"):
        load_artifact(truncated)
    ckpt = tmp_path / "state.pt"
    torch.save(random_weights.model.state_dict(), ckpt)
    with pytest.raises(ModelFileError, match="PyTorch checkpoint, not a model artifact.*export-model --weights"):
        load_artifact(ckpt)
    plain = tmp_path / "plain.pt"
    torch.jit.save(torch.jit.script(torch.nn.Identity()), plain)
    with pytest.raises(ModelFileError, match="without checkout_cam metadata"):
        load_artifact(plain)
    foreign = tmp_path / "foreign.pt"
    with zipfile.ZipFile(random_artifact) as src, zipfile.ZipFile(foreign, "w") as dst:
        for item in src.namelist():
            data = src.read(item)
            if item.endswith("extra/checkout_cam.json"):
                data = b'{"format": "something-else/9"}'
            dst.writestr(item, data)
    with pytest.raises(ModelFileError, match="metadata format 'something-else/9'"):
        load_artifact(foreign)


def test_damaged_weights_are_an_error_naming_the_file(random_artifact, tmp_path):
    damaged = tmp_path / "damaged.pt"
    data = bytearray(random_artifact.read_bytes())
    middle = len(data) // 2
    data[middle:middle + (1 << 20)] = b"\x55" * (1 << 20)  # 1 MiB of the weights overwritten
    damaged.write_bytes(bytes(data))
    assert read_meta(damaged).labels  # the metadata is intact: only a CRC check sees the damage
    with pytest.raises(ModelFileError, match=r"damaged\.pt is damaged: its part .* fails its CRC check"):
        open_classifier(damaged)


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o027, 0o640), (0o077, 0o600)])
def test_artifacts_get_the_umask_mode(random_weights, tmp_path, umask, mode):
    import os
    meta = ArtifactMeta(name="m", arch="resnet18", labels=random_weights.labels,
                        weights_source=random_weights.source, weights_sha256=None, trained=False)
    old = os.umask(umask)
    try:
        out = save_artifact(random_weights.model, meta, tmp_path / "m.pt")
    finally:
        os.umask(old)
    assert out.stat().st_mode & 0o777 == mode


def test_a_model_this_user_cannot_read_says_permission_denied(random_artifact, tmp_path, monkeypatch):
    import builtins
    import os
    from checkout_cam.model import artifact
    locked = tmp_path / "locked.pt"
    locked.write_bytes(random_artifact.read_bytes())
    locked.chmod(0o000)
    if os.geteuid() == 0:  # root reads every file: make open() answer as it does for the service user
        real_open = builtins.open

        def denying_open(file, *args, **kwargs):
            if str(file) == str(locked):
                raise PermissionError(13, "Permission denied", str(file))
            return real_open(file, *args, **kwargs)
        monkeypatch.setattr(artifact, "open", denying_open, raising=False)
    with pytest.raises(ModelFileError, match=r"locked\.pt: permission denied: this user .* cannot read") as exc:
        read_meta(locked)
    assert "corrupt" not in str(exc.value)
