"""`checkout-cam live`: the lane's camera window with the Top-3 overlay."""

from __future__ import annotations

import argparse

from checkout_cam.cli.common import RUN_OVERRIDES, add_run_options, load_cfg

NAME = "live"
HELP = "open the camera window with the Top-3 overlay and review flags"
DESCRIPTION = """\
Show the camera with the overlay: Top-3 labels with bars, a green state for a
confident item and REVIEW (with the reason) for an unsure one, and a status
line (camera fps, inference fps, latency, dropped frames). A video file stands
in for a camera: it is always paced at its own fps, and frames are dropped when
the model is slower (as with a camera). It needs a display (DISPLAY or
WAYLAND_DISPLAY); on a headless box use `checkout-cam serve`.

keys: q/Esc quit, space pause, s save snapshot (raw + annotated PNG),
      b re-take the empty-scene background

examples:
  checkout-cam live --source 0
  checkout-cam live --source ../shared/data/videos/box.mp4      # a file paced like a camera
  checkout-cam live --source rtsp://127.0.0.1:8554/lane1
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_run_options(p, log=False)
    p.add_argument("--seconds", type=float, default=None, help="quit after this many seconds (demos, tests)")


def run(args: argparse.Namespace) -> int:
    from checkout_cam.modes.live import run_live  # loaded only for this command

    cfg = load_cfg(args, RUN_OVERRIDES)
    run_live(cfg, max_seconds=args.seconds)
    return 0
