import logging

import cv2
import numpy as np
import pytest
import torch
from torch import nn

from checkout_cam.images import read_image
from checkout_cam.model import open_classifier, read_meta
from checkout_cam.model.artifact import ArtifactMeta
from checkout_cam.model.quantize import (CalibrationBatches, CalibrationError, find_calibration_images,
                                         quantize_int8, save_int8_artifact)
from checkout_cam.preprocess import Preprocessor


def _write_images(folder, n, size=(40, 30)):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    paths = []
    for i in range(n):
        p = folder / f"img{i:02d}.png"
        cv2.imwrite(str(p), rng.integers(0, 256, (*size, 3), dtype=np.uint8))
        paths.append(p)
    return paths


def _meta(weights, name="random"):
    return ArtifactMeta(name=name, arch="resnet18", labels=weights.labels, weights_source=weights.source,
                        weights_sha256=None, trained=False)


@pytest.fixture(scope="session")
def calibration_list(tmp_path_factory, grocery):
    """A list file in the grocery format (`path, fine_id, coarse_id`) naming 8 train photos."""
    lines = (grocery / "train.txt").read_text().splitlines()[::330][:8]
    out = tmp_path_factory.mktemp("cal") / "cal.txt"
    out.write_text("\n".join(f"{grocery / ln.split(',')[0].strip()}, 0, 0" for ln in lines) + "\n")
    return out


@pytest.fixture(scope="session")
def int8_artifact(tmp_path_factory, random_weights, calibration_list):
    out = tmp_path_factory.mktemp("models") / "random-int8.pt"
    save_int8_artifact(random_weights.model, _meta(random_weights, "random-int8"), out, calibration_list,
                       progress=False)
    return out


def test_int8_artifact_loads_with_int8_metadata(int8_artifact, calibration_list):
    meta = read_meta(int8_artifact)
    assert meta.precision == "int8" and meta.trained is False and meta.num_classes == 1000
    cal = meta.extra["calibration"]
    assert cal["n_images"] == 8 and cal["found"] == 8 and cal["backend"] == "x86"
    assert cal["source"] == str(calibration_list.resolve()) and len(cal["sha256"]) == 64
    clf = open_classifier(int8_artifact)
    assert clf.meta.precision == "int8"
    # The graph really is quantized, not the fp32 model under an int8 label.
    graph = str(clf.module.inlined_graph)
    assert "quantized::conv2d" in graph
    # ... except the classifier head, kept fp32 so near-ties do not flip on 8-bit logits.
    assert "quantized::linear" not in graph and "aten::linear" in graph


def test_int8_fuses_residual_adds_and_runs_on_onednn_kernels(int8_artifact, grocery_images, monkeypatch):
    meta = read_meta(int8_artifact)
    assert meta.extra["int8"]["kernels"] == "onednn"
    monkeypatch.setattr(torch.backends.quantized, "engine", "x86")   # what a fresh process starts with
    clf = open_classifier(int8_artifact)
    # Each residual add and its relu are part of the conv before it: no separate requantized add.
    graph = str(clf.module.inlined_graph)
    assert graph.count("quantized::conv2d_add_relu") == 8 and "quantized::add_relu" not in graph
    # That op exists only in the onednn engine and reads the global engine on every call.
    assert torch.backends.quantized.engine == "onednn"
    x = clf.preprocess([read_image(p) for p in grocery_images[:4]])
    with torch.inference_mode():
        assert torch.isfinite(clf.logits(x)).all()


def test_int8_refuses_kernels_this_torch_lacks(int8_artifact, tmp_path):
    import dataclasses
    from checkout_cam.errors import ModelFileError
    from checkout_cam.model.quantize import check_int8_cpu
    meta = read_meta(int8_artifact)
    other = dataclasses.replace(meta, extra={**meta.extra, "int8": {**meta.extra["int8"], "kernels": "qnnpack-x"}})
    with pytest.raises(ModelFileError, match="made for torch's 'qnnpack-x' quantized kernels, which this torch "
                                             "build lacks"):
        check_int8_cpu(other, tmp_path / "m.pt")


def test_int8_follows_fp32_on_real_photos(int8_artifact, random_artifact, random_weights, grocery_images):
    images = [read_image(p) for p in grocery_images]
    int8, fp32 = open_classifier(int8_artifact), open_classifier(random_artifact)
    batch = fp32.preprocess(images)
    with torch.inference_mode():
        a, b = fp32.logits(batch), int8.logits(batch)
    assert a.shape == b.shape == (len(images), 1000)
    # A random-weight model's top-1 is a near tie, so agreement is no test here; the logits
    # must still point the same way (an uncalibrated or broken int8 graph scores far lower).
    assert nn.functional.cosine_similarity(a, b).min() > 0.9
    results = int8.classify(images[:2], k=3)
    assert [len(r.top) for r in results] == [3, 3]
    assert all(r.best.label == int8.labels[r.best.index] for r in results)
    # The caller's fp32 model is not touched by quantization.
    assert isinstance(random_weights.model.conv1, nn.Conv2d)
    assert random_weights.model.conv1.weight.dtype == torch.float32


