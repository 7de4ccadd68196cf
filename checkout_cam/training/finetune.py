"""Fine-tune ResNet-18 on a store's own product photos and export the usual model artifact.

Every image is decoded and resized once into an in-memory uint8 cache (train
at the resize size, val already centre-cropped exactly as inference does), so
an epoch costs only augmentation and the network. The shuffling and
augmentation of epoch ``e`` come from a generator seeded with (seed, e): a run
resumed from a checkpoint sees the same batches as one that was never
interrupted.

A checkpoint (model, optimizer, best-on-val weights, history, recipe and data
fingerprints) is written atomically after every epoch, so Ctrl-C loses at most
the epoch in progress; ``resume`` refuses a checkpoint made from other data or
another recipe (except a different epoch count, which extends or shortens the
run: with the epochs already done it only exports).
"""

from __future__ import annotations

import logging
import math
import os
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable

import torch
from torch import nn
from torchvision.models import resnet18
from tqdm import tqdm

from checkout_cam.errors import CheckoutCamError
from checkout_cam.model.artifact import ArtifactMeta, file_sha256, give_umask_mode, save_artifact
from checkout_cam.model.classifier import set_threads
from checkout_cam.model.weights import model_for_state_dict, load_state_dict_file, load_weights
from checkout_cam.training.augment import AugmentConfig, TrainAugment, normalizer
from checkout_cam.training.data import DataError, LabeledImages, check_every_class, read_samples, square_rgb

logger = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "checkout_cam.finetune-checkpoint/1"
CHECKPOINT_FILE = "last.pt"
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
FREEZE_CHOICES = ("head", "layer4", "none")


class TrainingError(CheckoutCamError):
    """A fine-tuning run cannot start or continue as asked."""


def resize_for(image_size: int) -> int:
    """Short side before the centre crop, in torchvision's 256/224 proportion."""
    return int(round(image_size * 256 / 224))


@dataclass(frozen=True)
class Recipe:
    """Everything that decides the trained weights, given the data."""

    init: str = "imagenet"
    freeze: str = "layer4"
    epochs: int = 15
    image_size: int = 224
    batch_size: int = 32
    lr: float = 0.005
    weight_decay: float = 1e-4
    label_smoothing: float = 0.1
    warmup_epochs: float = 1.0
    seed: int = 0
    augment: AugmentConfig = field(default_factory=AugmentConfig)

    @property
    def resize_size(self) -> int:
        return resize_for(self.image_size)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["augment"] = self.augment.to_dict()
        d["resize_size"] = self.resize_size
        d["optimizer"] = "SGD momentum 0.9 nesterov, no weight decay on norms/biases"
        d["schedule"] = "linear warmup then cosine to 0, per step"
        return d


def default_lr(init: str, batch_size: int) -> float:
    """Peak learning rate: 0.1 from scratch, 0.01 from trained weights, per 64 images (linear scaling)."""
    return (0.1 if init == "scratch" else 0.01) * batch_size / 64


def default_weight_decay(init: str) -> float:
    # From scratch on a few thousand photos the network needs more regularizing than a fine-tune.
    return 5e-4 if init == "scratch" else 1e-4


# ---------------------------------------------------------------- model

@dataclass
class InitWeights:
    model: nn.Module
    source: str
    sha256: str | None


def build_model(init: str, num_classes: int, seed: int) -> InitWeights:
    """ResNet-18 with a fresh ``num_classes`` head, from ImageNet, a state_dict file or scratch."""
    torch.manual_seed(seed)
    if init == "scratch":
        # Zero-init of each block's last BN makes residual blocks start as identities: a
        # from-scratch ResNet then trains stably at a high learning rate from step one.
        model = resnet18(num_classes=num_classes, zero_init_residual=True)
        return InitWeights(model, f"scratch:seed={seed}", None)
    if init == "imagenet":
        loaded = load_weights("imagenet", alternatives=(
            "or train without them: --init scratch (every layer is trained; it needs many more epochs, "
            "e.g. --epochs 45), or --init /path/to/resnet18.pth"))
        model, source, digest = loaded.model, loaded.source, loaded.sha256
    else:
        path = Path(init)
        if not path.is_file():
            raise TrainingError(f"--init {init}: no such file; give imagenet, scratch, or a "
                                f"torchvision resnet18 state_dict (.pth)")
        # The weights module owns reading and checking state_dict files; reuse its checks.
        model = model_for_state_dict(load_state_dict_file(path), path)
        source, digest = f"file:{path.resolve()}", file_sha256(path)
    model.fc = nn.Linear(model.fc.in_features, num_classes)
    return InitWeights(model, source, digest)


