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

Activation range and the CPU. x86 int8 dot products without VNNI
(``vpmaddubsw``) add pairs of u8*s8 products into a saturating int16, so full
8-bit activations can overflow there and give wrong results with no error;
torch's x86 recipe therefore quantizes activations to 7 bits
(``reduce_range``), which costs precision. CPUs with VNNI (AVX512_VNNI,
AVX_VNNI, AMX) sum into int32 and do not saturate, so there the full 8 bits
are used. The choice is made where the model is quantized, recorded in the
artifact (``meta.extra["int8"]``), and checked where it is loaded:
``check_int8_cpu`` refuses to run an 8-bit artifact on a CPU (or an oneDNN
capped by ``ONEDNN_MAX_CPU_ISA``) without VNNI.
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

from checkout_cam.cpu import CpuInfo, cpu_info
from checkout_cam.errors import CheckoutCamError, ImageReadError, ModelFileError
from checkout_cam.images import IMAGE_SUFFIXES, list_images, read_image
from checkout_cam.model.artifact import ArtifactMeta, check_format, check_outputs, save_scripted, trace_and_freeze
from checkout_cam.preprocess import Preprocessor

logger = logging.getLogger(__name__)

BACKEND = "x86"          # quantization recipe (qconfig) and calibration
LOAD_ENGINE = "onednn"   # kernels int8 artifacts are packed for when loaded (see int8_loading)
# The graph's fusion patterns and ops at quantization: oneDNN's backend config folds each residual
# add and its relu into the conv before it (quantized::conv2d_add_relu), which x86's config leaves
# as a separate quantized::add_relu: 11% faster at batch 1 on an AMX Xeon (1.83 -> 1.63 ms, 224 px).
# Those fused ops exist only in the onednn engine, so such artifacts record it (extra.int8.kernels).
FUSION_ENGINE = "onednn"
DEFAULT_MAX_IMAGES = 200
DEFAULT_SEED = 0
DEFAULT_BATCH_SIZE = 16


class CalibrationError(CheckoutCamError):
    """The calibration images could not be found or read."""


ACTIVATION_CHOICES = ("auto", "8", "7")

# oneDNN ISA caps (ONEDNN_MAX_CPU_ISA) whose int8 kernels accumulate without int16 saturation.
_VNNI_ISA_CAPS = ("VNNI", "BF16", "AMX", "FP16", "AVX10")


def int8_vnni(cpu: CpuInfo | None = None) -> bool:
    """Whether int8 kernels here sum into int32: the CPU has VNNI and oneDNN (the engine int8
    artifacts load with) is not capped below it by ``ONEDNN_MAX_CPU_ISA``."""
    import os
    cpu = cpu or cpu_info()
    cap = os.environ.get("ONEDNN_MAX_CPU_ISA", "").strip().upper()
    capped = bool(cap) and cap not in ("ALL", "DEFAULT") and not any(t in cap for t in _VNNI_ISA_CAPS)
    return cpu.vnni and not capped


@dataclass(frozen=True)
class Int8Recipe:
    """How activations are quantized, and for which CPUs the result is right."""

    activation_bits: int        # 8 (VNNI CPUs only) or 7 (reduce_range: any x86 CPU)
    chosen: str                 # "auto" or the user's explicit choice
    cpu: CpuInfo

    @property
    def reduce_range(self) -> bool:
        return self.activation_bits == 7

    @property
    def needs_vnni(self) -> bool:
        return self.activation_bits == 8

    def describe(self) -> dict:
        """What the artifact records (``meta.extra["int8"]``)."""
        return {"activation_bits": self.activation_bits, "reduce_range": self.reduce_range,
                "needs_vnni": self.needs_vnni, "chosen": self.chosen,
                "quantized_on": {"cpu": self.cpu.model, "isa": self.cpu.isa}}


def choose_recipe(activations: str = "auto", cpu: CpuInfo | None = None) -> Int8Recipe:
    """``auto``: 8-bit activations where this CPU has VNNI, else 7-bit. ``7`` makes an artifact that
    runs right on every x86 CPU (e.g. built on a VNNI machine for AVX2-only lanes)."""
    cpu = cpu or cpu_info()
    if activations not in ACTIVATION_CHOICES:
        raise CheckoutCamError(f"int8 activations must be one of {', '.join(ACTIVATION_CHOICES)}, "
                               f"got {activations!r}")
    if activations == "auto":
        bits = 8 if int8_vnni(cpu) else 7
    else:
        bits = int(activations)
        if bits == 8 and not int8_vnni(cpu):
            logger.warning("8-bit int8 activations on a CPU without VNNI (%s): the artifact is calibrated "
                           "here but will only load on a CPU with VNNI", cpu.describe())
    return Int8Recipe(bits, activations, cpu)


