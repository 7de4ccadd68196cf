"""The model runtime: artifacts on disk, weights they are built from, and the classifier interface."""

from checkout_cam.model.artifact import ArtifactMeta, load_artifact, read_meta, save_artifact
from checkout_cam.model.classifier import BACKENDS, Classifier, TorchScriptClassifier, open_classifier
from checkout_cam.model.onnx_backend import OnnxRuntimeClassifier

# The optional backend registers here, not in classifier.py, which it builds on. onnxruntime
# itself is imported only when an .onnx file is opened.
BACKENDS[".onnx"] = OnnxRuntimeClassifier

__all__ = ["ArtifactMeta", "BACKENDS", "Classifier", "OnnxRuntimeClassifier", "TorchScriptClassifier",
           "load_artifact", "open_classifier", "read_meta", "save_artifact"]