def trainable_parameters(model: nn.Module, freeze: str) -> list[nn.Parameter]:
    """Freeze what ``freeze`` names (head: train fc only; layer4: layer4 + fc; none: all)."""
    train_prefixes = {"head": ("fc.",), "layer4": ("layer4.", "fc."), "none": ("",)}[freeze]
    params = []
    for name, p in model.named_parameters():
        p.requires_grad_(name.startswith(train_prefixes))
        if p.requires_grad:
            params.append(p)
    return params


def set_train_mode(model: nn.Module, freeze: str) -> None:
    """Train mode, except frozen parts, whose BatchNorm keeps its pretrained running statistics."""
    model.train()
    frozen = {"head": [m for n, m in model.named_children() if n != "fc"],
              "layer4": [m for n, m in model.named_children() if n not in ("layer4", "fc")],
              "none": []}[freeze]
    for m in frozen:
        m.eval()


def make_optimizer(model: nn.Module, recipe: Recipe) -> torch.optim.Optimizer:
    params = trainable_parameters(model, recipe.freeze)
    decay = [p for p in params if p.ndim > 1]
    no_decay = [p for p in params if p.ndim <= 1]   # BN scales/shifts and biases
    return torch.optim.SGD([{"params": decay, "weight_decay": recipe.weight_decay},
                            {"params": no_decay, "weight_decay": 0.0}],
                           lr=recipe.lr, momentum=0.9, nesterov=True)


def lr_at(step: int, total: int, warmup: int, peak: float) -> float:
    """Linear warmup from peak/10 over ``warmup`` steps, then cosine decay to 0 at ``total``."""
    warmup = min(warmup, max(total - 1, 0))
    if step < warmup:
        return peak * (0.1 + 0.9 * step / warmup)
    progress = (step - warmup) / max(total - warmup, 1)
    return peak * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))


# ---------------------------------------------------------------- export

def export_trained(model: nn.Module, labels: list[str], meta_extra: dict, out: str | Path,
                   image_size: int, *, name: str | None = None, weights_source: str = "finetune",
                   weights_sha256: str | None = None, int8_calibration: str | Path | None = None,
                   int8_activations: str = "auto") -> Path:
    """Write fine-tuned weights as the same TorchScript artifact `export-model` makes (trained=true).

    Inference will resize the short side to round(S*256/224) and centre-crop
    S = ``image_size``: exactly how validation images were prepared in training.
    With ``int8_calibration`` (a folder or list file of photos) ``out`` is the
    INT8 artifact and its fp32 twin is written beside it as ``<stem>-fp32.pt``,
    so the two can be compared with `evaluate` on the same weights.
    ``int8_activations``: see ``quantize.choose_recipe`` (auto: 8-bit on VNNI CPUs).
    """
    out = Path(out)
    model = model.to(memory_format=torch.contiguous_format).eval()
    meta = ArtifactMeta(name=name or out.stem, arch="resnet18", labels=list(labels),
                        weights_source=weights_source, weights_sha256=weights_sha256, trained=True,
                        input_size=image_size, resize_size=resize_for(image_size),
                        mean=list(MEAN), std=list(STD), extra=meta_extra)
    if int8_calibration is None:
        return save_artifact(model, meta, out)
    from checkout_cam.model.quantize import save_int8_artifact
    save_artifact(model, replace(meta, name=meta.name + "-fp32"), out.with_name(out.stem + "-fp32.pt"))
    return save_int8_artifact(model, meta, out, int8_calibration, activations=int8_activations)


# ---------------------------------------------------------------- checkpoints

