"""`checkout-cam validate-config`: check a settings file, or print the defaults."""

from __future__ import annotations

import argparse
import sys

from checkout_cam.config import DEFAULT_CONFIG_PATH, load_config, path_problems, render_defaults_yaml
from checkout_cam.errors import ConfigError

NAME = "validate-config"
HELP = "check a config file (exit 0) or print each error by key path (exit 2)"
DESCRIPTION = """\
Check a checkout_cam settings file against the declared schema: types,
ranges (every number finite: NaN and inf are refused) and unknown keys; then
that the files it names are there on this machine: model.path exists and is
readable, a video file in source.uri exists, serve.log_path and
live.snapshot_dir can be written. Relative paths resolve against the current
directory (under systemd: the unit's WorkingDirectory). Prints each problem
with its key path, e.g.
  review.min_confidence: must be <= 1.0, got 1.5

examples:
  checkout-cam validate-config                 # ./config.yaml
  checkout-cam validate-config /etc/checkout-cam/config.yaml
  checkout-cam validate-config --print-defaults > my-config.yaml
  checkout-cam validate-config --no-paths lane3.yaml   # prepared for another machine
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("file", nargs="?", default=None, help=f"config file (default: {DEFAULT_CONFIG_PATH})")
    p.add_argument("--print-defaults", action="store_true",
                   help="print a complete config with every default and its description, and exit")
    p.add_argument("--no-paths", action="store_true",
                   help="check the settings only, not the files they name (a config for another machine)")


def run(args: argparse.Namespace) -> int:
    if args.print_defaults:
        sys.stdout.write(render_defaults_yaml())
        return 0
    path = args.file or DEFAULT_CONFIG_PATH
    try:
        cfg = load_config(path)
        errors = [] if args.no_paths else path_problems(cfg)
    except ConfigError as exc:
        errors = exc.errors
    if errors:
        print(f"{path}: {len(errors)} error(s)", file=sys.stderr)
        for err in errors:
            print(f"  {err}", file=sys.stderr)
        return 2
    print(f"{path}: OK" + (" (settings only; paths not checked)" if args.no_paths else ""))
    return 0
