"""Options and setup shared by several subcommands."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # `--help` must not pay for torch: the runtime is imported where a command runs
    from checkout_cam.config import Config
    from checkout_cam.model import Classifier


def add_config_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", metavar="FILE", default=None,
                   help="settings file (default: ./config.yaml if present, else built-in defaults)")


def add_model_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", metavar="FILE", default=None,
                   help="model artifact .pt/.onnx (default: model.path from the config, models/model.pt)")


def load_cfg(args: argparse.Namespace, overrides: dict[str, str] | None = None) -> "Config":
    """Config file, then CLI flags on top: ``overrides`` maps arg names to dotted settings."""
    from checkout_cam.config import load_config, override
    cfg = load_config(getattr(args, "config", None))
    mapping = {"model": "model.path", **(overrides or {})}
    for arg, dotted in mapping.items():
        value = getattr(args, arg, None)
        if value is not None:
            cfg = override(cfg, dotted, value)
    return cfg


def open_model(cfg: "Config") -> "Classifier":
    from checkout_cam.model import open_classifier
    return open_classifier(cfg.model.path, roi=cfg.preprocess.roi, threads=cfg.model.threads)


def add_run_options(p: argparse.ArgumentParser, *, log: bool | str) -> None:
    """What live, serve and replay share: config, model, source (and the event log).

    ``log``: False = no --log; True = --log defaulting to serve.log_path; a string = its help text
    (replay writes a log only when asked). There is no --realtime: live and serve always pace a
    video file like a camera, replay never does.
    """
    add_config_option(p)
    add_model_option(p)
    p.add_argument("--source", metavar="S", default=None,
                   help="camera index (0), video file, or rtsp:// / http:// URL (default: source.uri)")
    if log:
        p.add_argument("--log", metavar="FILE", default=None,
                       help=log if isinstance(log, str) else
                       "JSON-lines event log, one line per item (default: serve.log_path)")


RUN_OVERRIDES = {"source": "source.uri", "log": "serve.log_path"}