def _atomic_torch_save(obj: dict, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        torch.save(obj, tmp)
        give_umask_mode(tmp)  # mkstemp's 0600 otherwise, unlike every other file written
        os.replace(tmp, path)   # the previous checkpoint stays whole until this instant
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def load_checkpoint(path: Path) -> dict:
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise TrainingError(f"checkpoint {path} cannot be read ({type(exc).__name__}); delete it to "
                            f"start over") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise TrainingError(f"{path} is not a finetune checkpoint of this checkout-cam version; "
                            f"delete it or choose another --checkpoint-dir")
    return ckpt


def _resume_mismatches(ckpt: dict, recipe: Recipe, labels: list[str], data: dict) -> list[str]:
    problems = []
    saved = dict(ckpt["recipe"])
    now = recipe.to_dict()
    for key in sorted(now):
        if key != "epochs" and saved.get(key) != now[key]:
            problems.append(f"{key} was {saved.get(key)!r}, now {now[key]!r}")
    if ckpt["labels"] != labels:
        problems.append("the classes differ")
    for part in ("train", "val"):
        old, new = ckpt["data"].get(part), data.get(part)
        if (old or {}).get("sha256") != (new or {}).get("sha256"):
            problems.append(f"the {part} data differ (fingerprint "
                            f"{(old or {}).get('sha256', 'none')[:12]} vs {(new or {}).get('sha256', 'none')[:12]})")
    return problems


# ---------------------------------------------------------------- training

@dataclass
class EpochRecord:
    epoch: int
    train_loss: float
    train_top1: float
    val_loss: float | None
    val_top1: float | None
    lr: float
    seconds: float


@dataclass
class FinetuneResult:
    out: Path
    labels: list[str]
    epochs_done: int
    epochs_run: int                 # in this call (0: resumed a finished run and only exported)
    best_epoch: int
    best_val_top1: float | None
    history: list[dict]
    skipped: dict[str, int]
    train_seconds: float            # sum over all epochs, across resumes


def format_duration(seconds: float) -> str:
    m, s = divmod(int(round(seconds)), 60)
    h, m = divmod(m, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s"


def train_step(model: nn.Module, optimizer: torch.optim.Optimizer, criterion: nn.Module,
               x: torch.Tensor, y: torch.Tensor) -> tuple[float, int]:
    """One SGD step on a prepared batch; returns (mean loss, correct predictions)."""
    logits = model(x)
    loss = criterion(logits, y)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss.item(), int((logits.detach().argmax(1) == y).sum())


@torch.inference_mode()
def _validate(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, batch_size: int,
              normalize) -> tuple[float, float]:
    model.eval()
    loss_sum, correct = 0.0, 0
    for i in range(0, len(images), batch_size):
        logits = model(normalize(images[i:i + batch_size]))
        y = labels[i:i + batch_size]
        loss_sum += float(nn.functional.cross_entropy(logits, y, reduction="sum"))
        correct += int((logits.argmax(1) == y).sum())
    return loss_sum / len(images), correct / len(images)


def _check_decoded(data: LabeledImages, labels: torch.Tensor, part: str) -> None:
    counts = torch.bincount(labels, minlength=len(data.classes)).tolist()
    empty = [name for name, n in zip(data.classes, counts) if n == 0]
    if empty:
        raise DataError(f"{data.source}: after skipping unreadable images, {len(empty)} class(es) "
                        f"have no {part} images: {', '.join(empty[:5])}")


def finetune(train: LabeledImages, val: LabeledImages | None, recipe: Recipe, out: str | Path,
             checkpoint_dir: str | Path, *, resume: bool = False, threads: int = 0,
             max_pixels: int = 50_000_000, progress: bool = True,
             echo: Callable[[str], None] = tqdm.write,
             on_epoch_end: Callable[[EpochRecord], None] | None = None,
             name: str | None = None, int8_calibration: str | Path | None = None,
             int8_activations: str = "auto") -> FinetuneResult:
    """Train, keep the best epoch on val (the last one without val), and export it to ``out``."""
    t_start = time.monotonic()
    if recipe.freeze not in FREEZE_CHOICES:
        raise TrainingError(f"freeze must be one of {', '.join(FREEZE_CHOICES)}, got {recipe.freeze!r}")
    if recipe.init == "scratch" and recipe.freeze != "none":
        raise TrainingError(f"--freeze {recipe.freeze} with --init scratch would train on random, "
                            f"frozen features; use --freeze none (the default for scratch)")
    if val is not None and val.classes != train.classes:
        raise DataError(f"{val.source} and {train.source} name different classes; give both the same "
                        f"class folders, or list files with the same --classes CSV")
    check_every_class(train)
    set_threads(threads)
    labels = list(train.classes)
    data_fp = {"train": train.fingerprint(), "val": val.fingerprint() if val is not None else None}
    ckpt_path = Path(checkpoint_dir) / CHECKPOINT_FILE

    ckpt = None
    if ckpt_path.exists():
        if not resume:
            raise TrainingError(f"{ckpt_path} already holds a checkpoint; add --resume to continue that "
                                f"run, or delete it / choose another --checkpoint-dir to start over")
        ckpt = load_checkpoint(ckpt_path)
        problems = _resume_mismatches(ckpt, recipe, labels, data_fp)
        if problems:
            raise TrainingError(f"cannot resume {ckpt_path}: it was made with other settings or data: "
                                f"{'; '.join(problems)}. Use the original command, or another "
                                f"--checkpoint-dir to start over")
    elif resume:
        echo(f"no checkpoint at {ckpt_path}: starting from epoch 1")

    if ckpt is not None:
        model = resnet18(num_classes=len(labels))
        model.load_state_dict(ckpt["state_dict"])
        init_source, init_sha = ckpt["init"]["source"], ckpt["init"]["sha256"]
        done, history = int(ckpt["epoch"]), list(ckpt["history"])
        best_epoch, best_top1 = int(ckpt["best"]["epoch"]), ckpt["best"]["val_top1"]
        best_state = ckpt["best"]["state_dict"]
        echo(f"resuming {ckpt_path}: {done} epoch(s) done, best val top-1 "
             f"{'-' if best_top1 is None else f'{best_top1:.1%}'} at epoch {best_epoch}")
    else:
        init = build_model(recipe.init, len(labels), recipe.seed)
        model, init_source, init_sha = init.model, init.source, init.sha256
        done, history, best_epoch, best_top1, best_state = 0, [], 0, None, None
    model = model.to(memory_format=torch.channels_last)

    skipped = {"train": 0, "val": 0}
    epochs_run = 0
    if done < recipe.epochs:
        train_dec = read_samples(train, square_rgb(recipe.resize_size, recipe.resize_size), max_pixels,
                                 desc="decode train", progress=progress)
        skipped["train"] = len(train_dec.skipped)
        _check_decoded(train, train_dec.labels, "training")
        val_dec = None
        if val is not None:
            val_dec = read_samples(val, square_rgb(recipe.resize_size, recipe.image_size), max_pixels,
                                   desc="decode val", progress=progress)
            skipped["val"] = len(val_dec.skipped)
        if skipped["train"] or skipped["val"]:
            echo(f"skipped {skipped['train']} unreadable training and {skipped['val']} unreadable "
                 f"validation image(s) (named in the warnings above)")
        echo(f"data: {len(train_dec.labels)} training images, "
             f"{0 if val_dec is None else len(val_dec.labels)} validation images, {len(labels)} classes; "
             f"decoded in {time.monotonic() - t_start:.1f} s")

        optimizer = make_optimizer(model, recipe)
        if ckpt is not None:
            optimizer.load_state_dict(ckpt["optimizer"])
        augment = TrainAugment(recipe.image_size, MEAN, STD, recipe.augment)
        normalize = normalizer(MEAN, STD)
        criterion = nn.CrossEntropyLoss(label_smoothing=recipe.label_smoothing)
        n = len(train_dec.labels)
        bs = min(recipe.batch_size, n)
        if bs < 2:
            raise DataError(f"{train.source}: at least 2 readable training images are needed, found {n}")
        # Full batches only: a last batch of one image would break BatchNorm, and a short one
        # is a noisy step; every image is still seen because each epoch reshuffles.
        steps = n // bs
        total = steps * recipe.epochs
        warmup = int(round(recipe.warmup_epochs * steps))
        interactive = sys.stderr.isatty()

        for epoch in range(done + 1, recipe.epochs + 1):
            t_epoch = time.monotonic()
            gen = torch.Generator().manual_seed(recipe.seed * 1_000_003 + epoch)
            order = torch.randperm(n, generator=gen)
            set_train_mode(model, recipe.freeze)
            loss_sum, correct, seen = 0.0, 0, 0
            bar = tqdm(range(steps), desc=f"epoch {epoch}/{recipe.epochs}", unit="batch", leave=False,
                       disable=not progress, dynamic_ncols=True, mininterval=0.5 if interactive else 30)
            lr = recipe.lr
            for i in bar:
                step = (epoch - 1) * steps + i
                lr = lr_at(step, total, warmup, recipe.lr)
                for group in optimizer.param_groups:
                    group["lr"] = lr
                idx = order[i * bs:(i + 1) * bs]
                y = train_dec.labels[idx]
                loss, hits = train_step(model, optimizer, criterion, augment(train_dec.images[idx], gen), y)
                loss_sum += loss * len(y)
                correct += hits
                seen += len(y)
                bar.set_postfix(loss=f"{loss_sum / seen:.3f}", acc=f"{correct / seen:.1%}", lr=f"{lr:.4f}",
                                refresh=False)
            bar.close()
            val_loss = val_top1 = None
            if val_dec is not None:
                val_loss, val_top1 = _validate(model, val_dec.images, val_dec.labels, 2 * bs, normalize)
            improved = val_top1 is None or best_top1 is None or val_top1 > best_top1
            if improved:
                best_epoch, best_top1 = epoch, val_top1
            record = EpochRecord(epoch, loss_sum / seen, correct / seen, val_loss, val_top1, lr,
                                 time.monotonic() - t_epoch)
            history.append(asdict(record))
            done = epoch
            epochs_run += 1
            state = model.state_dict()
            if improved:
                # A copy, because training goes on changing `state` in place.
                best_state = {k: v.detach().clone() for k, v in state.items()}
            _atomic_torch_save({
                "format": CHECKPOINT_FORMAT, "epoch": done, "state_dict": state,
                "optimizer": optimizer.state_dict(),
                "best": {"epoch": best_epoch, "val_top1": best_top1,
                         "state_dict": state if improved else best_state},
                "recipe": recipe.to_dict(), "labels": labels, "data": data_fp,
                "init": {"source": init_source, "sha256": init_sha}, "history": history,
            }, ckpt_path)
            total_s = sum(h["seconds"] for h in history)
            val_text = "no val" if val_top1 is None else (
                f"val loss {val_loss:.3f} top-1 {val_top1:.1%} (best {best_top1:.1%} at epoch {best_epoch})")
            echo(f"epoch {epoch}/{recipe.epochs}: train loss {record.train_loss:.3f} acc "
                 f"{record.train_top1:.1%} | {val_text} | lr {lr:.4g} | {record.seconds:.0f} s, "
                 f"training so far {format_duration(total_s)}")
            if on_epoch_end is not None:
                on_epoch_end(record)
    else:
        echo(f"{ckpt_path}: {done} of {recipe.epochs} epoch(s) already done; exporting the best epoch")

    model.load_state_dict(best_state if best_state is not None else model.state_dict())
    train_seconds = sum(h["seconds"] for h in history)
    extra = {
        "finetune": {
            "recipe": recipe.to_dict(), "data": data_fp, "labels_source": str(train.source),
            "init": {"source": init_source, "sha256": init_sha},
            "epochs_done": done, "best_epoch": best_epoch, "val_top1": best_top1,
            "train_seconds": round(train_seconds, 1), "skipped_images": skipped,
            "history": [{k: (round(v, 5) if isinstance(v, float) else v) for k, v in h.items()}
                        for h in history],
        },
    }
    out = export_trained(model, labels, extra, out, recipe.image_size, name=name,
                         weights_source=f"finetune:{init_source}", int8_calibration=int8_calibration,
                         int8_activations=int8_activations)
    return FinetuneResult(Path(out), labels, done, epochs_run, best_epoch, best_top1, history, skipped,
                          train_seconds)
