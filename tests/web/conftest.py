"""A real server for the web tests: the app under uvicorn on a free 127.0.0.1 port, a real model."""

from __future__ import annotations

import contextlib

import httpx
import pytest

from checkout_cam.config import Config, config_from_dict, to_dict
from checkout_cam.engine import InferenceEngine
from checkout_cam.model import open_classifier


def make_cfg(**http) -> Config:
    data = to_dict(Config())
    data["http"].update(http)
    return config_from_dict(data)


@contextlib.contextmanager
def running(classifier, cfg: Config | None = None, *, lane=None, lanes=(), token=None):
    """``(base_url, services)`` of the app serving ``classifier`` (and ``lane``, or ``lanes``) until the block
    ends."""
    from checkout_cam.web.app import WebServices, create_app
    from checkout_cam.web.server import WebServer

    cfg = cfg or make_cfg()
    engine = InferenceEngine.from_config(classifier, cfg)
    with engine:
        services = WebServices(cfg, engine, [lane] if lane is not None else list(lanes), token=token)
        with WebServer(create_app(services), "127.0.0.1", 0) as server:
            yield server.url, services


@pytest.fixture(scope="session")
def classifier(random_artifact):
    return open_classifier(random_artifact)


@pytest.fixture(scope="module")
def server(classifier):
    cfg = make_cfg(max_upload_bytes=2_000_000, max_images=4)
    with running(classifier, cfg) as (url, services):
        yield url, services


@pytest.fixture
def client(server):
    url, _ = server
    with httpx.Client(base_url=url, timeout=30) as c:
        yield c

