"""`checkout-cam serve`: the headless service for systemd."""

from __future__ import annotations

import argparse
import logging

from checkout_cam.cli.common import RUN_OVERRIDES, add_run_options, load_cfg

NAME = "serve"
HELP = "run headless: log item events (JSON lines) for the store; systemd-ready"
DESCRIPTION = """\
Run without a window, as a systemd service (systemd/checkout-cam.service).
Each item becomes one JSON line in the event log (rotated by size, flushed per
line) and a line on stderr (journald); a stats line follows every
serve.stats_interval_s seconds. A dropped camera is retried with backoff and
never ends the service. SIGTERM or Ctrl-C closes the open item, flushes and
exits 0. With NOTIFY_SOCKET set it speaks the systemd notify protocol
(READY, WATCHDOG, STOPPING).

examples:
  checkout-cam serve --config /etc/checkout-cam/config.yaml
  checkout-cam serve --source ../shared/data/videos/box.mp4 --log logs/events.jsonl   # a file paced like a camera
  checkout-cam serve --http 127.0.0.1:8080   # + the web page with the live view, the API, /metrics

With --http (or http.listen in the config) the lane is also on the web: the
photo page and /predict of `checkout-cam web`, plus the annotated live picture
(/stream.mjpg), /api/status, /api/events, /latest.jpg and Prometheus /metrics.
Camera frames go to the model before HTTP photos.

Several lanes, one model: list them in serve.lanes (each its lane_id and
source, optionally roi, min_confidence, min_margin, log_path; see the README).
Each lane logs to its own file (serve.log_path, or --log, with the lane id
added); with --http the page opens on an overview of every lane and each lane
has its own view (/?lane=ID, /lanes/ID/stream.mjpg, /api/lanes/ID). --source
does not apply there: each lane names its own camera.
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_run_options(p, log=True)
    p.add_argument("--http", metavar="HOST:PORT", nargs="?", const="", default=None,
                   help="also serve the web page and API (default address: http.listen, else 127.0.0.1:8080)")


def run(args: argparse.Namespace) -> int:
    from checkout_cam.modes.serve import run_serve  # loaded only for this command

    cfg = load_cfg(args, RUN_OVERRIDES)
    if cfg.serve.lanes and args.source is not None:
        from checkout_cam.errors import CheckoutCamError
        n = len(cfg.serve.lanes)
        raise CheckoutCamError(f"--source {args.source}: the config lists {n} lane{'s' if n != 1 else ''} (serve.lanes), "
                               f"each with its own source; drop --source, or change a lane's source in the config")
    if args.verbose == 0:
        logging.getLogger("checkout_cam").setLevel(logging.INFO)  # a service logs its events and stats
    return run_serve(cfg, http=args.http)
