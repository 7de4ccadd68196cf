"""`checkout-cam validate-config`: check a settings file, or print the defaults."""

from __future__ import annotations

import argparse
import sys

from checkout_cam.config import DEFAULT_CONFIG_PATH, load_config, render_defaults_yaml
from checkout_cam.errors import ConfigError

NAME = "validate-config"
HELP = "check a config file (exit 0) or print each error by key path (exit 2)"
DESCRIPTION = """\
Check a checkout_cam settings file against the declared schema: types,
ranges and unknown keys. Prints each problem with its key path, e.g.
  review.min_confidence: must be <= 1.0, got 1.5

examples:
  checkout-cam validate-config                 # ./config.yaml
  checkout-cam validate-config /etc/checkout-cam/config.yaml
  checkout-cam validate-config --print-defaults > my-config.yaml
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("file", nargs="?", default=None, help=f"config file (default: {DEFAULT_CONFIG_PATH})")
    p.add_argument("--print-defaults", action="store_true",
                   help="print a complete config with every default and its description, and exit")


def run(args: argparse.Namespace) -> int:
    if args.print_defaults:
        sys.stdout.write(render_defaults_yaml())
        return 0
    path = args.file or DEFAULT_CONFIG_PATH
    try:
        load_config(path)
    except ConfigError as exc:
        print(f"{path}: {len(exc.errors)} error(s)", file=sys.stderr)
        for err in exc.errors:
            print(f"  {err}", file=sys.stderr)
        return 2
    print(f"{path}: OK")
    return 0
