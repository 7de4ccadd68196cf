"""`checkout-cam doctor`: is this lane ready to go live? What to fix if not."""

from __future__ import annotations

import argparse
import json

from checkout_cam.cli.common import RUN_OVERRIDES, add_run_options, load_cfg

NAME = "doctor"
HELP = "check a lane before it goes live (config, model, camera, log folder, CPU) and say what to fix"
DESCRIPTION = """\
Check what serve needs, with the same config and command-line overrides:
  config     the settings are valid
  model      model.path loads, runs a frame, and is trained (an UNTRAINED demo model fails)
  camera     source.uri opens and gives frames: how many fps, what size
  event log  serve.log_path's folder is writable (a real test write), disk space
  cpu        cores and instruction sets (AVX2, AVX-512, VNNI, BF16, AMX from /proc/cpuinfo)
Each line says OK, WARN or FAIL, and what to fix. Exit status 0 when nothing
must be fixed, 2 when something must (a FAIL).

examples:
  checkout-cam doctor
  checkout-cam doctor --config /etc/checkout-cam/config.yaml
  checkout-cam doctor --source rtsp://10.0.0.12/stream1 --seconds 5
  checkout-cam doctor --json
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_run_options(p, log=True)
    p.add_argument("--seconds", type=float, default=3.0, metavar="S",
                   help="how long to read the camera to measure its fps (default 3)")
    p.add_argument("--no-camera", action="store_true", help="skip the camera check (e.g. while it is in use)")
    p.add_argument("--json", action="store_true", help="one JSON object: ok and the findings")


def run(args: argparse.Namespace) -> int:
    from checkout_cam.doctor import FAIL, run_checks

    findings = run_checks(args.config, lambda: load_cfg(args, RUN_OVERRIDES),
                          camera_seconds=max(0.5, args.seconds), camera=not args.no_camera)
    failed = [f for f in findings if f.status == FAIL]
    if args.json:
        print(json.dumps({"ok": not failed, "findings": [f.to_dict() for f in findings]}))
    else:
        for f in findings:
            print(f.line())
        print(f"\n{len(failed)} problem(s) to fix before this lane goes live" if failed else
              "\nready: nothing to fix")
    return 2 if failed else 0
