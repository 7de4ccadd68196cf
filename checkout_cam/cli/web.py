"""`checkout-cam web`: the photo page and HTTP API on their own, no camera."""

from __future__ import annotations

import argparse
import logging

from checkout_cam.cli.common import add_config_option, add_model_option, load_cfg

logger = logging.getLogger(__name__)

NAME = "web"
HELP = "the photo page and HTTP API (POST /predict), no camera"
DESCRIPTION = """\
Serve the web page where a person drops a product photo and sees the Top-3
labels as bars, and the JSON API a checkout front end calls:

  POST /predict      multipart field 'image' (one or several) or a raw image body; ?top=K
  GET  /healthz /readyz /api/status /metrics (Prometheus) /docs (OpenAPI)

Concurrent requests share model calls (up to http.max_batch images). It
listens on 127.0.0.1:8080 unless told otherwise; another address needs
http.token (then every route but /healthz wants 'Authorization: Bearer TOKEN')
or http.allow_anonymous: true. Ctrl-C or SIGTERM stops it.

examples:
  checkout-cam web --model models/resnet18-imagenet.pt
  curl -F image=@photo.jpg http://127.0.0.1:8080/predict
  CHECKOUT_CAM_HTTP_TOKEN=$(cat /etc/checkout-cam/token) checkout-cam web --http 0.0.0.0:8080
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_config_option(p)
    add_model_option(p)
    p.add_argument("--http", metavar="HOST:PORT", default=None,
                   help="address to listen on (default: http.listen, else 127.0.0.1:8080)")


def run(args: argparse.Namespace) -> int:
    from checkout_cam.cli.common import open_model
    from checkout_cam.engine import InferenceEngine
    from checkout_cam.web.app import WebServices, create_app
    from checkout_cam.web.server import WebServer, resolve_listen

    cfg = load_cfg(args)
    host, port, token = resolve_listen(cfg, args.http)  # refuse a bad address before loading the model
    if args.verbose == 0:
        logging.getLogger("checkout_cam").setLevel(logging.INFO)
    clf = open_model(cfg)
    engine = InferenceEngine.from_config(clf, cfg)
    engine.warm_up()
    with engine:
        app = create_app(WebServices(cfg, engine, token=token))
        server = WebServer(app, host, port)
        untrained = " (UNTRAINED model: its labels are meaningless)" if not clf.trained else ""
        logger.info("photo service for %s%s on %s%s", clf.name, untrained, server.url,
                    "" if token is None else " (bearer token required)")
        print(f"checkout-cam web: open {server.url}/ (API docs at {server.url}/docs); Ctrl-C stops", flush=True)
        server.serve_forever()
    return 0
