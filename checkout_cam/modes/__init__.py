"""The three ways the product runs: live window, headless service, replay of recorded video.

Each mode builds the same parts (model, source, review policy, renderer) from
the config, then drives a Pipeline in its own way.
"""

from __future__ import annotations

import logging
import signal
import threading
from dataclasses import dataclass
from pathlib import Path

from checkout_cam.config import Config
from checkout_cam.errors import CheckoutCamError
from checkout_cam.model import Classifier, open_classifier
from checkout_cam.model.classifier import lane_threads
from checkout_cam.render import OverlayRenderer
from checkout_cam.review import ReviewPolicy
from checkout_cam.schema import RunIdentity
from checkout_cam.sources import FrameSource, open_source

logger = logging.getLogger(__name__)


@dataclass
class Parts:
    classifier: Classifier
    source: FrameSource
    policy: ReviewPolicy
    renderer: OverlayRenderer
    identity: RunIdentity


def build_parts(cfg: Config, stop: threading.Event, *, realtime: bool | None = None, lane: bool = False) -> Parts:
    """A mistyped video path is reported at once; then the model (the slowest), then the source.
    ``lane``: a camera's lane (live, serve), whose model threads follow ``lane_threads``."""
    check_source_uri(cfg.source.uri)
    threads = lane_threads(cfg.model.path, cfg.model.threads) if lane else cfg.model.threads
    clf = open_classifier(cfg.model.path, roi=cfg.preprocess.roi, threads=threads)
    return lane_parts(cfg, clf, stop, realtime=realtime)


def lane_parts(cfg: Config, clf: Classifier, stop: threading.Event, *, realtime: bool | None = None) -> Parts:
    """One lane's source, review policy, overlay and identity around a loaded model (``cfg``: the lane's
    config; several lanes in one serve share ``clf``)."""
    s = cfg.source
    source = open_source(s.uri, realtime=s.realtime if realtime is None else realtime, stop=stop,
                         reconnect_initial_s=s.reconnect_initial_s, reconnect_max_s=s.reconnect_max_s,
                         stall_timeout_s=s.stall_timeout_s, loop=s.loop)
    identity = RunIdentity(cfg.serve.lane_id)
    policy = ReviewPolicy(cfg.review, trained=clf.trained, labels=clf.labels, roi=cfg.preprocess.roi,
                          top_k=cfg.model.top_k, identity=identity,
                          capture_clock=source.live)  # live/serve: when the frame was captured
    return Parts(clf, source, policy, renderer_for(cfg, clf), identity)


def renderer_for(cfg: Config, clf: Classifier) -> OverlayRenderer:
    """The overlay of a lane (``cfg``: its config, whose ROI the overlay outlines)."""
    return OverlayRenderer(model_name=clf.name, trained=clf.trained, top_k=cfg.model.top_k,
                           stale_after_ms=cfg.render.stale_after_ms, font_scale=cfg.render.font_scale,
                           roi=cfg.preprocess.roi)


def check_source_uri(uri: str) -> None:
    """The cheap part of opening a source, before the seconds the model takes to load."""
    if not uri.isdigit() and "://" not in uri:
        path = Path(uri)
        if not path.exists():
            raise CheckoutCamError(f"video file not found: {path} (a camera is an index like 0, a stream "
                                   f"an rtsp:// or http:// URL)")
        if path.is_dir():
            raise CheckoutCamError(f"{path} is a folder, not a video file")


def serve_signals(stop: threading.Event) -> threading.Event:
    """The service's signals (from the main thread only; elsewhere nothing is installed): SIGTERM and
    SIGINT set ``stop``; SIGHUP sets the returned event, meaning reopen the event logs (logrotate's
    convention: after moving a log away it sends SIGHUP, whose default action kills)."""
    reopen = threading.Event()
    if threading.current_thread() is threading.main_thread():
        stop_on_signals(stop)
        signal.signal(signal.SIGHUP, lambda signum, frame: reopen.set())
    return reopen


def stop_on_signals(stop: threading.Event) -> None:
    """SIGTERM (systemd, docker) and SIGINT (Ctrl-C) both mean: finish cleanly."""
    def handler(signum, _frame):
        logger.info("received %s: stopping", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
