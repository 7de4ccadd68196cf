"""The model artifact: one TorchScript ``.pt`` file that carries its own metadata.

The traced, frozen module and a JSON description (arch, labels, input recipe,
weights source and hash, trained or not, torch version, training recipe)
travel together as a TorchScript extra file, so loading needs only ``torch``
and a model can never be separated from its labels.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import tempfile
import warnings
import zipfile
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime, timezone
from pathlib import Path

import torch
from torch import nn

from checkout_cam.errors import ModelFileError

logger = logging.getLogger(__name__)

META_FILE = "checkout_cam.json"
FORMAT = "checkout_cam.artifact/1"


@dataclass(frozen=True)
class ArtifactMeta:
    name: str
    arch: str
    labels: list[str]
    weights_source: str
    weights_sha256: str | None
    trained: bool
    input_size: int = 224
    resize_size: int = 256
    mean: list[float] = field(default_factory=lambda: [0.485, 0.456, 0.406])
    std: list[float] = field(default_factory=lambda: [0.229, 0.224, 0.225])
    precision: str = "fp32"
    torch_version: str = torch.__version__
    created: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds"))
    extra: dict = field(default_factory=dict)   # training recipe, data fingerprint, calibration...
    format: str = FORMAT

    @property
    def num_classes(self) -> int:
        return len(self.labels)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1, sort_keys=True)

    @classmethod
    def from_json(cls, text: str, path: Path) -> "ArtifactMeta":
        try:
            data = json.loads(text)
        except ValueError:
            raise ModelFileError(f"{path}: its checkout_cam metadata is not valid JSON; re-export the model") from None
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            found = data.get("format") if isinstance(data, dict) else None
            raise ModelFileError(f"{path}: metadata format {found!r} is not {FORMAT!r}; re-export the model "
                                 f"with this version of checkout-cam")
        names = {f.name for f in fields(cls)}
        required = {"name", "arch", "labels", "weights_source", "weights_sha256", "trained"}
        missing = sorted(required - data.keys())
        if missing:
            raise ModelFileError(f"{path}: metadata lacks {', '.join(missing)}; re-export the model")
        meta = cls(**{k: v for k, v in data.items() if k in names})
        if not isinstance(meta.labels, list) or not meta.labels:
            raise ModelFileError(f"{path}: metadata has no labels; re-export the model")
        return meta


@contextlib.contextmanager
def quiet_jit_deprecation():
    """torch 2.14 warns on every torch.jit call; the warning is known and the backend is swappable."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        yield


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def current_umask() -> int:
    """The process umask, read without changing it where Linux allows (/proc), else set and restored."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def give_umask_mode(path: str | Path) -> None:
    """Make a file made by mkstemp (always 0600) readable as the umask says, like any file ``open`` makes.

    A model exported by root must be readable by the service user with the usual 022 umask.
    """
    os.chmod(path, 0o666 & ~current_umask())


def _atomic_save(module: torch.jit.ScriptModule, out: Path, meta: ArtifactMeta) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    # Save next to the target and rename, so a crash never leaves half a model at `out`.
    fd, tmp = tempfile.mkstemp(prefix=out.name + ".", suffix=".tmp", dir=out.parent)
    os.close(fd)
    try:
        with quiet_jit_deprecation():
            torch.jit.save(module, tmp, _extra_files={META_FILE: meta.to_json()})
        give_umask_mode(tmp)
        os.replace(tmp, out)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def trace_and_freeze(model: nn.Module, input_size: int) -> torch.jit.ScriptModule:
    """Trace an eval-mode module on a (1, 3, S, S) input and freeze it (weights become constants)."""
    model = model.eval()
    example = torch.randn(1, 3, input_size, input_size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad(), quiet_jit_deprecation():
        traced = torch.jit.trace(model, example)
        return torch.jit.freeze(traced)


def save_artifact(model: nn.Module, meta: ArtifactMeta, out: str | Path) -> Path:
    """Trace + freeze ``model`` and write it with ``meta`` as one .pt file (``.onnx``: an ONNX model)."""
    out = Path(out)
    check_outputs(model, meta)
    if out.suffix.lower() == ".onnx":
        from checkout_cam.model.onnx_backend import save_onnx
        return save_onnx(model, meta, out)
    frozen = trace_and_freeze(model, meta.input_size)
    _atomic_save(frozen, out, meta)
    logger.info("wrote %s (%s, %d classes, trained=%s)", out, meta.name, meta.num_classes, meta.trained)
    return out


def save_scripted(module: torch.jit.ScriptModule, meta: ArtifactMeta, out: str | Path) -> Path:
    """Write an already traced/frozen module (e.g. an INT8 one) with its metadata."""
    out = Path(out)
    _atomic_save(module, out, meta)
    return out


def check_outputs(model: nn.Module, meta: ArtifactMeta) -> None:
    """The classifier head must have one output per label."""
    fc = getattr(model, "fc", None)
    outputs = fc.out_features if isinstance(fc, nn.Linear) else -1
    if outputs != len(meta.labels):
        raise ModelFileError(f"the model has {outputs} outputs but {len(meta.labels)} labels")


def check_format(out: str | Path, precision: str) -> None:
    """The file format follows the suffix: .onnx holds fp32 only; int8 is always a .pt artifact."""
    if precision != "fp32" and Path(out).suffix.lower() == ".onnx":
        raise ModelFileError(f"{out}: {precision} models are TorchScript artifacts; give a .pt name "
                             f"(.onnx is fp32 only)")


def not_found(path: Path) -> ModelFileError:
    return ModelFileError(f"model file not found: {path}; make one with `checkout-cam export-model "
                          f"--weights imagenet --out {path}` (or --weights random for a demo)")


def read_meta(path: str | Path) -> ArtifactMeta:
    """Read only the metadata (fast: no module is deserialized)."""
    path = Path(path)
    if not path.exists():
        raise not_found(path)
    check_readable(path)
    try:
        with zipfile.ZipFile(path) as zf:
            names = [n for n in zf.namelist() if n.endswith("/extra/" + META_FILE)]
            if not names:
                raise ModelFileError(_foreign_message(path, zf.namelist()))
            return ArtifactMeta.from_json(zf.read(names[0]).decode("utf-8"), path)
    except (zipfile.BadZipFile, OSError):
        raise ModelFileError(f"{path} is not a model artifact (not a TorchScript zip file, or corrupt/truncated)") from None


def check_readable(path: Path) -> None:
    """A file this user may not read is a permission problem, not a damaged model: say which."""
    if path.is_dir():
        raise ModelFileError(f"{path} is a directory, not a model file")
    try:
        with open(path, "rb"):
            pass
    except PermissionError:
        raise ModelFileError(f"{path}: permission denied: this user ({_user()}) cannot read the model file; "
                             f"make it readable (chmod a+r {path}) or run as its owner") from None


def _user() -> str:
    try:
        import pwd
        return pwd.getpwuid(os.geteuid()).pw_name
    except (ImportError, KeyError):
        return f"uid {os.geteuid()}"


def verify_zip(path: Path) -> None:
    """Every member's CRC-32, as the zip recorded it when the model was saved.

    torch.jit.load does not check them, so overwritten weights would load and give
    different probabilities; reading the file once more costs ~20 ms for ResNet-18.
    """
    try:
        with zipfile.ZipFile(path) as zf:
            bad = zf.testzip()
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        raise ModelFileError(f"{path} is damaged (corrupt or truncated: {exc}); re-export or copy it "
                             f"again") from None
    if bad is not None:
        raise ModelFileError(f"{path} is damaged: its part {bad.split('/', 1)[-1]} fails its CRC check "
                             f"(the file changed after it was written); re-export or copy it again")


def _foreign_message(path: Path, names: list[str]) -> str:
    if not any("/code/" in n for n in names):
        return (f"{path} is a PyTorch checkpoint, not a model artifact; turn it into one with "
                f"`checkout-cam export-model --weights {path} --out model.pt`")
    return (f"{path} is a TorchScript file without checkout_cam metadata; "
            f"make the artifact with `checkout-cam export-model`")


def load_artifact(path: str | Path) -> tuple[torch.jit.ScriptModule, ArtifactMeta]:
    """Load a model artifact: every failure is one ModelFileError line."""
    path = Path(path)
    meta = read_meta(path)  # cheap checks first: missing, not a zip, foreign, no metadata
    verify_zip(path)
    try:
        with quiet_jit_deprecation():
            module = torch.jit.load(str(path), map_location="cpu")
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelFileError(f"{path} could not be loaded (corrupt or made by an incompatible torch "
                             f"{meta.torch_version}): {first[:200]}") from None
    module.eval()
    return module, meta
