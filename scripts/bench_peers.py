"""Peer runtimes for scripts/bench.py: the same ResNet-18 weights in ONNX Runtime and OpenVINO.

Everything here is optional (`pip install -e ".[bench]"`, plus `nncf` for
OpenVINO int8); a missing runtime makes its builder raise PeerUnavailable
with the reason, and the bench prints it and goes on. Each builder returns a
callable that runs one preprocessed float batch and returns logits as numpy,
so the bench times every runtime the same way.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
from torch import nn

from checkout_cam.model.onnx_backend import export_graph

logger = logging.getLogger(__name__)

Runner = Callable[[np.ndarray], np.ndarray]


class PeerUnavailable(Exception):
    """A peer runtime is not installed or could not build this model; the message says which."""


def export_onnx(model: nn.Module, out: Path, input_size: int = 224) -> Path:
    """fp32 ONNX with a dynamic batch dimension, exported as the product's .onnx backend does."""
    try:
        import onnx  # noqa: F401  (the exporter needs it; say so plainly if it is missing)
        import onnxscript  # noqa: F401
    except ImportError as exc:
        raise PeerUnavailable(f"ONNX export needs `pip install onnx onnxscript` ({exc.name} missing)") from None
    # One file (no external data): ORT's quantizer re-saves it elsewhere.
    return export_graph(model, out, input_size, max_batch=256)


def _ort():
    try:
        import onnxruntime
    except ImportError:
        raise PeerUnavailable("onnxruntime is not installed (`pip install -e \".[bench]\"`)") from None
    return onnxruntime


def ort_runner(onnx_path: Path, threads: int) -> Runner:
    ort = _ort()
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    sess = ort.InferenceSession(str(onnx_path), opts, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name

    def run(x: np.ndarray) -> np.ndarray:
        return sess.run(None, {name: x})[0]
    return run


def ort_quantize(onnx_path: Path, out: Path, calibration: Sequence[np.ndarray]) -> Path:
    """Static QDQ int8, per-channel weights, MinMax calibration on the same images as ours.

    reduce_range=True like torch's x86 qconfig: on AVX2 CPUs without VNNI the
    u8s8 dot product can saturate otherwise (ORT's own quantization guidance).
    """
    _ort()
    from onnxruntime.quantization import (CalibrationDataReader, QuantFormat, QuantType,
                                          quantize_static)
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self):
            self._it = iter(calibration)

        def get_next(self):
            batch = next(self._it, None)
            return None if batch is None else {"input": batch}

    pre = out.with_name(out.stem + "-pre.onnx")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        quant_pre_process(str(onnx_path), str(pre), skip_symbolic_shape=True)
        quantize_static(str(pre), str(out), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                        reduce_range=True, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
    return out


def _ov():
    try:
        import openvino
    except ImportError:
        raise PeerUnavailable("openvino is not installed (`pip install -e \".[bench]\"`)") from None
    return openvino


def ov_model(onnx_path: Path):
    return _ov().convert_model(str(onnx_path))


def ov_quantize(model, calibration: Sequence[np.ndarray]):
    """NNCF post-training quantization (its default CNN preset) on the same images as ours."""
    try:
        import nncf
    except ImportError:
        raise PeerUnavailable("OpenVINO int8 needs NNCF (`pip install nncf`)") from None
    logging.getLogger("nncf").setLevel(logging.ERROR)
    samples = [b[i:i + 1] for b in calibration for i in range(b.shape[0])]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return nncf.quantize(model, nncf.Dataset(samples), subset_size=len(samples))


def ov_runner(model, threads: int, batch: int, input_size: int = 224) -> Runner:
    """Compiled for one static batch size: OpenVINO's CPU plugin is fastest with static shapes."""
    ov = _ov()
    model = model.clone()
    model.reshape({model.inputs[0]: [batch, 3, input_size, input_size]})
    compiled = ov.Core().compile_model(model, "CPU", {
        "PERFORMANCE_HINT": "LATENCY", "INFERENCE_NUM_THREADS": threads,
        # fp32 for what is not quantized: bf16 would be a different model (and this CPU lacks it).
        "INFERENCE_PRECISION_HINT": "f32"})
    request = compiled.create_infer_request()

    def run(x: np.ndarray) -> np.ndarray:
        return request.infer({0: x})[0]
    return run
