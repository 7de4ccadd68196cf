"""The one small interface the pipeline uses to run a model, whatever runtime is behind it.

A backend implements ``logits(batch)``; preprocessing, softmax and top-k are
shared here. ``open_classifier`` picks the backend from the file, so another
runtime (ONNX Runtime, OpenVINO, torch.export) slots in by registering a
suffix, without touching the pipeline.
"""

from __future__ import annotations

import contextlib
import logging
import os
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from checkout_cam.model.artifact import ArtifactMeta, file_sha256, load_artifact, quiet_jit_deprecation, read_meta
from checkout_cam.preprocess import Preprocessor
from checkout_cam.results import Classification, Prediction

logger = logging.getLogger(__name__)


class Classifier(ABC):
    """Images in (BGR uint8), per image the top-k labels with softmax probabilities out."""

    def __init__(self, meta: ArtifactMeta, sha256: str, roi: Sequence[float] | None = None):
        self.meta = meta
        self.sha256 = sha256
        self.preprocess = Preprocessor(resize=meta.resize_size, crop=meta.input_size,
                                       mean=tuple(meta.mean), std=tuple(meta.std),
                                       roi=tuple(roi) if roi is not None else None)

    @abstractmethod
    def logits(self, batch: torch.Tensor) -> torch.Tensor:
        """Normalized float batch (N, 3, S, S) -> logits (N, classes)."""

    @property
    def name(self) -> str:
        return self.meta.name

    @property
    def labels(self) -> list[str]:
        return self.meta.labels

    @property
    def trained(self) -> bool:
        return self.meta.trained

    def info(self) -> dict:
        """What an event log records about the model that made a decision."""
        return {"name": self.meta.name, "sha256": self.sha256, "trained": self.meta.trained}

    def probabilities(self, images: Sequence[np.ndarray]) -> torch.Tensor:
        return self.batch_probabilities(self.preprocess(images))

    def batch_probabilities(self, batch: torch.Tensor) -> torch.Tensor:
        """Softmax over an already preprocessed batch (the pipeline preprocesses in the capture thread)."""
        with torch.inference_mode():
            return torch.softmax(self.logits(batch).float(), dim=1)

    def infer(self, batch: torch.Tensor, k: int = 3) -> list[Classification]:
        return self.top_k(self.batch_probabilities(batch), k)

    def top_k(self, probs: torch.Tensor, k: int = 3) -> list[Classification]:
        """Rows of probabilities -> Classification per row."""
        k = min(k, probs.shape[1])
        values, indices = torch.topk(probs, k, dim=1)
        labels = self.meta.labels
        return [Classification(tuple(Prediction(int(i), labels[int(i)], float(v))
                                     for v, i in zip(vals.tolist(), idx.tolist())))
                for vals, idx in zip(values, indices)]

    def classify(self, images: Sequence[np.ndarray], k: int = 3) -> list[Classification]:
        if len(images) == 0:
            return []
        return self.top_k(self.probabilities(images), k)


class TorchScriptClassifier(Classifier):
    """The default backend: a traced, frozen TorchScript artifact.

    fp32 artifacts are passed through ``torch.jit.optimize_for_inference`` after
    loading (conv+bn/relu/add fusion, oneDNN-prepacked weights): about 1.2x at
    batch 1 and 1.5x at batch 8 over the frozen module (scripts/bench.py,
    fp32_variants). It happens here, not at export, because a module saved after
    that pass does not load back ("required keyword attribute 'value' is
    undefined"). int8 graphs gain nothing from it and are run as saved (their
    weights packed for the engine ``quantize.int8_loading`` chooses).
    """

    def __init__(self, path: str | Path, roi: Sequence[float] | None = None, optimize: bool = True):
        loading = contextlib.nullcontext()
        if read_meta(path).precision == "int8":
            from checkout_cam.model.quantize import int8_loading
            loading = int8_loading()
        with loading:
            module, meta = load_artifact(path)
        super().__init__(meta, file_sha256(path), roi)
        self.optimized = False
        if optimize and meta.precision == "fp32":
            module = self._optimize(module, path)
        self.module = module

    def _optimize(self, module: torch.jit.ScriptModule, path: str | Path) -> torch.jit.ScriptModule:
        try:
            with quiet_jit_deprecation():
                optimized = torch.jit.optimize_for_inference(module)
        except Exception as exc:  # an unusual graph the pass cannot take: the frozen module still runs
            logger.debug("%s: optimize_for_inference failed (%s: %s); running the frozen module as saved",
                         path, type(exc).__name__, str(exc).strip().splitlines()[0][:200] if str(exc).strip() else "")
            return module
        self.optimized = True
        return optimized

    def logits(self, batch: torch.Tensor) -> torch.Tensor:
        return self.module(batch)


BACKENDS: dict[str, Callable[..., Classifier]] = {".pt": TorchScriptClassifier}


def set_threads(threads: int) -> None:
    """0 keeps torch's own choice (one per physical core)."""
    if threads > 0:
        torch.set_num_threads(threads)
    logger.debug("torch threads: %d (cpu count %s)", torch.get_num_threads(), os.cpu_count())


def open_classifier(path: str | Path, roi: Sequence[float] | None = None, threads: int = 0) -> Classifier:
    """Load a model file with the backend its suffix names (.pt = TorchScript)."""
    set_threads(threads)
    backend = BACKENDS.get(Path(path).suffix.lower(), TorchScriptClassifier)
    clf = backend(path, roi=roi)
    if not clf.trained:
        logger.warning("model %s is UNTRAINED (%s): its labels are meaningless", clf.name,
                       clf.meta.weights_source)
    return clf
