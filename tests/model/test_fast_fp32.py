import logging

import torch

from checkout_cam.images import read_image
from checkout_cam.model import TorchScriptClassifier, open_classifier


def test_loaded_fp32_is_optimized_and_matches_eager(random_artifact, random_weights, grocery_images):
    clf = open_classifier(random_artifact)
    assert clf.optimized
    images = [read_image(p) for p in grocery_images]
    batch = clf.preprocess(images)
    with torch.inference_mode():
        eager = random_weights.model(batch)
        # Batch sizes other than the traced one, and one image alone.
        for x, ref in ((batch, eager), (batch[:3], eager[:3]), (batch[:1], eager[:1])):
            assert (clf.logits(x) - ref).abs().max().item() <= 1e-4
    plain = TorchScriptClassifier(random_artifact, optimize=False)
    assert not plain.optimized
    with torch.inference_mode():
        assert (plain.logits(batch) - eager).abs().max().item() <= 1e-4


def test_fp32_runs_on_onednn_graph_and_leaves_the_global_flag_off(random_artifact):
    clf = open_classifier(random_artifact)
    assert clf.runtime == "onednn_graph"
    assert torch.jit.onednn_fusion_enabled() is False
    # Other TorchScript modules in the process are not affected: optimize_for_inference ones fail
    # to run while the flag is on.
    other = TorchScriptClassifier(random_artifact, fp32_runtime="optimize_for_inference")
    assert other.runtime == "optimize_for_inference"
    x = torch.randn(2, 3, 224, 224)
    with torch.inference_mode():
        assert (other.logits(x) - clf.logits(x)).abs().max().item() <= 1e-4


def test_onednn_graph_failure_falls_back_to_optimize_for_inference(random_artifact, monkeypatch, caplog):
    from checkout_cam.model import classifier

    def broken(module, size):
        raise RuntimeError("no oneDNN Graph here")
    monkeypatch.setattr(classifier, "onednn_graph_compile", broken)
    with caplog.at_level(logging.DEBUG, logger="checkout_cam.model.classifier"):
        clf = open_classifier(random_artifact)
    assert clf.runtime == "optimize_for_inference" and clf.optimized
    assert "oneDNN Graph failed" in caplog.text
    assert clf.classify([torch.zeros(64, 64, 3, dtype=torch.uint8).numpy()], k=2)[0].best.prob > 0


def test_optimization_failure_falls_back_to_the_frozen_module(random_artifact, monkeypatch, caplog):
    from checkout_cam.model import classifier

    def refuse(module, *args):
        raise RuntimeError("required keyword attribute 'value' is undefined")
    monkeypatch.setattr(classifier, "onednn_graph_compile", lambda module, size: False)
    monkeypatch.setattr(torch.jit, "optimize_for_inference", refuse)
    with caplog.at_level(logging.DEBUG, logger="checkout_cam.model.classifier"):
        clf = open_classifier(random_artifact)
    assert not clf.optimized
    assert "optimize_for_inference failed" in caplog.text and "running the frozen module" in caplog.text
    assert clf.classify([torch.zeros(64, 64, 3, dtype=torch.uint8).numpy()], k=2)[0].best.prob > 0
