"""`checkout-cam` command line: one module per subcommand, registered in COMMANDS."""

from __future__ import annotations

import argparse
import logging
import sys

from checkout_cam import __version__
from checkout_cam.cli import (
    classify, console, doctor, evaluate, events, export_model, finetune, live, replay, serve, validate_config,
    web)
from checkout_cam.errors import CheckoutCamError

logger = logging.getLogger(__name__)

# Order is the order `--help` lists them in.
COMMANDS = [export_model, classify, replay, live, serve, web, events, console, doctor, finetune, evaluate,
            validate_config]

DESCRIPTION = """\
Real-time camera checkout assistant: a ResNet-18 classifies what is held in
front of the camera, draws the Top-3 labels and flags unsure items for the
cashier.

First make the model artifact (models/model.pt, config model.path, which every
command uses), then use it:
  checkout-cam export-model --weights imagenet     # needs internet or torchvision's cache
  checkout-cam export-model --weights random       # offline: an UNTRAINED demo model
  checkout-cam classify photo.jpg
  checkout-cam doctor                              # is this lane ready to go live?
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="checkout-cam", description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Run `checkout-cam COMMAND --help` for the options and examples of each command.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0,
                        help="more log output (-v info, -vv debug); logs go to stderr")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in COMMANDS:
        p = sub.add_parser(module.NAME, help=module.HELP, description=module.DESCRIPTION,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        p.add_argument("-v", "--verbose", action="count", default=argparse.SUPPRESS,
                       help="more log output (-v info, -vv debug)")
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


def setup_logging(verbosity: int) -> None:
    level = logging.WARNING if verbosity <= 0 else logging.INFO if verbosity == 1 else logging.DEBUG
    logging.basicConfig(level=level, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    setup_logging(args.verbose)
    try:
        return int(args._run(args) or 0)
    except CheckoutCamError as exc:
        print(f"checkout-cam {args.command}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"checkout-cam {args.command}: interrupted", file=sys.stderr)
        return 130
