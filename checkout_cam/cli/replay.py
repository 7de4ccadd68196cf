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
same model, review policy and overlay as the live lane. Times are each frame's
own presentation timestamp, in seconds from the first frame (not a frame
counter over the header's fps, which can be wrong). Writes an annotated H.264
MP4 (plays in a browser) with the input's frames, size and timing, and a
JSON-lines event log with one line per item. Two runs on the same video give
the same events.

Damaged input: frames that fail to decode are skipped (as ffmpeg does),
counted and logged; when fewer frames decode than the file holds, or the
stream ends before its stated duration, the summary says PARTIAL and the exit
status is 3 (--allow-partial: 0). A resolution change mid-stream is logged;
each frame is judged in its own size and the video is written at the first.

An existing --log is refused by default, so an audit is never mixed into
another by accident; --append adds this run to it (every line carries the
lane_id and a run_id new for each run, so runs stay apart).

exit status: 0 done, 3 done but the input was damaged or incomplete, 1 item events could not be
written, 2 bad input/usage.

examples:
  checkout-cam replay ../shared/data/videos/box.mp4 --out box-annotated.mp4 --log box-events.jsonl
  checkout-cam replay --source recording.mp4 --model models/store.pt --log audit.jsonl
  checkout-cam replay recording.mp4 --log audit.jsonl --append     # a second run into the same log
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("video", nargs="?", default=None, help="the video file (or give --source)")
    add_run_options(p, log="also write the JSON-lines event log here, one line per item (default: none)")
    p.add_argument("--out", metavar="FILE.mp4", default=None, help="write the annotated video here")
    p.add_argument("--gating", action="store_true",
                   help="reuse the last result while the scanning area is still (as live/serve do); "
                        "off by default so an audit runs the model on every frame")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--append", action="store_true",
                   help="add to an existing --log instead of refusing it (lines keep their run_id)")
    p.add_argument("--allow-partial", action="store_true",
                   help="exit 0 even when frames failed to decode or the file ended early (still reported)")


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
    summary = run_replay(cfg, out=args.out, log=log, progress=not args.no_progress, gating=args.gating,
                         append=args.append)
    print(summary.line())
    if args.out:
        print(f"annotated video: {args.out}")
    if log:
        print(f"event log: {log}")
    if summary.lost_events:
        print(f"checkout-cam replay: error: {summary.lost_events} item event(s) could not be written "
              f"(see the errors above)", file=sys.stderr)
        return 1
    return 3 if summary.partial and not args.allow_partial else 0
