"""The model runtime: artifacts on disk, weights they are built from, and the classifier interface."""

from checkout_cam.model.artifact import ArtifactMeta, load_artifact, read_meta, save_artifact
from checkout_cam.model.classifier import BACKENDS, Classifier, TorchScriptClassifier, open_classifier

__all__ = ["ArtifactMeta", "BACKENDS", "Classifier", "TorchScriptClassifier", "load_artifact",
           "open_classifier", "read_meta", "save_artifact"]