def check_int8_cpu(meta: ArtifactMeta, path: str | Path, cpu: CpuInfo | None = None) -> None:
    """Refuse an int8 artifact whose activations this CPU's int8 kernels would saturate, or whose
    kernels (``extra.int8.kernels``) this torch does not have.

    Artifacts made before the recipe was recorded used 7-bit activations, which are safe everywhere.
    """
    recipe = meta.extra.get("int8") or {}
    kernels = recipe.get("kernels")
    if kernels and kernels not in torch.backends.quantized.supported_engines:
        raise ModelFileError(f"{path}: this int8 model was made for torch's '{kernels}' quantized kernels, which "
                             f"this torch build lacks (it has {', '.join(torch.backends.quantized.supported_engines)}); "
                             f"re-export it here with `checkout-cam export-model ... --precision int8`, or use "
                             f"the fp32 model")
    if not recipe.get("needs_vnni"):
        return
    cpu = cpu or cpu_info()
    if int8_vnni(cpu):
        return
    made_on = (recipe.get("quantized_on") or {}).get("cpu", "another CPU")
    raise ModelFileError(
        f"{path}: this int8 model uses full 8-bit activations, which need a CPU with VNNI (it was "
        f"quantized on {made_on}); this CPU ({cpu.describe()}) has no VNNI"
        f"{' usable (ONEDNN_MAX_CPU_ISA caps it)' if cpu.vnni else ''}, where int8 sums saturate and "
        f"answers go wrong without any error ({SATURATION_RISK}). Re-export it for this CPU with "
        f"`checkout-cam export-model ... --precision int8 --int8-activations 7` (runs right on every x86 "
        f"CPU), or use the fp32 model")


# Measured by scripts/int8_recipes.py on the 45-epoch grocery model (README, "INT8 models"): the
# same 8-bit artifact on oneDNN's AVX2 kernels (ONEDNN_MAX_CPU_ISA=AVX2) against its fp32 twin.
SATURATION_RISK = ("measured on a grocery model: 22 of 296 val photos changed their answer against fp32 "
                   "on AVX2 kernels vs 4 with VNNI, and probabilities moved 4.7x as much")


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


def use_int8_kernels(meta: ArtifactMeta) -> None:
    """Before running an int8 artifact: an artifact with fused residual adds (``kernels: onednn``)
    runs only while torch's global quantized engine is onednn (``quantized::conv2d_add_relu`` has no
    other implementation, and it looks at the global engine on every call), so it is set for the
    process. Every int8 artifact is packed for onednn when loaded (``int8_loading``) anyway."""
    kernels = (meta.extra.get("int8") or {}).get("kernels")
    if kernels and torch.backends.quantized.engine != kernels:
        logger.debug("torch's quantized engine: %s -> %s (for %s)", torch.backends.quantized.engine, kernels,
                     meta.name)
        torch.backends.quantized.engine = kernels


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


def quantize_engine() -> str:
    """The engine int8 models are made for here: oneDNN (fused residual adds) where torch has it,
    else x86."""
    engines = torch.backends.quantized.supported_engines
    if FUSION_ENGINE in engines:
        return FUSION_ENGINE
    if BACKEND in engines:
        return BACKEND
    raise CheckoutCamError(f"this torch build has no '{BACKEND}' or '{FUSION_ENGINE}' quantized engine (it "
                           f"has {', '.join(engines)}); export with --precision fp32")


@contextlib.contextmanager
def _global_engine(engine: str):
    """Kernels and weight packing follow torch's global engine: set while quantizing, then restored."""
    before = torch.backends.quantized.engine
    torch.backends.quantized.engine = engine
    try:
        yield
    finally:
        torch.backends.quantized.engine = before


