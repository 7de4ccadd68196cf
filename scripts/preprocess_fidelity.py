#!/usr/bin/env python3
"""Compare checkout_cam's preprocessing with torchvision's own IMAGENET1K_V1 transforms.

Prints the mean and max absolute difference in 0-255 levels over a folder of
images (default: ../shared/data/grocery/val) and the median time per 720p frame
of both paths.

    python scripts/preprocess_fidelity.py [--images DIR] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import torch
from PIL import Image
from torchvision import transforms as T

from checkout_cam.images import list_images, read_image
from checkout_cam.preprocess import Preprocessor

REPO = Path(__file__).resolve().parents[1]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", default=str(REPO.parent / "shared/data/grocery/val"))
    ap.add_argument("--json", metavar="FILE", help="also write the figures as JSON")
    ap.add_argument("--repeats", type=int, default=50, help="timing repetitions per path")
    args = ap.parse_args()
    files = list_images([args.images])
    if not files:
        print(f"no images under {args.images}", file=sys.stderr)
        return 2
    torch.set_num_threads(1)  # one core: the capture thread's share on a 2-core box
    ref_crop = T.Compose([T.Resize(256), T.CenterCrop(224)])
    std = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)
    prep = Preprocessor()
    means, maxes = [], []
    for f in files:
        bgr = read_image(f)
        ref = np.asarray(ref_crop(Image.fromarray(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))), np.float32)
        ours = ((prep([bgr])[0] * std + mean) * 255).permute(1, 2, 0).numpy()
        d = np.abs(ours - ref)
        means.append(float(d.mean()))
        maxes.append(float(d.max()))
    frame = cv2.resize(read_image(files[0]), (1280, 720))
    full = T.Compose([T.Resize(256), T.CenterCrop(224), T.ToTensor(),
                      T.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])])

    def timed(fn) -> float:
        ts = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            fn()
            ts.append(time.perf_counter() - t0)
        return statistics.median(ts) * 1e3

    pil_ms = timed(lambda: full(Image.fromarray(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))).unsqueeze(0))
    ours_ms = timed(lambda: prep([frame]))
    result = {"images": len(files), "mean_abs_diff_levels": float(np.mean(means)),
              "max_abs_diff_levels": float(np.max(maxes)), "pil_torchvision_720p_ms": pil_ms,
              "checkout_cam_720p_ms": ours_ms, "speedup": pil_ms / ours_ms}
    print(f"images compared           {len(files)}")
    print(f"mean |diff| (0-255)       {result['mean_abs_diff_levels']:.4f}")
    print(f"max  |diff| (0-255)       {result['max_abs_diff_levels']:.1f}")
    print(f"720p frame, PIL+torchvision   {pil_ms:.2f} ms (median of {args.repeats})")
    print(f"720p frame, checkout_cam      {ours_ms:.2f} ms  ({result['speedup']:.1f}x faster)")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
