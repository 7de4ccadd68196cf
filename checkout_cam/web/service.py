"""The web service beside running lanes (`serve --http`): a feed sink per lane, then the server once the
pipelines exist."""

from __future__ import annotations

import contextlib
import logging
import threading
from dataclasses import dataclass

from checkout_cam.config import Config
from checkout_cam.engine import InferenceEngine
from checkout_cam.render import OverlayRenderer
from checkout_cam.schema import RunIdentity
from checkout_cam.web.lane import LaneFeed, LaneReader, LiveView, ResolutionReader

logger = logging.getLogger(__name__)


@dataclass
class _LaneParts:
    feed: LaneFeed
    renderer: OverlayRenderer
    resolutions: ResolutionReader | None


class LaneWeb:
    """Made before the pipelines: ``add_lane`` gives each lane the feed that is one of its pipeline's
    sinks; ``serving({lane_id: pipeline})`` runs the page and API for as long as the ``with`` block lasts.
    One server, one engine (HTTP photos share the lanes' model), one live view per lane."""

    def __init__(self, cfg: Config, engine: InferenceEngine, listen: tuple[str, int, str | None]):
        self.cfg = cfg
        self.engine = engine
        self.host, self.port, self.token = listen
        self._lanes: dict[str, _LaneParts] = {}
        self.server = None

    def add_lane(self, identity: RunIdentity, *, source: str, policy, renderer: OverlayRenderer,
                 wall_clock_offset: float | None, resolutions: ResolutionReader | None = None) -> LaneFeed:
        """The lane's feed sink. ``resolutions``: event id -> the attendant's answer (the lane's MQTT
        publisher's), shown on its live picture and in the API."""
        if identity.lane_id in self._lanes:
            raise ValueError(f"lane {identity.lane_id} is already on the web")
        feed = LaneFeed(identity=identity, source=source, model=self.engine.classifier.info(),
                        policy=policy.policy_dict(), wall_clock_offset=wall_clock_offset,
                        keep=self.cfg.http.recent_events)
        self._lanes[identity.lane_id] = _LaneParts(feed, renderer, resolutions)
        return feed

    @contextlib.contextmanager
    def serving(self, pipelines: dict, stop: threading.Event | None = None):
        from checkout_cam.web.app import Lane, WebServices, create_app
        from checkout_cam.web.server import WebServer

        h = self.cfg.http
        missing = set(self._lanes) ^ set(pipelines)
        if missing:
            raise ValueError(f"lanes without a pipeline or a feed: {sorted(missing)}")
        lanes: list[Lane] = []
        try:
            for lane_id, parts in self._lanes.items():
                reader = LaneReader(pipelines[lane_id], lane_id)
                view = LiveView(parts.feed, parts.renderer, reader, fps=h.stream_fps, quality=h.jpeg_quality,
                                max_viewers=h.max_viewers, resolutions=parts.resolutions)
                lanes.append(Lane(parts.feed, reader, view, stale_after_ms=self.cfg.render.stale_after_ms,
                                  resolutions=parts.resolutions))
            app = create_app(WebServices(self.cfg, self.engine, lanes, token=self.token))
            with WebServer(app, self.host, self.port, stop=stop) as server:
                self.server = server
                auth = "" if self.token is None else " (bearer token required)"
                if len(lanes) == 1:
                    logger.info("lane %s on the web: %s%s", lanes[0].lane_id, server.url, auth)
                else:
                    logger.info("%d lanes on the web: %s%s (each at /?lane=ID)", len(lanes), server.url, auth)
                try:
                    yield server
                finally:
                    _close_views(lanes)
        finally:
            _close_views(lanes)


def _close_views(lanes) -> None:
    """Ends the MJPEG streams, so the server's shutdown need not wait for them (closing twice is harmless)."""
    for lane in lanes:
        lane.view.close()