def _qconfig_mapping(recipe: Int8Recipe):
    """x86's default mapping with the activation range of ``recipe``; the head stays fp32."""
    from torch.ao.quantization import QConfig, QConfigMapping, get_default_qconfig_mapping
    from torch.ao.quantization.observer import HistogramObserver

    base = get_default_qconfig_mapping(BACKEND)
    if recipe.reduce_range:
        mapping = base
    else:
        # Swap the activation observer wherever the x86 mapping uses the reduced-range histogram
        # one (fixed-qparams ops such as sigmoid keep theirs).
        widened = []

        def widen(qc):
            act = getattr(getattr(qc, "activation", None), "p", None)   # with_args' functools.partial
            if getattr(act, "func", None) is HistogramObserver and act.keywords.get("reduce_range"):
                widened.append(qc)
                return QConfig(activation=HistogramObserver.with_args(**{**act.keywords, "reduce_range": False}),
                               weight=qc.weight)
            return qc
        mapping = QConfigMapping().set_global(widen(base.global_qconfig))
        for kind, qc in base.object_type_qconfigs.items():
            mapping.set_object_type(kind, widen(qc))
        if not widened:   # a torch whose x86 mapping changed: never record 8 bits and quantize 7
            raise CheckoutCamError(f"torch {torch.__version__}'s x86 qconfig has no reduced-range activation "
                                   f"observer to widen; export with --int8-activations 7")
    # The classifier head stays fp32: int8 logits (128 levels with reduce_range) turn
    # near-ties into flips, and the head is ~0.002% of ResNet-18's work. On a weak grocery
    # model this raised top-1 agreement with fp32 from 93.6% to 97.3% at no measurable cost.
    return mapping.set_object_type(nn.Linear, None)


def quantize_int8(model: nn.Module, calibration_batches: Iterable[torch.Tensor],
                  input_size: int = 224, recipe: Int8Recipe | None = None) -> torch.jit.ScriptModule:
    """Eager fp32 model + calibration batches (N, 3, S, S) -> traced, frozen INT8 TorchScript.

    ``model`` itself is left untouched (a copy is quantized). ``recipe`` defaults to what this
    CPU can run (``choose_recipe()``).
    """
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

    recipe = recipe or choose_recipe()
    engine = quantize_engine()
    model = copy.deepcopy(model).cpu().float().to(memory_format=torch.contiguous_format).eval()
    example = (torch.zeros(1, 3, input_size, input_size),)
    with quiet_ao_deprecation(), _global_engine(engine):
        mapping = _qconfig_mapping(recipe)
        fusion = {}
        if engine == FUSION_ENGINE:
            from torch.ao.quantization.backend_config import get_onednn_backend_config
            fusion = {"backend_config": get_onednn_backend_config()}
        prepared = prepare_fx(model, mapping, example_inputs=example, **fusion)
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
        quantized = convert_fx(prepared, **fusion)
        frozen = trace_and_freeze(quantized, input_size)
    logger.info("quantized to int8 (%s qconfig, %s kernels, %d-bit activations) with %d calibration images",
                BACKEND, engine, recipe.activation_bits, seen)
    return frozen


def save_int8_artifact(model: nn.Module, meta: ArtifactMeta, out: str | Path, calibration: str | Path,
                       *, max_images: int = DEFAULT_MAX_IMAGES, seed: int = DEFAULT_SEED,
                       batch_size: int = DEFAULT_BATCH_SIZE, progress: bool = True,
                       activations: str = "auto") -> Path:
    """Quantize ``model`` calibrated on ``calibration`` (folder or list file) and write the artifact.

    ``meta`` is the fp32 description (labels, input recipe, weights); the written one
    says ``precision="int8"`` and adds ``extra["calibration"]`` and ``extra["int8"]`` (the
    activation range and the CPU it was chosen for). ``activations``: ``auto`` (8-bit where
    this CPU has VNNI, else 7-bit), ``8`` or ``7``.
    """
    recipe = choose_recipe(activations)
    check_format(out, "int8")
    check_outputs(model, meta)
    cal = find_calibration_images(calibration, max_images, seed)
    logger.info("calibrating on %d of %d images from %s", len(cal.paths), cal.found, cal.source)
    pre = Preprocessor(resize=meta.resize_size, crop=meta.input_size, mean=tuple(meta.mean), std=tuple(meta.std))
    batches = CalibrationBatches(cal, pre, batch_size, progress)
    module = quantize_int8(model, batches, meta.input_size, recipe)
    int8_meta = dataclasses.replace(meta, precision="int8",
                                    extra={**meta.extra, "calibration": cal.describe(batches.used),
                                           "int8": {**recipe.describe(), "kernels": quantize_engine()}})
    save_scripted(module, int8_meta, out)
    logger.info("wrote %s (int8, %d-bit activations, %d classes)", out, recipe.activation_bits,
                int8_meta.num_classes)
    return Path(out)
