"""`checkout-cam finetune`: train ResNet-18 on a store's own product photos."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from checkout_cam.cli.common import add_config_option, load_cfg
from checkout_cam.errors import CheckoutCamError

FREEZE_CHOICES = ("head", "layer4", "none")  # = checkout_cam.training.finetune.FREEZE_CHOICES (tested)

NAME = "finetune"
HELP = "train ResNet-18 on your own product photos; writes the same model artifact as export-model"
DESCRIPTION = """\
Fine-tune ResNet-18 on labelled product photos and write a model artifact
(labels embedded, trained=true, training recipe and data fingerprint in its
metadata) that classify, live, serve and replay load unchanged.

DATA is either
  a folder with one sub-folder of photos per class   (photos/milk/*.jpg, photos/apple/*.jpg ...)
  a list file of `path, class_id[, ...]` lines, paths relative to the list
  file's folder, with --classes CSV naming the ids (`name, id, ...` per line,
  the layout of grocery/classes.csv)
Without --val, a seeded 15% of each class is held out for validation and
listed in OUT.val.txt, ready for `checkout-cam evaluate`. Missing files, an
empty class or an unknown class id stop the run with the path named; images
that cannot be decoded are skipped and counted.

--init takes:
  imagenet  torchvision's ImageNet ResNet-18 (the normal start; from torchvision's
            cache, downloaded when online)
  scratch   random initialization (needs many more epochs)
  PATH      a torchvision resnet18 state_dict (.pth); its head is replaced
--freeze head trains only the classifier layer, layer4 also the last residual
stage (default from imagenet/PATH), none everything (default from scratch).

A checkpoint is saved after every epoch (in OUT.ckpt/ unless --checkpoint-dir);
after an interruption run the same command with --resume. The epoch with the
best validation top-1 is the one exported. `--resume --epochs N` with N epochs
already done just exports the best of them.

examples:
  checkout-cam finetune --train photos/ --out models/store.pt
  checkout-cam finetune --train photos/ --train console-data/corrections/ --out models/store-2.pt
  checkout-cam evaluate --model models/store.pt --data models/store.val.txt --report reports/store
  checkout-cam finetune --train ../shared/data/grocery/train.txt --val ../shared/data/grocery/val.txt \\
      --classes ../shared/data/grocery/classes.csv --init scratch --image-size 128 --epochs 45 \\
      --batch-size 64 --seed 0 --precision int8 --out models/grocery-scratch128.pt
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_config_option(p)
    p.add_argument("--train", required=True, metavar="DATA", action="append",
                   help="training photos: class folders or a list file; repeat it to train on several sets "
                        "together, classes joined by name (--train photos/ --train console-data/corrections/)")
    p.add_argument("--val", metavar="DATA", help="validation photos, same layout (default: hold out --val-split)")
    p.add_argument("--val-split", type=float, default=0.15, metavar="SHARE",
                   help="share of each class held out for validation when --val is absent "
                        "(default 0.15; 0 = no validation, the last epoch is kept)")
    p.add_argument("--classes", metavar="CSV", help="class names and ids (`name, id, ...`); needed for list files")
    p.add_argument("--out", metavar="FILE.pt", default=None,
                   help="where to write the model artifact (.pt; .onnx for an fp32 model run by ONNX Runtime; "
                        "default: model.path, models/model.pt, which every command then uses)")
    p.add_argument("--init", default="imagenet", metavar="imagenet|scratch|PATH",
                   help="starting weights (default imagenet)")
    p.add_argument("--freeze", choices=FREEZE_CHOICES, default=None,
                   help="what stays fixed: head = train fc only, layer4 = train layer4 + fc, none = train all "
                        "(default layer4; none with --init scratch)")
    p.add_argument("--epochs", type=int, default=15, help="epochs to train (default 15)")
    p.add_argument("--image-size", type=int, default=224, metavar="S",
                   help="training crop and model input size in pixels (default 224)")
    p.add_argument("--batch-size", type=int, default=32, help="images per step (default 32)")
    p.add_argument("--lr", type=float, default=None,
                   help="peak learning rate (default 0.1 x batch/64 from scratch, 0.01 x batch/64 otherwise)")
    p.add_argument("--weight-decay", type=float, default=None,
                   help="SGD weight decay (default 5e-4 from scratch, 1e-4 otherwise)")
    p.add_argument("--label-smoothing", type=float, default=0.1, help="default 0.1")
    p.add_argument("--warmup-epochs", type=float, default=1.0, help="linear warmup before the cosine decay (default 1)")
    p.add_argument("--seed", type=int, default=0, help="seed for initialization, split, order and augmentation")
    p.add_argument("--threads", type=int, default=0, help="torch threads (default: one per core)")
    p.add_argument("--checkpoint-dir", metavar="DIR", help="per-epoch checkpoints (default: OUT.ckpt/ next to --out)")
    p.add_argument("--resume", action="store_true", help="continue from the checkpoint in the checkpoint dir")
    p.add_argument("--name", help="model name shown on screen and in logs (default: from the file name)")
    p.add_argument("--precision", choices=("fp32", "int8"), default="fp32",
                   help="int8: quantize the best epoch (static PTQ) into OUT and keep the fp32 twin as "
                        "OUT-fp32.pt")
    p.add_argument("--calibration", metavar="DATA",
                   help="photos that calibrate --precision int8: a folder or list file (default: the first --train)")
    p.add_argument("--int8-activations", choices=("auto", "8", "7"), default="auto",
                   help="int8 activation range: auto (default) = full 8 bits where this CPU has VNNI, 7 bits where it does not; 7 = an artifact that runs right on every x86 CPU (build on a VNNI machine for AVX2-only lanes); 8 = only loads on VNNI CPUs")
    p.add_argument("--no-progress", action="store_true", help="no progress bars (epoch summary lines remain)")


def _check_args(args: argparse.Namespace) -> None:
    problems = []
    if args.epochs < 1:
        problems.append(f"--epochs must be >= 1, got {args.epochs}")
    if not 32 <= args.image_size <= 1024:
        problems.append(f"--image-size must be 32..1024, got {args.image_size}")
    if args.batch_size < 2:
        problems.append(f"--batch-size must be >= 2 (BatchNorm needs two images), got {args.batch_size}")
    if not 0.0 <= args.val_split <= 0.5:
        problems.append(f"--val-split must be 0..0.5, got {args.val_split}")
    if args.lr is not None and args.lr <= 0:
        problems.append(f"--lr must be > 0, got {args.lr}")
    if args.weight_decay is not None and args.weight_decay < 0:
        problems.append(f"--weight-decay must be >= 0, got {args.weight_decay}")
    if not 0.0 <= args.label_smoothing < 1.0:
        problems.append(f"--label-smoothing must be 0..1, got {args.label_smoothing}")
    if args.warmup_epochs < 0:
        problems.append(f"--warmup-epochs must be >= 0, got {args.warmup_epochs}")
    if problems:
        raise CheckoutCamError("; ".join(problems))


def run(args: argparse.Namespace) -> int:
    from checkout_cam.model.artifact import check_format
    from checkout_cam.training.data import load_labeled, load_many, split_holdout, write_list
    from checkout_cam.training.finetune import (
        CHECKPOINT_FILE, Recipe, default_lr, default_weight_decay, finetune, format_duration)

    _check_args(args)
    cfg = load_cfg(args)
    out = Path(args.out or cfg.model.path)
    if out.suffix.lower() not in (".pt", ".onnx"):
        raise CheckoutCamError(f"--out {out}: the model artifact must be a .pt file (or .onnx for an fp32 "
                               f"model run by ONNX Runtime)")
    check_format(out, args.precision)  # before training, not after it
    train = load_many(args.train, args.classes)
    val = None
    if args.val:
        val = load_labeled(args.val, args.classes, known_classes=train.classes, require_every_class=False)
    elif args.val_split > 0:
        train, val = split_holdout(train, args.val_split, args.seed)
        if not val.samples:
            val = None
            print("every class has fewer than 2 photos: nothing held out for validation; the last "
                  "epoch is kept", file=sys.stderr)
        else:
            listed = write_list(val, out.with_suffix(".val.txt"))
            print(f"held out {len(val.samples)} of {len(val.samples) + len(train.samples)} photos for "
                  f"validation, listed in {listed}")
    freeze = args.freeze or ("none" if args.init == "scratch" else "layer4")
    recipe = Recipe(
        init=args.init if args.init in ("imagenet", "scratch") else str(Path(args.init).resolve()),
        freeze=freeze, epochs=args.epochs, image_size=args.image_size, batch_size=args.batch_size,
        lr=args.lr if args.lr is not None else default_lr(args.init, args.batch_size),
        weight_decay=args.weight_decay if args.weight_decay is not None else default_weight_decay(args.init),
        label_smoothing=args.label_smoothing, warmup_epochs=args.warmup_epochs, seed=args.seed)
    ckpt_dir = Path(args.checkpoint_dir) if args.checkpoint_dir else out.with_suffix(".ckpt")
    if args.calibration and args.precision != "int8":
        raise CheckoutCamError("--calibration only applies to --precision int8")
    calibration = (args.calibration or args.train[0]) if args.precision == "int8" else None
    try:
        result = finetune(train, val, recipe, out, ckpt_dir, resume=args.resume, threads=args.threads,
                          max_pixels=cfg.preprocess.max_image_pixels, progress=not args.no_progress,
                          name=args.name, int8_calibration=calibration,
                          int8_activations=args.int8_activations)
    except KeyboardInterrupt:
        if (ckpt_dir / CHECKPOINT_FILE).exists():
            print(f"checkout-cam finetune: the last finished epoch is saved in {ckpt_dir}; run the same "
                  f"command with --resume to continue (or --resume --epochs N to export now)",
                  file=sys.stderr)
        raise
    best = ("last epoch kept (no validation data)" if result.best_val_top1 is None else
            f"best epoch {result.best_epoch} of {result.epochs_done}, val top-1 {result.best_val_top1:.1%}")
    if calibration is not None:
        print(f"wrote {out.with_name(out.stem + '-fp32.pt')}: the fp32 twin of the int8 model")
    print(f"wrote {result.out}: resnet18 {args.precision}, {len(result.labels)} classes, trained; {best}; input "
          f"{recipe.image_size} px; training took {format_duration(result.train_seconds)}")
    if val is not None:
        data = args.val or out.with_suffix(".val.txt")
        extra = f" --classes {args.classes}" if args.val and args.classes else ""
        print(f"next: checkout-cam evaluate --model {result.out} --data {data}{extra}")
    return 0
