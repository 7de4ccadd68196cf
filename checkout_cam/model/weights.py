"""Where ResNet-18 weights come from: torchvision's ImageNet checkpoint, a local file, or seeded random.

ImageNet weights are loaded the way torchvision users get them: from
torchvision's cache (``$TORCH_HOME/hub/checkpoints``), downloaded there when
online. Set ``CHECKOUT_CAM_OFFLINE=1`` to forbid the download (tests do).
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torchvision.models import ResNet18_Weights, resnet18

from checkout_cam.errors import WeightsError
from checkout_cam.model.artifact import file_sha256

logger = logging.getLogger(__name__)

IMAGENET = ResNet18_Weights.IMAGENET1K_V1


@dataclass
class LoadedWeights:
    model: nn.Module            # eager torchvision resnet18, eval mode
    labels: list[str]
    source: str                 # "imagenet:IMAGENET1K_V1", "file:/abs/path", "random:seed=0"
    sha256: str | None          # of the weights file; None for random weights
    trained: bool


def imagenet_labels() -> list[str]:
    """The 1000 ImageNet-1K class names, shipped inside torchvision (no download)."""
    return list(IMAGENET.meta["categories"])


def imagenet_cache_path() -> Path:
    """The exact file torchvision looks for before downloading IMAGENET1K_V1."""
    filename = IMAGENET.url.rsplit("/", 1)[-1]
    return Path(torch.hub.get_dir()) / "checkpoints" / filename


def read_labels(path: str | Path) -> list[str]:
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise WeightsError(f"labels file not found: {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise WeightsError(f"cannot read labels file {path}: {exc}") from None
    labels = [ln.strip() for ln in lines if ln.strip()]
    if not labels:
        raise WeightsError(f"labels file {path} is empty: put one class name per line")
    return labels


def _offline() -> bool:
    return os.environ.get("CHECKOUT_CAM_OFFLINE", "") not in ("", "0", "false", "no")


# What a command can do instead when ImageNet weights are missing; the caller knows its own options.
EXPORT_ALTERNATIVES = ("or pass --weights /path/to/resnet18.pth; for an untrained demo model without "
                       "internet: --weights random")


def _load_imagenet(alternatives: str = EXPORT_ALTERNATIVES) -> LoadedWeights:
    path = imagenet_cache_path()
    if not path.exists():
        if _offline():
            raise WeightsError(_missing_imagenet_message(path, "downloads are disabled (CHECKOUT_CAM_OFFLINE)",
                                                         alternatives))
        logger.info("downloading %s to %s", IMAGENET.url, path)
        try:
            torch.hub.load_state_dict_from_url(IMAGENET.url, progress=True, check_hash=True)
        except Exception as exc:  # URLError, timeout, SSL, hash mismatch: all mean "not here"
            reason = getattr(exc, "reason", None) or exc
            raise WeightsError(_missing_imagenet_message(path, f"the download failed ({reason})",
                                                         alternatives)) from None
    digest = file_sha256(path)
    # torchvision names the file with the first hex digits of its sha256.
    m = re.search(r"-([0-9a-f]{8,})\.pth$", path.name)
    if m and not digest.startswith(m.group(1)):
        raise WeightsError(f"{path} is corrupt (sha256 {digest[:12]}... does not match {m.group(1)}); "
                           f"delete it and run again, or pass --weights PATH")
    state = load_state_dict_file(path)
    model = model_for_state_dict(state, path)
    return LoadedWeights(model, imagenet_labels(), "imagenet:IMAGENET1K_V1", digest, True)


def _missing_imagenet_message(path: Path, why: str, alternatives: str = EXPORT_ALTERNATIVES) -> str:
    return (f"ImageNet weights for ResNet-18 are not available: {why}. torchvision looks for "
            f"{path}; on a machine with internet run `python -c \"from torchvision.models import "
            f"resnet18; resnet18(weights='IMAGENET1K_V1')\"` and copy {IMAGENET.url.rsplit('/', 1)[-1]} "
            f"to that path (or set TORCH_HOME), {alternatives}")


def load_state_dict_file(path: Path) -> dict:
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise WeightsError(f"cannot read weights {path}: not a PyTorch state_dict file ({type(exc).__name__})") from None
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise WeightsError(f"{path} does not hold a state_dict (a mapping of parameter names to tensors)")
    return obj


def model_for_state_dict(state: dict, path: Path) -> nn.Module:
    fc = state.get("fc.weight")
    if fc is None or fc.ndim != 2 or fc.shape[1] != 512:
        raise WeightsError(f"{path} is not in torchvision's resnet18 layout (no fc.weight of shape "
                           f"[classes, 512]); export weights with model.state_dict() from "
                           f"torchvision.models.resnet18")
    model = resnet18(num_classes=fc.shape[0])
    result = model.load_state_dict(state, strict=False)
    if result.missing_keys or result.unexpected_keys:
        parts = []
        if result.missing_keys:
            parts.append(f"{len(result.missing_keys)} missing (e.g. {result.missing_keys[0]})")
        if result.unexpected_keys:
            parts.append(f"{len(result.unexpected_keys)} unexpected (e.g. {result.unexpected_keys[0]})")
        raise WeightsError(f"{path} is not in torchvision's resnet18 layout: keys "
                           f"{' and '.join(parts)}")
    return model.eval()


def _load_file(path: Path, labels: list[str] | None) -> LoadedWeights:
    if not path.exists():
        raise WeightsError(f"weights file not found: {path}")
    state = load_state_dict_file(path)
    model = model_for_state_dict(state, path)
    n = model.fc.out_features
    if labels is None:
        if n != 1000:
            raise WeightsError(f"{path} has {n} classes: pass --labels FILE with one class name per line")
        labels = imagenet_labels()
    if len(labels) != n:
        raise WeightsError(f"{path} has {n} classes but the labels file has {len(labels)} names")
    return LoadedWeights(model, labels, f"file:{path.resolve()}", file_sha256(path), True)


def random_weights(labels: list[str] | None = None, seed: int = 0) -> LoadedWeights:
    """Seeded random ResNet-18: for tests and demos only; it is marked untrained everywhere."""
    labels = labels or imagenet_labels()
    gen_state = torch.random.get_rng_state()
    try:
        torch.manual_seed(seed)
        model = resnet18(num_classes=len(labels)).eval()
    finally:
        torch.random.set_rng_state(gen_state)
    return LoadedWeights(model, labels, f"random:seed={seed}", None, False)


def load_weights(spec: str, labels_path: str | Path | None = None, seed: int = 0, *,
                 labels: list[str] | None = None, alternatives: str = EXPORT_ALTERNATIVES) -> LoadedWeights:
    """Resolve ``imagenet``, ``random`` or a file path into an eager ResNet-18 with its labels.

    ``labels`` (already read, e.g. from a classes CSV) or ``labels_path`` (one name per line)
    name the outputs; ``alternatives`` ends the message when ImageNet weights are missing.
    """
    if labels is None:
        labels = read_labels(labels_path) if labels_path else None
    if spec == "imagenet":
        if labels is not None and len(labels) != 1000:
            raise WeightsError(f"--weights imagenet has 1000 classes but the labels file has {len(labels)} names")
        loaded = _load_imagenet(alternatives)
        if labels is not None:
            loaded.labels = labels
        return loaded
    if spec == "random":
        return random_weights(labels, seed)
    return _load_file(Path(spec), labels)