def test_calibration_sets_from_folder_and_list(tmp_path, monkeypatch):
    paths = _write_images(tmp_path / "photos" / "shelf", 6) + _write_images(tmp_path / "photos" / "top", 6)
    (tmp_path / "photos" / "notes.txt").write_text("not an image")
    cal = find_calibration_images(tmp_path / "photos", max_images=0)
    assert cal.paths == sorted(paths) and cal.found == 12
    capped = find_calibration_images(tmp_path / "photos", max_images=5, seed=3)
    assert len(capped.paths) == 5 and set(capped.paths) <= set(paths)
    assert capped == find_calibration_images(tmp_path / "photos", max_images=5, seed=3)
    assert capped.paths != find_calibration_images(tmp_path / "photos", max_images=5, seed=4).paths
    listing = tmp_path / "list.txt"
    listing.write_text("# path, class\nphotos/shelf/img01.png, 3\n\nphotos/top/img02.png, 1, 0\n")
    assert find_calibration_images(listing).paths == [paths[1], paths[8]]
    # The recorded fingerprint names files relative to the source, wherever the command ran.
    monkeypatch.chdir(tmp_path)
    relative = find_calibration_images("photos", max_images=0)
    assert relative.describe(relative.paths) == cal.describe(cal.paths)


def test_bad_calibration_sources_are_clear_errors(tmp_path):
    with pytest.raises(CalibrationError, match="calibration source not found"):
        find_calibration_images(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CalibrationError, match="no images found"):
        find_calibration_images(tmp_path / "empty")
    one = _write_images(tmp_path / "one", 1)[0]
    with pytest.raises(CalibrationError, match="is one image"):
        find_calibration_images(one)
    listing = tmp_path / "list.txt"
    listing.write_text("one/img00.png, 0\none/missing.png, 0\n")
    with pytest.raises(CalibrationError, match="1 of 2 listed images do not exist.*missing.png"):
        find_calibration_images(listing)


def test_unreadable_calibration_images_are_skipped(tmp_path, caplog):
    good = _write_images(tmp_path / "photos", 3)
    (tmp_path / "photos" / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    cal = find_calibration_images(tmp_path / "photos")
    batches = CalibrationBatches(cal, Preprocessor(resize=36, crop=32), batch_size=2, progress=False)
    with caplog.at_level(logging.WARNING):
        shapes = [tuple(b.shape) for b in batches]
    assert shapes == [(2, 3, 32, 32), (1, 3, 32, 32)]
    assert batches.used == sorted(good)
    assert "broken.jpg" in caplog.text
    described = cal.describe(batches.used)
    assert described["n_images"] == 3 and described["found"] == 4
    assert described["sha256"] != cal.describe(batches.used[:2])["sha256"]


def test_quantize_needs_calibration_images(random_weights):
    with pytest.raises(CalibrationError, match="no calibration image"):
        quantize_int8(random_weights.model, [], input_size=224)
    with pytest.raises(CalibrationError, match=r"shape \(2, 3, 32, 32\)"):
        quantize_int8(random_weights.model, [torch.zeros(2, 3, 32, 32)], input_size=224)


def test_a_lanes_int8_model_gets_one_thread_where_int8_is_fast(int8_artifact, random_artifact, tmp_path, caplog,
                                                               monkeypatch):
    from checkout_cam.cpu import parse_cpuinfo
    from checkout_cam.model.classifier import lane_threads
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    vnni = parse_cpuinfo("model name\t: VNNI box\nflags\t\t: avx2 avx512f avx512_vnni\n")
    avx2 = parse_cpuinfo("model name\t: AVX2 box\nflags\t\t: avx2 fma\n")
    with caplog.at_level(logging.INFO, logger="checkout_cam.model.classifier"):
        assert lane_threads(int8_artifact, 0, vnni) == 1
    assert "int8 model on a lane with VNNI: 1 torch thread" in caplog.text
    assert lane_threads(int8_artifact, 0, avx2) == 0          # int8 is 3x the work there: two threads win
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    assert lane_threads(int8_artifact, 0, vnni) == 0          # oneDNN capped below VNNI: the same
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA")
    assert lane_threads(int8_artifact, 2, vnni) == 2          # the user's setting wins
    assert lane_threads(random_artifact, 0, vnni) == 0        # fp32: torch's choice (two threads are faster)
    assert lane_threads(tmp_path / "missing.pt", 0, vnni) == 0   # open_classifier reports the missing file
    assert lane_threads(tmp_path / "model.onnx", 0, vnni) == 0   # ONNX Runtime: not torch's threads
