"""`checkout-cam classify`: Top-k labels for image files."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from checkout_cam.cli.common import add_config_option, add_model_option, load_cfg, open_model
from checkout_cam.errors import CheckoutCamError, ImageReadError

NAME = "classify"
HELP = "print the Top-k labels of image files (readable, or JSON lines with --json)"
DESCRIPTION = """\
Classify image files with a model artifact. Directories are searched
recursively for images. A file that cannot be read gets an error line on
stderr and the rest are still classified; the exit code is 1 if any failed.

examples:
  checkout-cam classify apple.jpg                        # the model at model.path
  checkout-cam classify --model models/store.pt apple.jpg
  checkout-cam classify --json --top 5 ../shared/data/grocery/val/Fruit/Apple
output with --json, one object per image:
  {"image": "apple.jpg", "top": [{"index": 948, "label": "Granny Smith", "prob": 0.91}, ...], "trained": true}
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_config_option(p)
    add_model_option(p)
    p.add_argument("--top", type=int, default=None, metavar="K", help="labels per image (default: model.top_k, 3)")
    p.add_argument("--json", action="store_true", help="one JSON object per line instead of readable text")
    p.add_argument("images", nargs="+", metavar="IMAGE", help="image files or directories")


def _print_readable(name: str, result, trained: bool) -> None:
    badge = "" if trained else "  [UNTRAINED model: labels are meaningless]"
    print(f"{name}{badge}")
    for rank, p in enumerate(result.top, 1):
        print(f"  {rank}. {p.label:<32} {p.prob * 100:6.2f}%  (class {p.index})")


def run(args: argparse.Namespace) -> int:
    cfg = load_cfg(args)
    if args.top is not None and args.top < 1:
        print("checkout-cam classify: error: --top must be >= 1", file=sys.stderr)
        return 2
    from tqdm import tqdm

    from checkout_cam.images import IMAGE_SUFFIXES, list_images, read_image

    k = args.top or cfg.model.top_k
    paths = list_images(args.images)
    if not paths:
        raise CheckoutCamError(f"no images found in {', '.join(args.images)} (looked for "
                               f"{', '.join(sorted(IMAGE_SUFFIXES))} files, recursively in folders)")
    clf = open_model(cfg)  # after the cheap checks: loading takes seconds
    failed = 0
    batch: list[tuple[Path, object]] = []

    def flush() -> None:
        results = clf.classify([img for _, img in batch], k)
        for (path, _), result in zip(batch, results):
            if args.json:
                print(json.dumps({"image": str(path), "top": result.to_list(), "trained": clf.trained}))
            else:
                _print_readable(str(path), result, clf.trained)
        sys.stdout.flush()
        batch.clear()

    for path in tqdm(paths, desc="classify", unit="img", disable=None if len(paths) > 20 else True,
                     file=sys.stderr, leave=False):
        try:
            batch.append((path, read_image(path, cfg.preprocess.max_image_pixels)))
        except ImageReadError as exc:
            failed += 1
            print(f"checkout-cam classify: error: {exc}", file=sys.stderr)
            continue
        if len(batch) >= cfg.model.batch_size:
            flush()
    if batch:
        flush()
    if failed:
        print(f"checkout-cam classify: {failed} of {len(paths)} image(s) failed", file=sys.stderr)
    return 1 if failed else 0
