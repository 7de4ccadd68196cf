"""`checkout-cam evaluate`: accuracy on labelled photos, and what the review flag means for the cashier."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from checkout_cam.cli.common import add_config_option, add_model_option, load_cfg, open_model
from checkout_cam.errors import CheckoutCamError, ImageReadError

NAME = "evaluate"
HELP = "accuracy, confusion matrix and review-flag analysis of a model on labelled photos"
DESCRIPTION = """\
Classify labelled photos with a model artifact and report top-1 and top-3
accuracy, per-class accuracy and, with the review thresholds of the config
(review.min_confidence, review.min_margin), how often the cashier is asked to
look, how often an unflagged item is wrong, and what share of the errors the
flag catches; a risk-coverage table; and the lowest min_confidence that
reaches --target-accuracy on unflagged items. The flag is computed per photo,
without the temporal smoothing live mode applies (review.smoothing_window), so
live flags are fewer and steadier.

DATA is a folder with one sub-folder per class, or a list file of
`path, class_id` lines: with --classes CSV the ids are the CSV's, without it
they are the model's class indices (as in the OUT.val.txt finetune writes).
Class names must match the model's labels. Unreadable images are skipped and
counted.

examples:
  checkout-cam evaluate --model models/store.pt --data models/store.val.txt
  checkout-cam evaluate --model models/grocery-scratch128.pt --data ../shared/data/grocery/val.txt \\
      --classes ../shared/data/grocery/classes.csv --coarse ../shared/data/grocery/classes.csv \\
      --report reports/grocery
  checkout-cam evaluate --model models/store.pt --data photos/ --json
  checkout-cam evaluate --model models/store.pt --data console-data/corrections/ --skip-unknown
--json prints one object: n, top1, top3, flagged_share, unflagged_accuracy,
errors_caught, suggested_min_confidence, per_class (name: accuracy),
coarse_top1 (with --coarse), risk_coverage and more. --report DIR writes
metrics.json, report.txt, confusion.png, per_class.csv, risk_coverage.csv and
predictions.csv.
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_config_option(p)
    add_model_option(p)
    p.add_argument("--data", required=True, metavar="DATA", help="labelled photos: class folders or a list file")
    p.add_argument("--classes", metavar="CSV", help="class names and ids of a list file (`name, id, ...`)")
    p.add_argument("--coarse", metavar="CSV",
                   help="fine-to-coarse class CSV (`fine, id, coarse, ...` like grocery/classes.csv): "
                        "also report coarse accuracy")
    p.add_argument("--min-confidence", type=float, default=None,
                   help="override review.min_confidence from the config")
    p.add_argument("--min-margin", type=float, default=None, help="override review.min_margin from the config")
    p.add_argument("--target-accuracy", type=float, default=0.95,
                   help="accuracy wanted on unflagged items, for the suggested min_confidence (default 0.95)")
    p.add_argument("--skip-unknown", action="store_true",
                   help="with a folder: leave out (and count) sub-folders that are not the model's labels, such "
                        "as the console's \"not in the list\" corrections")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of the readable report")
    p.add_argument("--report", metavar="DIR", help="also write the report files to DIR")


