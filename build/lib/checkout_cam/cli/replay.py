"""`checkout-cam replay`: process a recorded video frame by frame, for audits and testing."""

from __future__ import annotations

import argparse
import sys

from checkout_cam.cli.common import RUN_OVERRIDES, add_run_options, load_cfg
from checkout_cam.errors import CheckoutCamError

NAME = "replay"
HELP = "run a recorded video through the pipeline: annotated video + item event log"
DESCRIPTION = """\
Process every frame of a recorded video, in order (none dropped), with the
same model, review policy and overlay as the live lane. Writes an annotated
video with the input's frame count, size and fps, and a JSON-lines event log
with one line per item (times are seconds into the video). Two runs on the
same video give the same events.

examples:
  checkout-cam replay ../shared/data/videos/box.mp4 --out box-annotated.mp4 --log box-events.jsonl
  checkout-cam replay --source recording.mp4 --model models/store.pt --log audit.jsonl
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("video", nargs="?", default=None, help="the video file (or give --source)")
    add_run_options(p, log="also write the JSON-lines event log here, one line per item (default: none)")
    p.add_argument("--out", metavar="FILE.mp4", default=None, help="write the annotated video here")
    p.add_argument("--gating", action="store_true",
                   help="reuse the last result while the scanning area is still (as live/serve do); "
                        "off by default so an audit runs the model on every frame")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from checkout_cam.modes.replay import run_replay  # loaded only for this command

    if args.video and args.source and args.video != args.source:
        raise CheckoutCamError("give the video either as VIDEO or as --source, not both")
    args.source = args.video or args.source
    log = args.log  # replay writes an event log only when asked
    args.log = None
    cfg = load_cfg(args, RUN_OVERRIDES)
    if args.source is None and cfg.source.uri.isdigit():
        raise CheckoutCamError("replay needs a video file: checkout-cam replay VIDEO")
    summary = run_replay(cfg, out=args.out, log=log, progress=not args.no_progress, gating=args.gating)
    print(summary.line())
    if args.out:
        print(f"annotated video: {args.out}")
    if log:
        print(f"event log: {log}")
    if summary.lost_events:
        print(f"checkout-cam replay: error: {summary.lost_events} item event(s) could not be written "
              f"(see the errors above)", file=sys.stderr)
        return 1
    return 0
