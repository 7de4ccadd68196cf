#!/usr/bin/env python3
"""Seconds per fine-tuning epoch at candidate input sizes, to plan a run that fits a time budget.

Decodes a slice of the real grocery training photos once (as finetune does),
then times full training steps (augmentation, forward, backward, SGD) of
ResNet-18 from scratch at each --sizes value, and one validation pass. Prints
per size the median and fastest step time, the estimated seconds per epoch
for the whole training and validation sets, and how many epochs fit in
--budget-min (from the median; in brackets from the fastest step, which is
closest to what a quiet machine does).

    python scripts/finetune_speed.py [--sizes 112 128 160 224] [--batch-size 64] [--steps 8]

On a machine shared with other work the figures are inflated; compare sizes
within one run (same load), as ratios.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch
from torch import nn

from checkout_cam.training.augment import TrainAugment, normalizer
from checkout_cam.training.data import load_labeled, read_samples, square_rgb
from checkout_cam.training.finetune import MEAN, STD, Recipe, build_model, make_optimizer, resize_for, train_step

REPO = Path(__file__).resolve().parents[1]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(REPO.parent / "shared/data/grocery"),
                    help="grocery folder with train.txt, val.txt, classes.csv")
    ap.add_argument("--sizes", type=int, nargs="+", default=[112, 128, 160, 224])
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--steps", type=int, default=8, help="timed steps per size (after 2 warm-up steps)")
    ap.add_argument("--budget-min", type=float, default=90.0, help="time budget for the whole run")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's choice)")
    ap.add_argument("--contiguous", action="store_true", help="also time NCHW-contiguous instead of channels_last")
    ap.add_argument("--json", metavar="FILE", help="also write the figures as JSON")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    root = Path(args.data)
    train = load_labeled(root / "train.txt", root / "classes.csv")
    n_train = len(train.samples)
    n_val = len(load_labeled(root / "val.txt", root / "classes.csv", require_every_class=False).samples)
    n_imgs = args.batch_size * (args.steps + 2)
    subset = train.subset(range(0, n_train, max(1, n_train // n_imgs))[:n_imgs])
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; {n_train} train / {n_val} val images; "
          f"timing {args.steps} steps of {args.batch_size} per size", flush=True)

    rows = []
    layouts = [torch.channels_last] + ([torch.contiguous_format] if args.contiguous else [])
    for size in args.sizes:
        t0 = time.monotonic()
        dec = read_samples(subset, square_rgb(resize_for(size), resize_for(size)), progress=False)
        decode_s = (time.monotonic() - t0) / len(dec.kept)
        for layout in layouts:
            recipe = Recipe(init="scratch", freeze="none", image_size=size, batch_size=args.batch_size,
                            lr=0.1, weight_decay=5e-4)
            model = build_model("scratch", len(train.classes), 0).model.to(memory_format=layout)
            opt = make_optimizer(model, recipe)
            aug = TrainAugment(size, MEAN, STD)
            crit = nn.CrossEntropyLoss(label_smoothing=0.1)
            gen = torch.Generator().manual_seed(0)
            model.train()
            times = []
            for step in range(args.steps + 2):
                idx = torch.arange(step * args.batch_size, (step + 1) * args.batch_size) % len(dec.labels)
                t = time.monotonic()
                x = aug(dec.images[idx], gen).contiguous(memory_format=layout)
                train_step(model, opt, crit, x, dec.labels[idx])
                if step >= 2:
                    times.append(time.monotonic() - t)
            # Validation: inference on centre crops, batches of 2 x batch size.
            model.eval()
            norm = normalizer(MEAN, STD)
            vb = dec.images[: min(2 * args.batch_size, len(dec.labels)), :, :size, :size]
            val_times = []
            with torch.inference_mode():
                for _ in range(3):
                    t = time.monotonic()
                    model(norm(vb).contiguous(memory_format=layout))
                    val_times.append((time.monotonic() - t) / len(vb))
            val_per_img = min(val_times[1:])
            steps_per_epoch = n_train // args.batch_size

            def epoch_and_fit(step_s: float) -> tuple[float, int]:
                epoch_s = steps_per_epoch * step_s + n_val * val_per_img
                return epoch_s, int((args.budget_min * 60 - (n_train + n_val) * decode_s) / epoch_s)

            med, fast = statistics.median(times), min(times)
            (epoch_med, fit_med), (epoch_fast, fit_fast) = epoch_and_fit(med), epoch_and_fit(fast)
            row = {"size": size, "layout": "channels_last" if layout is torch.channels_last else "contiguous",
                   "step_s_median": round(med, 3), "step_s_min": round(fast, 3),
                   "val_ms_per_image": round(val_per_img * 1e3, 2), "decode_ms_per_image": round(decode_s * 1e3, 2),
                   "epoch_s_median": round(epoch_med, 1), "epoch_s_min": round(epoch_fast, 1),
                   "epochs_in_budget_median": fit_med, "epochs_in_budget_min": fit_fast}
            rows.append(row)
            # The fastest step is what the machine does when nobody else is using it.
            print(f"size {size:>4} {row['layout']:<13}  step median {med:5.2f} s, min {fast:5.2f} s  "
                  f"val {row['val_ms_per_image']:5.1f} ms/img  -> epoch {epoch_med:4.0f} s (min {epoch_fast:4.0f} s)"
                  f"  -> {fit_med} ({fit_fast}) epochs in {args.budget_min:g} min", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