def run(args: argparse.Namespace) -> int:
    import numpy as np
    import torch
    from tqdm import tqdm

    from checkout_cam.images import read_image
    from checkout_cam.training.data import DataError, LabeledImages, load_labeled, read_coarse_map
    from checkout_cam.training.metrics import ReviewRule, confusion_matrix, evaluate_probabilities, per_image
    from checkout_cam.training.report import PER_IMAGE_NOTE, format_text, write_report

    if not 0.0 < args.target_accuracy <= 1.0:
        raise CheckoutCamError(f"--target-accuracy must be in (0, 1], got {args.target_accuracy}")
    cfg = load_cfg(args, {"min_confidence": "review.min_confidence", "min_margin": "review.min_margin"})
    clf = open_model(cfg)
    labels = clf.labels
    index = {name: i for i, name in enumerate(labels)}
    skipped_unknown = 0
    if args.skip_unknown and Path(args.data).is_dir():
        data = load_labeled(args.data, None, require_every_class=False)   # the folder's own class names
        keep = [s for s in data.samples if data.classes[s.label] in index]
        skipped_unknown = len(data.samples) - len(keep)
        if not keep:
            raise DataError(f"{args.data}: none of its {len(data.samples)} photos are of one of the model's "
                            f"{len(labels)} labels ({clf.name})")
        data = LabeledImages(data.source, data.root, data.classes, keep)
    else:
        try:
            data = load_labeled(args.data, args.classes, known_classes=labels, require_every_class=False)
        except DataError as exc:
            if Path(args.data).is_dir() and "not known classes" in str(exc):
                raise DataError(f"{exc}; or pass --skip-unknown to leave them out") from None
            raise
    unknown = [name for name in data.classes if name not in index]
    used = {data.classes[s.label] for s in data.samples}
    if unknown and used & set(unknown):
        hint = ("evaluate a model trained on these classes" if clf.trained else
                "for an untrained demo model with these classes: `checkout-cam export-model --weights "
                "random --classes CSV` (or --labels FILE)")
        raise DataError(f"{args.data}: class(es) {', '.join(sorted(used & set(unknown))[:5])} are not "
                        f"among the model's {len(labels)} labels ({clf.name}); {hint}")
    coarse = None
    if args.coarse:
        coarse = read_coarse_map(args.coarse)
        missing = [name for name in labels if name not in coarse]
        if missing:
            raise DataError(f"{args.coarse} has no coarse class for {len(missing)} of the model's labels, "
                            f"e.g. {missing[0]!r}")

    probs, targets, names, skipped = [], [], [], 0
    batch, batch_targets, batch_names = [], [], []

    def flush() -> None:
        if batch:
            probs.append(clf.probabilities(batch).numpy())
            targets.extend(batch_targets)
            names.extend(batch_names)
            batch.clear()
            batch_targets.clear()
            batch_names.clear()

    with torch.inference_mode():
        for sample in tqdm(data.samples, desc="evaluate", unit="img", leave=False, file=sys.stderr,
                           disable=None if len(data.samples) > 20 else True):
            try:
                batch.append(read_image(sample.path, cfg.preprocess.max_image_pixels))
            except ImageReadError as exc:
                skipped += 1
                print(f"checkout-cam evaluate: skipping unreadable image: {exc}", file=sys.stderr)
                continue
            batch_targets.append(index[data.classes[sample.label]])
            batch_names.append(data.relpath(sample.path))
            if len(batch) >= cfg.model.batch_size:
                flush()
        flush()
    if not probs:
        raise DataError(f"{args.data}: none of the {len(data.samples)} images could be read")
    probs_np = np.concatenate(probs)
    targets_np = np.asarray(targets)
    rule = ReviewRule(cfg.review.min_confidence, cfg.review.min_margin)
    result = evaluate_probabilities(probs_np, targets_np, labels, rule, clf.trained, args.target_accuracy,
                                    coarse)
    result.update({"model": str(cfg.model.path), "model_name": clf.name, "model_sha256": clf.sha256,
                   "data": str(args.data), "skipped": skipped, "skipped_unknown": skipped_unknown, "note": f"review flag computed {PER_IMAGE_NOTE}"})
    if args.report:
        rows = per_image(probs_np, targets_np, rule, clf.trained)
        for row, name in zip(rows, names):
            row["image"] = name
        cm = confusion_matrix(targets_np, probs_np.argmax(axis=1), len(labels))
        written = write_report(args.report, result, cm, labels, rows)
        print(f"checkout-cam evaluate: wrote {len(written)} report files to {args.report}", file=sys.stderr)
    if args.json:
        print(json.dumps(result))
    else:
        print(format_text(result))
    if skipped:
        print(f"checkout-cam evaluate: skipped {skipped} of {len(data.samples)} unreadable image(s)",
              file=sys.stderr)
    if skipped_unknown:
        print(f"checkout-cam evaluate: left out {skipped_unknown} photo(s) of products that are not among the "
              f"model's labels (--skip-unknown)", file=sys.stderr)
    return 0
