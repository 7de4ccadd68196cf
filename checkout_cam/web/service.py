"""The web service beside a running lane (`serve --http`): the feed sink, then the server once the
pipeline exists."""

from __future__ import annotations

import contextlib
import logging
import threading

from checkout_cam.config import Config
from checkout_cam.engine import InferenceEngine
from checkout_cam.web.lane import LaneFeed, LaneReader, LiveView

logger = logging.getLogger(__name__)


class LaneWeb:
    """Made before the pipeline (its ``feed`` is one of the pipeline's sinks); ``serving(pipeline)``
    runs the page and API for as long as the ``with`` block lasts."""

    def __init__(self, cfg: Config, parts, engine: InferenceEngine, listen: tuple[str, int, str | None], *,
                 wall_clock_offset: float | None):
        self.cfg = cfg
        self.parts = parts
        self.engine = engine
        self.host, self.port, self.token = listen
        self.feed = LaneFeed(identity=parts.identity, source=parts.source.name, model=parts.classifier.info(),
                             policy=parts.policy.policy_dict(), wall_clock_offset=wall_clock_offset,
                             keep=cfg.http.recent_events)
        self.server = None

    @contextlib.contextmanager
    def serving(self, pipeline, stop: threading.Event | None = None):
        from checkout_cam.web.app import Lane, WebServices, create_app
        from checkout_cam.web.server import WebServer

        h = self.cfg.http
        reader = LaneReader(pipeline, self.parts.identity.lane_id)
        view = LiveView(self.feed, self.parts.renderer, reader, fps=h.stream_fps, quality=h.jpeg_quality,
                        max_viewers=h.max_viewers)
        lane = Lane(self.feed, reader, view, stale_after_ms=self.cfg.render.stale_after_ms)
        app = create_app(WebServices(self.cfg, self.engine, lane, token=self.token))
        with WebServer(app, self.host, self.port, stop=stop) as server:
            self.server = server
            logger.info("lane %s on the web: %s%s", reader.lane_id, server.url,
                        "" if self.token is None else " (bearer token required)")
            try:
                yield server
            finally:
                view.close()  # ends the MJPEG streams, so the server's shutdown need not wait for them
