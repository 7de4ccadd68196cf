"""`checkout-cam export-model`: build the TorchScript artifact every mode runs."""

from __future__ import annotations

import argparse
from pathlib import Path

from checkout_cam.cli.common import add_config_option, load_cfg
from checkout_cam.errors import CheckoutCamError

DEFAULT_MAX_IMAGES = 200  # = checkout_cam.model.quantize.DEFAULT_MAX_IMAGES (a test keeps them equal)

NAME = "export-model"
HELP = "make a model artifact (.pt) from ImageNet, a state_dict file, or random weights"
DESCRIPTION = """\
Build the one-file TorchScript model artifact that classify, live, serve and
replay load. The artifact embeds its labels and metadata (weights source and
sha256, trained or not, input recipe, torch version).

It is written to model.path of the config (models/model.pt by default), where
every other command looks for it; --out writes elsewhere.

--weights takes:
  imagenet  torchvision's ResNet18_Weights.IMAGENET1K_V1, from torchvision's cache
            ($TORCH_HOME/hub/checkpoints/, by default ~/.cache/torch/hub/checkpoints/),
            downloaded there when online
  PATH      a state_dict saved from torchvision.models.resnet18 (any number of
            classes; give --labels with one class name per line unless it has 1000)
  random    seeded random weights, for demos without internet and tests: marked
            UNTRAINED everywhere. With --classes CSV (or --labels) it has your
            classes, so `evaluate` runs on it (its accuracy is chance level)

An --out name ending in .onnx writes the same model as ONNX instead, with the
same metadata, run by ONNX Runtime when a mode opens it (optional: pip install
-e ".[onnx]"; fp32 only). On a 2-core CPU it ran batch 1 about 1.3x faster than
the fp32 .pt (scripts/bench.py, peers).

--precision int8 quantizes the model (static post-training quantization, x86
backend: about 2.4x faster than fp32 at batch 1 on a 2-core CPU, see
scripts/bench.py). It needs --calibration: a folder of photos like the camera
sees (searched recursively) or a list file of `path, ...` lines relative to
the list file; up to --calibration-images of them, sampled with a fixed seed,
set the activation ranges. Activations use the full 8 bits where this CPU has
VNNI (AVX512_VNNI, AVX_VNNI, AMX) and 7 bits where it does not (8 would
saturate there); the artifact records which, and an 8-bit one refuses to load
on a CPU without VNNI. Building on a VNNI machine for AVX2-only lanes: add
--int8-activations 7. Check the int8 model against its fp32 twin on your own
labelled photos before using it.

examples:
  checkout-cam export-model --weights imagenet                  # -> models/model.pt
  checkout-cam export-model --weights random --classes ../shared/data/grocery/classes.csv   # offline demo
  checkout-cam export-model --weights my_head.pth --labels labels.txt --out models/store.pt
  checkout-cam export-model --weights imagenet --out models/resnet18-imagenet.onnx
  checkout-cam export-model --weights my_head.pth --labels labels.txt --out models/store-int8.pt \\
      --precision int8 --calibration photos/
  checkout-cam export-model --weights my_head.pth --labels labels.txt --out models/store-int8-avx2.pt \\
      --precision int8 --calibration photos/ --int8-activations 7
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_config_option(p)
    p.add_argument("--weights", required=True, metavar="SPEC", help="imagenet | random | PATH to a state_dict")
    p.add_argument("--out", metavar="FILE.pt", default=None,
                   help="where to write the artifact (.pt TorchScript; .onnx for ONNX Runtime; "
                        "default: model.path, models/model.pt)")
    labels = p.add_mutually_exclusive_group()
    labels.add_argument("--labels", metavar="FILE", help="class names, one per line, in output order")
    labels.add_argument("--classes", metavar="CSV",
                        help="class names and ids (`name, id, ...` per line, like grocery/classes.csv), "
                             "in id order")
    p.add_argument("--seed", type=int, default=0, help="seed for --weights random (default 0)")
    p.add_argument("--name", help="model name shown on screen and in logs (default: from the file name; "
                                  "demo-untrained for --weights random)")
    p.add_argument("--precision", choices=("fp32", "int8"), default="fp32",
                   help="fp32 (default) or int8 (quantized; needs --calibration)")
    p.add_argument("--calibration", metavar="DIR|LIST",
                   help="photos that calibrate int8: a folder (recursive) or a list file of `path, ...` lines")
    p.add_argument("--calibration-images", type=int, default=DEFAULT_MAX_IMAGES, metavar="N",
                   help=f"use at most N calibration photos, sampled with a fixed seed (default "
                        f"{DEFAULT_MAX_IMAGES}; 0 = all)")
    p.add_argument("--int8-activations", choices=("auto", "8", "7"), default="auto",
                   help="int8 activation range: auto (default) = full 8 bits where this CPU has VNNI, 7 bits where it does not; 7 = an artifact that runs right on every x86 CPU (build on a VNNI machine for AVX2-only lanes); 8 = only loads on VNNI CPUs")


def _check_precision_args(args: argparse.Namespace) -> None:
    if args.precision == "int8" and not args.calibration:
        raise CheckoutCamError("--precision int8 needs --calibration DIR|LIST: a few hundred photos like "
                               "the camera sees (e.g. the training photos) set the int8 activation ranges")
    if args.precision == "fp32" and args.calibration:
        raise CheckoutCamError("--calibration is only used with --precision int8")
    if args.precision == "fp32" and args.int8_activations != "auto":
        raise CheckoutCamError("--int8-activations is only used with --precision int8")
    if args.calibration_images < 0:
        raise CheckoutCamError(f"--calibration-images must be 0 (all) or more, got {args.calibration_images}")


def run(args: argparse.Namespace) -> int:
    from checkout_cam.model.artifact import ArtifactMeta, save_artifact
    from checkout_cam.model.quantize import save_int8_artifact
    from checkout_cam.model.weights import load_weights

    _check_precision_args(args)
    out = Path(args.out or load_cfg(args).model.path)
    labels = None
    if args.classes:
        from checkout_cam.training.data import read_classes
        labels = list(read_classes(args.classes).values())
    loaded = load_weights(args.weights, args.labels, seed=args.seed, labels=labels)
    default_name = "demo-untrained" if args.weights == "random" and out.stem == "model" else out.stem
    meta = ArtifactMeta(
        name=args.name or default_name, arch="resnet18", labels=loaded.labels,
        weights_source=loaded.source, weights_sha256=loaded.sha256, trained=loaded.trained)
    if args.precision == "int8":
        save_int8_artifact(loaded.model, meta, out, args.calibration, max_images=args.calibration_images,
                           activations=args.int8_activations)
    else:
        save_artifact(loaded.model, meta, out)
    state = "trained" if loaded.trained else "UNTRAINED (random weights: labels are meaningless)"
    print(f"wrote {out}: resnet18 {args.precision}, {meta.num_classes} classes, {state}, weights {loaded.source}")
    return 0
