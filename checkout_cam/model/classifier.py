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
import threading
import time
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


# torch.jit.enable_onednn_fusion is process-wide; it is switched on only while a module compiles.
_ONEDNN_FLAG_LOCK = threading.Lock()


def onednn_graph_compile(module: torch.jit.ScriptModule, input_size: int, runs: int = 3) -> bool:
    """Compile a frozen fp32 module with oneDNN Graph fusion for batch-1 input; True when it took.

    The profiling executor specializes the graph on its first runs; running it with the fusion flag
    on makes that specialization oneDNN Graph partitions (conv + bias + relu/add fused, weights
    packed once into the kernels' own layout and cached). The flag is restored afterwards: the plan
    stays with the module, and other modules (e.g. an optimize_for_inference one, which fails
    under the flag) are unaffected. Only batch-1 calls use this plan; other shapes would take the
    unfused path, so callers split batches.
    """
    enable = getattr(torch.jit, "enable_onednn_fusion", None)
    if enable is None or not torch.backends.mkldnn.is_available():
        return False
    x = torch.zeros(1, 3, input_size, input_size)
    with _ONEDNN_FLAG_LOCK, quiet_jit_deprecation():
        before = torch.jit.onednn_fusion_enabled()
        enable(True)
        try:
            with torch.inference_mode():
                for _ in range(runs):
                    module(x)
            graph = torch.jit.last_executed_optimized_graph()
        finally:
            enable(before)
    return "prim::oneDNNFusionGroup" in str(graph)


class TorchScriptClassifier(Classifier):
    """The default backend: a traced, frozen TorchScript artifact.

    fp32 artifacts are compiled after loading with oneDNN Graph fusion
    (``onednn_graph_compile``), and batches run image by image on that plan.
    Why: ``torch.jit.optimize_for_inference`` (used before, and still the fallback)
    packs conv weights in a layout other than the one the convolution kernel it
    later picks wants, so oneDNN re-orders all 11 M weights on every call: 9 of
    its 32 CPU-ms per image at batch 1 on an AVX-512 Xeon, where ONNX Runtime
    spends 21 (scripts/bench.py, fp32_variants: ``fp32 runtimes``). With oneDNN
    Graph the weights are packed once and conv+relu/add fuse: about 22 CPU-ms at
    batch 1, and the same per image as the old path's batch 8. Neither pass is
    applied before saving, because a module saved after them does not load back.
    int8 graphs gain nothing from either and are run as saved (their weights
    packed for the engine ``quantize.int8_loading`` chooses).
    """

    def __init__(self, path: str | Path, roi: Sequence[float] | None = None, optimize: bool = True,
                 fp32_runtime: str = "auto"):
        loading = contextlib.nullcontext()
        first = read_meta(path)
        if first.precision == "int8":
            from checkout_cam.model.quantize import check_int8_cpu, int8_loading, use_int8_kernels
            check_int8_cpu(first, path)   # before loading: never run saturating int8 silently
            loading = int8_loading()
        with loading:
            module, meta = load_artifact(path)
        if meta.precision == "int8":
            use_int8_kernels(meta)
        super().__init__(meta, file_sha256(path), roi)
        self.runtime = "as saved"      # or "onednn_graph", "optimize_for_inference"
        if optimize and meta.precision == "fp32":
            module = self._optimize(module, path, fp32_runtime)
        self.module = module

    @property
    def optimized(self) -> bool:
        return self.runtime != "as saved"

    def _optimize(self, module: torch.jit.ScriptModule, path: str | Path, runtime: str) -> torch.jit.ScriptModule:
        if runtime in ("auto", "onednn_graph"):
            t0 = time.monotonic()
            try:
                if onednn_graph_compile(module, self.meta.input_size):
                    self.runtime = "onednn_graph"
                    logger.debug("%s: compiled with oneDNN Graph in %.2f s", path, time.monotonic() - t0)
                    return module
                logger.debug("%s: oneDNN Graph fused nothing; using optimize_for_inference", path)
            except Exception as exc:  # a torch without it, or a graph it cannot take
                logger.debug("%s: oneDNN Graph failed (%s: %s); using optimize_for_inference", path,
                             type(exc).__name__, _first_line(exc))
            # The module has been specialized (unfused); reload it for a clean optimize pass.
            module, _ = load_artifact(path)
        try:
            with quiet_jit_deprecation():
                optimized = torch.jit.optimize_for_inference(module)
        except Exception as exc:  # an unusual graph the pass cannot take: the frozen module still runs
            logger.debug("%s: optimize_for_inference failed (%s: %s); running the frozen module as saved",
                         path, type(exc).__name__, _first_line(exc))
            return module
        self.runtime = "optimize_for_inference"
        return optimized

    def logits(self, batch: torch.Tensor) -> torch.Tensor:
        if self.runtime == "onednn_graph" and batch.shape[0] > 1:
            # The compiled plan is for one image; per image it costs what a batch of 8 did before.
            return torch.cat([self.module(batch[i:i + 1]) for i in range(batch.shape[0])])
        return self.module(batch)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:200] if text else ""


BACKENDS: dict[str, Callable[..., Classifier]] = {".pt": TorchScriptClassifier}


def set_threads(threads: int) -> None:
    """0 keeps torch's own choice (one per physical core)."""
    if threads > 0:
        torch.set_num_threads(threads)
    logger.debug("torch threads: %d (cpu count %s)", torch.get_num_threads(), os.cpu_count())


def lane_threads(path: str | Path, threads: int, cpu=None) -> int:
    """Torch threads for a lane's model (live, serve): ``threads`` when set (> 0); with 0 (auto) an int8
    TorchScript model on a CPU whose int8 kernels use VNNI gets one thread, anything else torch's
    choice. ``cpu``: a ``cpu.CpuInfo`` (default: this machine's).

    Why: a lane's calls are small (batch 1, or one frame per lane) and spaced by the camera, and
    torch's threads wait passively between calls (checkout_cam/__init__.py). With VNNI an int8 call
    is about 2 ms, so waking a second thread for each of ResNet-18's layers costs more than splitting
    the layer saves, and the process's other threads (capture, decoding, drawing) want that core.
    Without VNNI int8 is about 3x the work and splitting wins. Measured on a 2-core AMX Xeon (README,
    Performance): an int8 call 20 ms after the last, 4.3 ms on one thread vs 5.2 on two; 8
    every-frame lanes in one serve, worst p95 72 vs 81-87 ms and 170-200 vs 370-540 frames dropped;
    with oneDNN capped to AVX2, gated int8 fit 6 lanes on two threads and 4 on one. fp32 is faster
    on two (16 vs 26 ms). A bigger box with many lanes may want more: set model.threads."""
    if threads > 0 or Path(path).suffix.lower() != ".pt":
        return threads
    try:
        precision = read_meta(path).precision
    except Exception:   # open_classifier reports what is wrong with the file
        return threads
    from checkout_cam.model.quantize import int8_vnni
    if precision != "int8" or not int8_vnni(cpu):
        return threads
    logger.info("int8 model on a lane with VNNI: 1 torch thread (model.threads: 0 = auto; set it to use more)")
    return 1


def open_classifier(path: str | Path, roi: Sequence[float] | None = None, threads: int = 0) -> Classifier:
    """Load a model file with the backend its suffix names (.pt = TorchScript)."""
    set_threads(threads)
    backend = BACKENDS.get(Path(path).suffix.lower(), TorchScriptClassifier)
    clf = backend(path, roi=roi)
    if not clf.trained:
        logger.warning("model %s is UNTRAINED (%s): its labels are meaningless", clf.name,
                       clf.meta.weights_source)
    return clf
