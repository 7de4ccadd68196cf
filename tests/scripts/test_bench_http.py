"""The http bench section's load generator and its Flask baseline answer what they claim to measure."""

import importlib.util
import subprocess
import sys

import cv2
import httpx
import numpy as np
import pytest

from tests.conftest import REPO
from tests.fakes import FakeClassifier
from tests.helpers.http import wait_ready
from tests.web.conftest import running


@pytest.fixture(scope="module")
def bench_http():
    spec = importlib.util.spec_from_file_location("checkout_cam_bench_http", REPO / "scripts" / "bench_http.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def photo(value: int) -> tuple[str, bytes]:
    return f"{value}.jpg", cv2.imencode(".jpg", np.full((40, 60, 3), value, np.uint8))[1].tobytes()


def test_load_counts_answered_requests_and_their_latency(bench_http):
    with running(FakeClassifier(n_classes=4)) as (url, services):
        r = bench_http.load(url, [photo(10), photo(20)], clients=3, seconds=1.0, warmup_s=0.2)
    assert r["errors"] == 0 and r["requests"] > 0 and r["rps"] == r["requests"] / 1.0
    assert len(r["latencies"]) == r["requests"] and 0 < r["p50_ms"] <= r["p95_ms"]
    assert services.engine.stats[1].images >= r["requests"]


def test_the_seed_baseline_is_flask_with_the_same_top3_shape(bench_http, grocery_images):
    pytest.importorskip("flask")
    port = bench_http.free_port()
    proc = subprocess.Popen([sys.executable, str(REPO / "scripts" / "bench_http_seed.py"), "--port", str(port)],
                            cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_ready(url)
        p = grocery_images[0]
        r = httpx.post(url + "/predict", files={"image": (p.name, p.read_bytes())}, timeout=30)
        assert r.status_code == 200
        top = r.json()["top"]
        assert len(top) == 3 and top[0]["prob"] >= top[1]["prob"] >= top[2]["prob"]
    finally:
        proc.terminate()
        proc.wait(10)
