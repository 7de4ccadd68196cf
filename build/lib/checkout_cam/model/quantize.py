"""INT8 artifacts: static post-training quantization calibrated on the store's own photos.

FX graph mode PTQ with the x86 backend (per-channel symmetric int8 weights,
histogram-calibrated uint8 activations; conv+bn+relu fused; the final Linear
layer kept fp32), then traced and frozen into the same one-file TorchScript
artifact as fp32, with ``precision="int8"`` and the calibration set recorded
in ``meta.extra``.

torch 2.14 marks ``torch.ao.quantization`` deprecated in favour of pt2e
(torch.export + X86InductorQuantizer), but pt2e is no longer inside torch 2.14
(it lives in the separate ``torchao`` package) and its int8 speed comes from
Inductor compiling the exported graph (a C++ toolchain at load time, or an
AOTInductor shared library per machine), not from one portable file that
``torch`` alone loads. So FX stays until that changes.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import hashlib
import logging
import random
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

import torch
from torch import nn
from tqdm import tqdm

from checkout_cam.errors import CheckoutCamError, ImageReadError
from checkout_cam.images import IMAGE_SUFFIXES, list_images, read_image
from checkout_cam.model.artifact import ArtifactMeta, check_format, check_outputs, save_scripted, trace_and_freeze
from checkout_cam.preprocess import Preprocessor

logger = logging.getLogger(__name__)

BACKEND = "x86"          # quantization recipe (qconfig) and calibration
LOAD_ENGINE = "onednn"   # kernels int8 artifacts are packed for when loaded (see int8_loading)
DEFAULT_MAX_IMAGES = 200
DEFAULT_SEED = 0
DEFAULT_BATCH_SIZE = 16


class CalibrationError(CheckoutCamError):
    """The calibration images could not be found or read."""


@contextlib.contextmanager
def quiet_ao_deprecation():
    """torch.ao.quantization and quantized tensors warn on every call in torch 2.14; FX PTQ is a
    deliberate choice (see the module docstring), and histogram observers also warn about
    ``reduce_range``, which the x86 qconfig still needs on CPUs without VNNI."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", FutureWarning)
        warnings.filterwarnings("ignore", message=".*reduce_range will be deprecated.*")
        warnings.filterwarnings("ignore", message=".*quantized tensor creation functions.*")
        # Tracing reads each quantize step's scale as a Python float: they are constants by design.
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning, message=".*Python float.*")
        yield


def quiet_quantized_tensor_warning() -> None:
    """Spend torch's once-per-process 'quantized tensors are deprecated' warning where it is silenced.

    Raised from inside TorchScript (loading unpacks int8 weights) it bypasses
    Python's warning filters and lands on stderr mid-run; raised once here,
    torch never repeats it.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.quantize_per_tensor(torch.zeros(1), 1.0, 0, torch.quint8)


@contextlib.contextmanager
def int8_loading():
    """Load int8 artifacts inside this.

    Loading re-packs the int8 weights for the quantized engine current at that
    moment, and the packing alone picks the kernels later calls run. oneDNN's
    packing ran ResNet-18 about 9% faster at batch 1 than the x86 engine's
    default (fbgemm) on this project's AVX2 machines, with the same grocery
    agreement within one photo, so it is used where torch has it. The global
    engine is restored afterwards.
    """
    quiet_quantized_tensor_warning()
    before = torch.backends.quantized.engine
    if LOAD_ENGINE in torch.backends.quantized.supported_engines:
        torch.backends.quantized.engine = LOAD_ENGINE
    try:
        yield
    finally:
        torch.backends.quantized.engine = before


@dataclass(frozen=True)
class CalibrationSet:
    """The images that calibrate activation ranges: a fixed-seed sample of what the user named."""

    source: Path
    paths: list[Path]
    found: int          # images the source holds before sampling

    def describe(self, used: list[Path]) -> dict:
        """What the artifact records: enough to tell two calibrations apart and to redo one."""
        h = hashlib.sha256()
        for p in used:
            h.update(self._rel(p).encode("utf-8") + b"\0")
            h.update(p.read_bytes())
        return {"source": str(self.source), "found": self.found, "n_images": len(used),
                "sha256": h.hexdigest(), "backend": BACKEND}

    def _rel(self, p: Path) -> str:
        root = self.source if self.source.is_dir() else self.source.parent
        try:
            return p.relative_to(root).as_posix()
        except ValueError:
            return p.as_posix()


def _read_list(path: Path) -> list[Path]:
    """``path[, anything...]`` lines, paths relative to the list file (grocery/train.txt works)."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise CalibrationError(f"cannot read calibration list {path}: {exc}") from None
    out = []
    for line in lines:
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        out.append((path.parent / line.split(",")[0].strip()).resolve())
    missing = [p for p in out if not p.is_file()]
    if missing:
        raise CalibrationError(f"calibration list {path}: {len(missing)} of {len(out)} listed images do "
                               f"not exist (first: {missing[0]}); paths are relative to the list file")
    return out


