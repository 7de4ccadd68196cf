"""An optional backend: the same model as an ``.onnx`` file, run by ONNX Runtime.

Why: in scripts/bench.py ONNX Runtime ran our fp32 ResNet-18 at batch 1 in
22.6 ms against 30.7 ms for the optimized TorchScript artifact (same run, 2
cores), and ``torch.jit`` is deprecated in torch 2.14. The file carries the
same metadata JSON as a ``.pt`` artifact (ONNX ``metadata_props``), so labels
and the trained flag can never be separated from the weights. Writing needs
``onnx`` and ``onnxscript`` (torch's exporter), running only ``onnxruntime``:
``pip install -e ".[onnx]"``. fp32 only: INT8 stays the TorchScript artifact.
"""

from __future__ import annotations

import logging
import os
import tempfile
import warnings
from pathlib import Path
from typing import Sequence

import torch
from torch import nn

from checkout_cam.errors import CheckoutCamError, ModelFileError
from checkout_cam.model.artifact import (
    META_FILE, ArtifactMeta, check_format, check_readable, file_sha256, not_found)
from checkout_cam.model.classifier import Classifier

logger = logging.getLogger(__name__)

INSTALL_HINT = 'pip install -e ".[onnx]"'


def export_graph(model: nn.Module, out: str | Path, input_size: int, max_batch: int = 1024) -> Path:
    """The bare fp32 ONNX graph of ``model`` (torch's dynamo exporter) with a dynamic batch dimension."""
    model = model.eval().to(memory_format=torch.contiguous_format)
    x = torch.zeros(1, 3, input_size, input_size)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the exporter's progress chatter and deprecation notes
        torch.onnx.export(model, (x,), str(out), input_names=["input"], output_names=["logits"],
                          dynamic_shapes={"x": {0: torch.export.Dim("batch", min=1, max=max_batch)}},
                          dynamo=True, optimize=True, verbose=False, external_data=False)
    return Path(out)


def save_onnx(model: nn.Module, meta: ArtifactMeta, out: str | Path) -> Path:
    """Export ``model`` (eval, fp32) with ``meta`` embedded; ``save_artifact`` checks labels vs outputs."""
    out = Path(out)
    check_format(out, meta.precision)
    try:
        import onnx
        import onnxscript  # noqa: F401  (torch's exporter needs it; say so before it fails deep inside)
    except ImportError as exc:
        raise CheckoutCamError(f"writing {out} needs {exc.name}: {INSTALL_HINT}") from None
    out.parent.mkdir(parents=True, exist_ok=True)
    # Export and re-save next to the target, then rename: a crash never leaves half a model at `out`.
    with tempfile.TemporaryDirectory(dir=out.parent) as tmp:
        proto = onnx.load(str(export_graph(model, Path(tmp) / "raw.onnx", meta.input_size)))
        del proto.metadata_props[:]
        entry = proto.metadata_props.add()
        entry.key, entry.value = META_FILE, meta.to_json()
        final = Path(tmp) / out.name
        onnx.save(proto, str(final))
        os.replace(final, out)
    logger.info("wrote %s (onnx, %s, %d classes, trained=%s)", out, meta.name, meta.num_classes, meta.trained)
    return out


class OnnxRuntimeClassifier(Classifier):
    """Runs an ``.onnx`` model written by ``save_onnx`` on ONNX Runtime's CPU provider.

    Its threads do not spin while waiting (``allow_spinning`` 0), for the same
    reason torch's OpenMP threads wait passively: the capture thread shares the
    cores. The thread count follows torch's (``model.threads`` in config.yaml).
    """

    def __init__(self, path: str | Path, roi: Sequence[float] | None = None):
        path = Path(path)
        if not path.exists():
            raise not_found(path)
        check_readable(path)
        try:
            import onnxruntime as ort
        except ImportError:
            raise CheckoutCamError(f"{path} is an ONNX model and onnxruntime is not installed: "
                                   f"{INSTALL_HINT}, or use the .pt artifact") from None
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = torch.get_num_threads()
        opts.inter_op_num_threads = 1
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            self.session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        except Exception as exc:  # ORT raises its own exception types for bad or truncated files
            first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
            raise ModelFileError(f"{path} is not a loadable ONNX model ({first})") from None
        text = self.session.get_modelmeta().custom_metadata_map.get(META_FILE)
        if text is None:
            raise ModelFileError(f"{path} is an ONNX file without checkout_cam metadata; make it with "
                                 f"`checkout-cam export-model --out {path.name}`")
        super().__init__(ArtifactMeta.from_json(text, path), file_sha256(path), roi)
        self._input = self.session.get_inputs()[0].name

    def logits(self, batch: torch.Tensor) -> torch.Tensor:
        x = batch.detach().to(torch.float32).contiguous().numpy()
        return torch.from_numpy(self.session.run(None, {self._input: x})[0])
