"""`checkout-cam export-model`: build the TorchScript artifact every mode runs."""

from __future__ import annotations

import argparse
from pathlib import Path

from checkout_cam.model.artifact import ArtifactMeta, save_artifact
from checkout_cam.model.weights import imagenet_cache_path, load_weights

NAME = "export-model"
HELP = "make a model artifact (.pt) from ImageNet, a state_dict file, or random weights"
DESCRIPTION = f"""\
Build the one-file TorchScript model artifact that classify, live, serve and
replay load. The artifact embeds its labels and metadata (weights source and
sha256, trained or not, input recipe, torch version).

--weights takes:
  imagenet  torchvision's ResNet18_Weights.IMAGENET1K_V1, from torchvision's cache
            ({imagenet_cache_path()}), downloaded there when online
  PATH      a state_dict saved from torchvision.models.resnet18 (any number of
            classes; give --labels with one class name per line unless it has 1000)
  random    seeded random weights, for tests and demos only: marked UNTRAINED

examples:
  checkout-cam export-model --weights imagenet --out models/resnet18-imagenet.pt
  checkout-cam export-model --weights my_head.pth --labels labels.txt --out models/store.pt
  checkout-cam export-model --weights random --out models/demo-untrained.pt
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--weights", required=True, metavar="SPEC", help="imagenet | random | PATH to a state_dict")
    p.add_argument("--out", required=True, metavar="FILE.pt", help="where to write the artifact")
    p.add_argument("--labels", metavar="FILE", help="class names, one per line, in output order")
    p.add_argument("--seed", type=int, default=0, help="seed for --weights random (default 0)")
    p.add_argument("--name", help="model name shown on screen and in logs (default: from the file name)")


def run(args: argparse.Namespace) -> int:
    loaded = load_weights(args.weights, args.labels, seed=args.seed)
    out = Path(args.out)
    meta = ArtifactMeta(
        name=args.name or out.stem, arch="resnet18", labels=loaded.labels,
        weights_source=loaded.source, weights_sha256=loaded.sha256, trained=loaded.trained)
    save_artifact(loaded.model, meta, out)
    state = "trained" if loaded.trained else "UNTRAINED (random weights: labels are meaningless)"
    print(f"wrote {out}: resnet18, {meta.num_classes} classes, {state}, weights {loaded.source}")
    return 0