def find_calibration_images(spec: str | Path, max_images: int = DEFAULT_MAX_IMAGES,
                            seed: int = DEFAULT_SEED) -> CalibrationSet:
    """A directory (searched recursively) or a list file -> at most ``max_images``, sampled with ``seed``."""
    source = Path(spec)
    if not source.exists():
        raise CalibrationError(f"calibration source not found: {source}; give a folder of photos or a "
                               f"list file of `path, ...` lines")
    if source.is_dir():
        # Absolute paths, so the fingerprint's relative names do not depend on the working directory.
        paths = list_images([source.resolve()])
    elif source.suffix.lower() in IMAGE_SUFFIXES:
        raise CalibrationError(f"{source} is one image; --calibration takes a folder of photos or a list "
                               f"file (a few hundred photos like the camera sees)")
    else:
        paths = _read_list(source)
    if not paths:
        raise CalibrationError(f"no images found in {source} (looked for {', '.join(sorted(IMAGE_SUFFIXES))})")
    found = len(paths)
    if max_images > 0 and found > max_images:
        # Sample across the whole source (not its first classes), then keep file order stable.
        keep = set(random.Random(seed).sample(range(found), max_images))
        paths = [p for i, p in enumerate(paths) if i in keep]
    return CalibrationSet(source.resolve(), paths, found)


class CalibrationBatches:
    """Iterates preprocessed float batches of a calibration set; records which images were used.

    Unreadable images are skipped with a warning (one bad photo should not stop an export);
    ``used`` lists the rest once iteration ends.
    """

    def __init__(self, calibration: CalibrationSet, preprocess: Preprocessor,
                 batch_size: int = DEFAULT_BATCH_SIZE, progress: bool = True):
        self.calibration = calibration
        self.preprocess = preprocess
        self.batch_size = batch_size
        self.progress = progress
        self.used: list[Path] = []

    def __iter__(self) -> Iterator[torch.Tensor]:
        self.used = []
        pending: list = []
        pending_paths: list[Path] = []
        bar = tqdm(self.calibration.paths, desc="calibrating", unit="img", disable=not self.progress,
                   leave=False)
        for path in bar:
            try:
                pending.append(read_image(path))
            except ImageReadError as exc:
                logger.warning("calibration: skipped %s", exc)
                continue
            pending_paths.append(path)
            if len(pending) == self.batch_size:
                yield self.preprocess(pending)
                self.used.extend(pending_paths)
                pending, pending_paths = [], []
        if pending:
            yield self.preprocess(pending)
            self.used.extend(pending_paths)


def _check_engine() -> None:
    if BACKEND not in torch.backends.quantized.supported_engines:
        raise CheckoutCamError(f"this torch build has no '{BACKEND}' quantized engine (it has "
                               f"{', '.join(torch.backends.quantized.supported_engines)}); "
                               f"export with --precision fp32")
    # Kernels and weight packing follow the global engine; x86 is the default on x86 CPUs.
    torch.backends.quantized.engine = BACKEND


def quantize_int8(model: nn.Module, calibration_batches: Iterable[torch.Tensor],
                  input_size: int = 224) -> torch.jit.ScriptModule:
    """Eager fp32 model + calibration batches (N, 3, S, S) -> traced, frozen INT8 TorchScript.

    ``model`` itself is left untouched (a copy is quantized).
    """
    from torch.ao.quantization import get_default_qconfig_mapping
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

    _check_engine()
    model = copy.deepcopy(model).cpu().float().to(memory_format=torch.contiguous_format).eval()
    example = (torch.zeros(1, 3, input_size, input_size),)
    with quiet_ao_deprecation():
        # The classifier head stays fp32: int8 logits (128 levels with reduce_range) turn
        # near-ties into flips, and the head is ~0.002% of ResNet-18's work. On a weak grocery
        # model this raised top-1 agreement with fp32 from 93.6% to 97.3% at no measurable cost.
        mapping = get_default_qconfig_mapping(BACKEND).set_object_type(nn.Linear, None)
        prepared = prepare_fx(model, mapping, example_inputs=example)
        seen = 0
        with torch.no_grad():
            for batch in calibration_batches:
                if batch.ndim != 4 or tuple(batch.shape[1:]) != (3, input_size, input_size):
                    raise CalibrationError(f"calibration batch has shape {tuple(batch.shape)}, expected "
                                           f"(N, 3, {input_size}, {input_size})")
                prepared(batch)
                seen += batch.shape[0]
        if seen == 0:
            raise CalibrationError("no calibration image could be read; int8 needs real photos to "
                                   "calibrate activation ranges")
        quantized = convert_fx(prepared)
        frozen = trace_and_freeze(quantized, input_size)
    logger.info("quantized to int8 (%s backend) with %d calibration images", BACKEND, seen)
    return frozen


def save_int8_artifact(model: nn.Module, meta: ArtifactMeta, out: str | Path, calibration: str | Path,
                       *, max_images: int = DEFAULT_MAX_IMAGES, seed: int = DEFAULT_SEED,
                       batch_size: int = DEFAULT_BATCH_SIZE, progress: bool = True) -> Path:
    """Quantize ``model`` calibrated on ``calibration`` (folder or list file) and write the artifact.

    ``meta`` is the fp32 description (labels, input recipe, weights); the written one
    says ``precision="int8"`` and adds ``extra["calibration"]``.
    """
    check_format(out, "int8")
    check_outputs(model, meta)
    cal = find_calibration_images(calibration, max_images, seed)
    logger.info("calibrating on %d of %d images from %s", len(cal.paths), cal.found, cal.source)
    pre = Preprocessor(resize=meta.resize_size, crop=meta.input_size, mean=tuple(meta.mean), std=tuple(meta.std))
    batches = CalibrationBatches(cal, pre, batch_size, progress)
    module = quantize_int8(model, batches, meta.input_size)
    int8_meta = dataclasses.replace(meta, precision="int8",
                                    extra={**meta.extra, "calibration": cal.describe(batches.used)})
    save_scripted(module, int8_meta, out)
    logger.info("wrote %s (int8, %d classes)", out, int8_meta.num_classes)
    return Path(out)
