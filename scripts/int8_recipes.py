#!/usr/bin/env python3
"""int8 activation range on the same weights: 8-bit (VNNI) vs 7-bit (reduce_range) against fp32.

    PYTHONPATH=. python3 scripts/int8_recipes.py models/grocery-scratch128.ckpt/last.pt \\
        --data ../shared/data/grocery --out-dir models/recipes --json reports/int8-recipes.json

From a `finetune` checkpoint (its best epoch), writes the fp32 artifact and the
int8 one with each activation range (calibrated on train.txt as `finetune`
does), then compares each int8 model's top-1 with fp32's on val.txt. Each
int8 model is also run with oneDNN capped to AVX2 (``ONEDNN_MAX_CPU_ISA=AVX2``,
in a child process): the kernels of a CPU without VNNI, where int16 sums
saturate. That is the risk an 8-bit artifact would carry onto such a CPU, and
why loading refuses it there (``quantize.check_int8_cpu``; this script loads
past the check on purpose). Where the CPU has bf16 (AVX512_BF16 / AMX), the
same weights in bf16 (channels_last, traced and frozen) are compared too.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from checkout_cam.cpu import cpu_info  # noqa: E402
from checkout_cam.images import read_image  # noqa: E402
from checkout_cam.model.artifact import load_artifact, read_meta  # noqa: E402
from checkout_cam.model.quantize import int8_loading, int8_vnni, use_int8_kernels  # noqa: E402
from checkout_cam.preprocess import Preprocessor  # noqa: E402


def val_set(data: Path, labels: list[str]) -> tuple[list[Path], np.ndarray]:
    with open(data / "classes.csv", newline="") as f:
        id_to_name = {int(r[1]): r[0].strip() for r in list(csv.reader(f))[1:] if len(r) > 1}
    index = {n: i for i, n in enumerate(labels)}
    paths, targets = [], []
    for line in (data / "val.txt").read_text().splitlines():
        if line.strip():
            rel, cid = [s.strip() for s in line.split(",")[:2]]
            paths.append(data / rel)
            targets.append(index[id_to_name[int(cid)]])
    return paths, np.array(targets)


def probabilities(model_path: Path, paths: list[Path]) -> np.ndarray:
    """Softmax over val, loading the artifact as the classifier does but without the CPU check."""
    meta = read_meta(model_path)
    if meta.precision == "int8":
        with int8_loading():
            module, _ = load_artifact(model_path)
        use_int8_kernels(meta)
    else:
        module, _ = load_artifact(model_path)
        module = torch.jit.optimize_for_inference(module)
    pre = Preprocessor(resize=meta.resize_size, crop=meta.input_size, mean=tuple(meta.mean), std=tuple(meta.std))
    out = []
    with torch.inference_mode():
        for i in range(0, len(paths), 16):
            out.append(torch.softmax(module(pre([read_image(p) for p in paths[i:i + 16]])).float(), 1))
    return torch.cat(out).numpy()


def child(args) -> int:
    """--probs-of MODEL --probs-out FILE: run in a process whose oneDNN ISA the parent capped."""
    meta = read_meta(args.probs_of)
    paths, _ = val_set(Path(args.data), meta.labels)
    np.save(args.probs_out, probabilities(Path(args.probs_of), paths))
    return 0


def export(ckpt_path: Path, out_dir: Path, data: Path) -> dict[str, Path]:
    from torchvision.models import resnet18
    from checkout_cam.training.finetune import export_trained
    ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=False)
    labels, recipe = ckpt["labels"], ckpt["recipe"]
    model = resnet18(num_classes=len(labels))
    model.load_state_dict(ckpt["best"]["state_dict"])
    extra = {"recipe": recipe, "best_epoch": ckpt["best"]["epoch"], "val_top1": ckpt["best"]["val_top1"],
             "checkpoint": str(ckpt_path)}
    out_dir.mkdir(parents=True, exist_ok=True)
    out = {}
    for bits in ("8", "7"):
        t0 = time.monotonic()
        out[f"int8 {bits}-bit"] = export_trained(model, labels, extra, out_dir / f"int8-{bits}bit.pt",
                                                 recipe["image_size"], int8_calibration=data / "train.txt",
                                                 int8_activations=bits)
        print(f"exported {bits}-bit in {time.monotonic() - t0:.0f} s", flush=True)
    # export_trained writes the fp32 twin beside each int8 one: the same weights, the same file twice.
    out["fp32"] = out_dir / "int8-8bit-fp32.pt"
    torch.save({"state_dict": model.state_dict(), "labels": labels}, out_dir / "weights.pth")
    return out


def bf16_probabilities(weights: Path, fp32_path: Path, paths: list[Path]) -> np.ndarray:
    """The same weights run in bf16 (what AMX / AVX512_BF16 kernels compute)."""
    from torchvision.models import resnet18
    saved = torch.load(weights, map_location="cpu")
    model = resnet18(num_classes=len(saved["labels"]))
    model.load_state_dict(saved["state_dict"])
    model = model.eval().to(torch.bfloat16).to(memory_format=torch.channels_last)
    meta = read_meta(fp32_path)
    pre = Preprocessor(resize=meta.resize_size, crop=meta.input_size, mean=tuple(meta.mean), std=tuple(meta.std))
    out = []
    with torch.inference_mode():
        for i in range(0, len(paths), 16):
            x = pre([read_image(p) for p in paths[i:i + 16]]).to(torch.bfloat16).contiguous(
                memory_format=torch.channels_last)
            out.append(torch.softmax(model(x).float(), 1))
    return torch.cat(out).numpy()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint", nargs="?", type=Path, help="a finetune checkpoint (OUT.ckpt/last.pt)")
    p.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "grocery")
    p.add_argument("--out-dir", type=Path, default=ROOT / "models" / "int8-recipes")
    p.add_argument("--json", type=Path)
    p.add_argument("--reuse", action="store_true", help="use the artifacts already in --out-dir")
    p.add_argument("--probs-of", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--probs-out", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    warnings.simplefilter("ignore")
    if args.probs_of:
        return child(args)
    cpu = cpu_info()
    print(f"cpu: {cpu.describe()}; int8 VNNI usable: {int8_vnni(cpu)}", flush=True)
    if args.reuse:
        models = {"int8 8-bit": args.out_dir / "int8-8bit.pt", "int8 7-bit": args.out_dir / "int8-7bit.pt",
                  "fp32": args.out_dir / "int8-8bit-fp32.pt"}
    else:
        models = export(args.checkpoint, args.out_dir, args.data)
    labels = read_meta(models["fp32"]).labels
    paths, targets = val_set(args.data, labels)
    probs = {name: probabilities(path, paths) for name, path in models.items()}
    for name in ("int8 8-bit", "int8 7-bit"):
        out = args.out_dir / f"{name.replace(' ', '-')}-avx2.npy"
        subprocess.run([sys.executable, __file__, "--data", str(args.data), "--probs-of", str(models[name]),
                        "--probs-out", str(out)], check=True, env={**os.environ, "ONEDNN_MAX_CPU_ISA": "AVX2"})
        probs[f"{name} on AVX2 kernels"] = np.load(out)
    if cpu.bf16 and (args.out_dir / "weights.pth").exists():
        probs["bf16"] = bf16_probabilities(args.out_dir / "weights.pth", models["fp32"], paths)
    ref = probs["fp32"]
    top2 = np.sort(ref, 1)[:, -2:]
    margin = top2[:, 1] - top2[:, 0]
    a = ref.argmax(1)
    report = {"cpu": cpu.model, "cpu_isa": cpu.isa, "n_images": len(paths),
              "fp32_top1": round(float((a == targets).mean()), 4), "variants": {}}
    print(f"{'variant':32s} {'agreement':>9s} {'flips':>5s} {'top-1':>6s} {'mean |dp|':>9s} "
          f"{'max flipped margin':>18s}")
    print(f"{'fp32':32s} {'':9s} {'':5s} {100 * report['fp32_top1']:5.1f}%")
    for name, pr in probs.items():
        if name == "fp32":
            continue
        b = pr.argmax(1)
        flips = a != b
        v = {"agreement": round(float((a == b).mean()), 4), "flips": int(flips.sum()),
             "top1": round(float((b == targets).mean()), 4),
             "prob_shift_mean": round(float(np.abs(pr - ref).max(1).mean()), 4),
             "flipped_margin_max": round(float(margin[flips].max()), 4) if flips.any() else None}
        report["variants"][name] = v
        print(f"{name:32s} {100 * v['agreement']:8.1f}% {v['flips']:5d} {100 * v['top1']:5.1f}% "
              f"{v['prob_shift_mean']:9.4f} {str(v['flipped_margin_max']):>18s}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
