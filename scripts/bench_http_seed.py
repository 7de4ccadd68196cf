#!/usr/bin/env python3
"""The bench's baseline: the source material's web service, as it describes it.

Flask, one request at a time (the development server, threaded=False), and for
each upload: PIL decode, torchvision transforms (Resize 256, CenterCrop 224,
ToTensor, Normalize), the eager torchvision ResNet-18, softmax, Top-3 as JSON.
The weights are the bench's seeded random ones, so it computes what our
artifacts compute.

    PYTHONPATH=. python3 scripts/bench_http_seed.py --port 8090
"""

from __future__ import annotations

import argparse
import io
import logging
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's choice)")
    args = p.parse_args()

    import torch
    from flask import Flask, jsonify, request
    from PIL import Image
    from torchvision import transforms

    from checkout_cam.model.weights import random_weights

    if args.threads:
        torch.set_num_threads(args.threads)
    w = random_weights(seed=0)
    model, labels = w.model.eval(), w.labels
    tf = transforms.Compose([transforms.Resize(256), transforms.CenterCrop(224), transforms.ToTensor(),
                             transforms.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])])
    app = Flask("seed")
    logging.getLogger("werkzeug").setLevel(logging.ERROR)

    @app.get("/readyz")
    def ready():
        return jsonify(status="ready")

    @app.post("/predict")
    def predict():
        f = request.files.get("image")
        if f is None:
            return jsonify(error="no file"), 400
        img = Image.open(io.BytesIO(f.read())).convert("RGB")
        with torch.no_grad():
            probs = torch.softmax(model(tf(img).unsqueeze(0)), dim=1)[0]
        values, indices = torch.topk(probs, 3)
        return jsonify(top=[{"label": labels[int(i)], "index": int(i), "prob": float(v)}
                            for v, i in zip(values, indices)])

    app.run(host="127.0.0.1", port=args.port, threaded=False)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
