"""The HTTP API against a real server and a real (untrained) model: every route and every bad input."""

from __future__ import annotations

import struct
import subprocess
import sys
import threading
import zlib

import cv2
import httpx
import numpy as np
import pytest

from checkout_cam.images import read_image
from tests.conftest import REPO
from tests.helpers.http import wait_ready
from tests.test_engine import HeldClassifier
from tests.web.conftest import make_cfg, running


def jpeg(shape=(120, 160), value=128) -> bytes:
    ok, buf = cv2.imencode(".jpg", np.full((*shape, 3), value, np.uint8))
    return buf.tobytes()


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def bomb_png(w=60000, h=60000) -> bytes:
    """A few hundred bytes whose header promises 3.6 billion pixels."""
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", zlib.compress(b"\x00" * 64))
            + png_chunk(b"IEND", b""))


def corrupt_png() -> bytes:
    """A valid header with pixel data that does not decode."""
    ihdr = struct.pack(">IIBBBBB", 64, 64, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", b"not zlib at all") + png_chunk(b"IEND", b"")


SECURITY_HEADERS = ("x-content-type-options", "content-security-policy", "x-frame-options")


def check_headers(r: httpx.Response) -> None:
    assert r.headers["x-content-type-options"] == "nosniff"
    assert "default-src 'none'" in r.headers["content-security-policy"]
    assert "access-control-allow-origin" not in r.headers
    assert "Traceback" not in r.text


# ---------------------------------------------------------------- /predict


def test_predict_a_grocery_photo_answers_top3_with_the_review_flag(client, grocery_images, classifier):
    path = grocery_images[0]
    r = client.post("/predict", files={"image": (path.name, path.read_bytes(), "image/jpeg")})
    assert r.status_code == 200, r.text
    check_headers(r)
    body = r.json()
    assert set(body) == {"top", "trained", "model", "review", "review_reasons", "latency_ms", "filename"}
    assert len(body["top"]) == 3 and body["filename"] == path.name
    probs = [t["prob"] for t in body["top"]]
    assert probs == sorted(probs, reverse=True)
    # The same numbers as the classifier on the same file (the lane's preprocessing).
    expected = classifier.classify([read_image(path)], 3)[0]
    assert [t["index"] for t in body["top"]] == [p.index for p in expected.top]
    assert probs == pytest.approx([p.prob for p in expected.top], abs=1e-5)
    assert body["model"] == {"name": classifier.name, "sha256": classifier.sha256}
    assert body["trained"] is False and body["review"] is True and "untrained" in body["review_reasons"]
    assert body["latency_ms"] > 0


def test_predict_takes_top_k_several_files_and_a_raw_body(client, grocery_images):
    a, b = grocery_images[:2]
    r = client.post("/predict?top=5", files=[("image", (a.name, a.read_bytes())), ("image", (b.name, b.read_bytes()))])
    assert r.status_code == 200, r.text
    answers = r.json()
    assert [x["filename"] for x in answers] == [a.name, b.name] and all(len(x["top"]) == 5 for x in answers)
    raw = client.post("/predict", content=a.read_bytes(), headers={"content-type": "image/jpeg"})
    assert raw.status_code == 200 and raw.json()["top"] == answers[0]["top"][:3]


@pytest.mark.parametrize("query", ["top=0", "top=abc", "top=1000"])
def test_a_bad_top_is_422_naming_it(client, query):
    r = client.post(f"/predict?{query}", files={"image": ("a.jpg", jpeg())})
    assert r.status_code == 422 and "top" in r.json()["detail"]
    check_headers(r)


def test_no_file_is_400(client):
    r = client.post("/predict", files={"photo": ("a.jpg", jpeg())})
    assert r.status_code == 400 and "'image'" in r.json()["detail"] and "photo" in r.json()["detail"]
    r = client.post("/predict", content=b"", headers={"content-type": "image/jpeg"})
    assert r.status_code == 400 and "empty" in r.json()["detail"]
    r = client.post("/predict", data={"image": "just text"})
    assert r.status_code == 415


def test_not_an_image_is_415_corrupt_is_422_a_bomb_is_413(client):
    r = client.post("/predict", files={"image": ("notes.txt", b"hello, this is text", "text/plain")})
    assert r.status_code == 415 and "notes.txt: not an image" in r.json()["detail"]
    r = client.post("/predict", files={"image": ("broken.png", corrupt_png(), "image/png")})
    assert r.status_code == 422 and "broken.png: corrupt PNG" in r.json()["detail"]
    r = client.post("/predict", files={"image": ("bomb.png", bomb_png(), "image/png")})
    assert r.status_code == 413 and "decompression bomb" in r.json()["detail"]
    r = client.post("/predict", json={"image": "x"})
    assert r.status_code == 415 and "multipart" in r.json()["detail"]


def test_a_body_over_the_limit_is_413_by_its_length_or_while_streaming(client):
    big = b"\xff\xd8" + b"0" * 2_100_000
    r = client.post("/predict", files={"image": ("big.jpg", big)})
    assert r.status_code == 413 and "2,000,000 byte limit" in r.json()["detail"]

    sent = {"bytes": 0}

    def chunks():  # no Content-Length: the server must stop it as it passes the limit
        for _ in range(100):
            sent["bytes"] += 100_000
            yield b"0" * 100_000

    try:
        r = client.post("/predict", content=chunks(), headers={"content-type": "image/jpeg"})
        assert r.status_code == 413
    except httpx.HTTPError:
        pass   # the server may close the connection before the client finished sending: refused either way
    assert client.get("/healthz").status_code == 200


def test_too_many_files_is_413(client):
    files = [("image", (f"{i}.jpg", jpeg())) for i in range(5)]
    r = client.post("/predict", files=files)
    assert r.status_code == 413 and "http.max_images" in r.json()["detail"]


MALFORMED = [
    b"no boundary here at all",
    b"--BOUND\r\nContent-Disposition: form-data; name=\"image\"; filename=\"a.jpg\"\r\n\r\nxx",   # never ends
    b"--BOUND\r\n\r\n\r\n--BOUND--",
    b"--WRONG\r\nContent-Disposition: form-data; name=\"image\"\r\n\r\nabc\r\n--WRONG--\r\n",
    b"--BOUND\r\nContent-Disposition: form-data; name=\"image\"\r\n\r\n" + b"\x00" * 50 + b"\r\n--BOUND--\r\n",
    b"\r\n\r\n--BOUND--",
    b"--BOUND\r\nContent-Disposition\r\n\r\nabc\r\n--BOUND--\r\n",
    b"--BOUND\r\n" + b"X" * 5000 + b"\r\n\r\n--BOUND--",
    b"--BOUND--",
    b"",
]


def test_twenty_malformed_multipart_bodies_in_a_row_leave_the_server_answering(client, grocery_images):
    for i in range(20):
        body = MALFORMED[i % len(MALFORMED)]
        ctype = "multipart/form-data; boundary=BOUND" if i % 7 else "multipart/form-data"
        r = client.post("/predict", content=body, headers={"content-type": ctype})
        assert r.status_code in (400, 413, 415, 422), (i, r.status_code, r.text)
        assert r.json()["detail"] and "Traceback" not in r.text
    assert client.get("/healthz").status_code == 200
    path = grocery_images[1]
    ok = client.post("/predict", files={"image": (path.name, path.read_bytes())})
    assert ok.status_code == 200 and len(ok.json()["top"]) == 3


# ---------------------------------------------------------------- the other routes


def test_health_readiness_info_and_status_without_a_lane(client, classifier):
    assert client.get("/healthz").json() == {"status": "alive"}
    r = client.get("/readyz")
    assert r.status_code == 200 and r.json()["status"] == "ready"
    info = client.get("/api/info").json()
    assert info["model"]["name"] == classifier.name and info["lane"] is None
    s = client.get("/api/status").json()
    assert s["ready"] is True and s["lane"] is None and s["engine"]["max_batch"] == 8
    for route in ("/api/events", "/latest.jpg", "/stream.mjpg"):
        r = client.get(route)
        assert r.status_code == 404 and "serve --http" in r.json()["detail"]
        check_headers(r)
    r = client.get("/nowhere")
    assert r.status_code == 404
    check_headers(r)


def test_the_page_and_its_files_are_served_with_a_strict_policy(client):
    r = client.get("/")
    assert r.status_code == 200 and "text/html" in r.headers["content-type"] and 'id="drop"' in r.text
    check_headers(r)
    assert "script-src 'self'" in r.headers["content-security-policy"]
    for f in ("/static/app.js", "/static/style.css"):
        assert client.get(f).status_code == 200
    assert client.get("/static/../app.py").status_code == 404


def test_openapi_documents_predict(client):
    spec = client.get("/openapi.json").json()
    assert {"/predict", "/healthz", "/readyz", "/api/status", "/api/events", "/metrics"} <= set(spec["paths"])
    body = spec["paths"]["/predict"]["post"]["requestBody"]["content"]
    assert "multipart/form-data" in body and "image/jpeg" in body
    assert client.get("/docs").status_code == 200


def test_metrics_count_requests_and_engine_time(client, grocery_images):
    client.post("/predict", files={"image": ("a.jpg", grocery_images[2].read_bytes())})
    client.post("/predict", files={"image": ("t.txt", b"text")})
    text = client.get("/metrics").text
    assert 'checkout_cam_http_requests_total{method="POST",route="/predict",status="200"}' in text
    assert 'checkout_cam_http_requests_total{method="POST",route="/predict",status="415"}' in text
    assert 'checkout_cam_inference_seconds_count{priority="http"}' in text
    assert 'checkout_cam_inference_queue_seconds_bucket{le="0.005",priority="http"}' in text
    assert "checkout_cam_inference_images_total" in text


def test_no_cors_unless_configured(client, classifier):
    r = client.options("/predict", headers={"origin": "https://evil.example", "access-control-request-method": "POST"})
    assert "access-control-allow-origin" not in r.headers
    cfg = make_cfg(cors_origins=["https://till.example"])
    with running(classifier, cfg) as (url, _):
        r = httpx.get(url + "/api/info", headers={"origin": "https://till.example"})
        assert r.headers["access-control-allow-origin"] == "https://till.example"
        r = httpx.get(url + "/api/info", headers={"origin": "https://evil.example"})
        assert "access-control-allow-origin" not in r.headers


# ---------------------------------------------------------------- busy, failures


def test_a_full_queue_is_503_with_retry_after_and_a_failing_model_is_no_traceback():
    clf = HeldClassifier(n_classes=4, fail_on=[77])
    cfg = make_cfg(max_queue=1, max_batch=1)
    with running(clf, cfg) as (url, services):
        clf.hold.clear()
        answers = []

        def call():
            answers.append(httpx.post(url + "/predict", files={"image": ("a.png", jpeg(value=10))}, timeout=30))

        first = threading.Thread(target=call)
        first.start()
        assert clf.entered.wait(10)
        second = threading.Thread(target=call)
        second.start()
        deadline = 0
        while services.engine.waiting() < 1 and deadline < 200:
            threading.Event().wait(0.02)
            deadline += 1
        r = httpx.post(url + "/predict", files={"image": ("a.png", jpeg())}, timeout=30)
        assert r.status_code == 503 and int(r.headers["retry-after"]) >= 1 and "queue full" in r.json()["detail"]
        clf.hold.set()
        first.join(10)
        second.join(10)
        assert [a.status_code for a in answers] == [200, 200]
        bad = httpx.post(url + "/predict", files={"image": ("b.png", jpeg(value=77))}, timeout=30)
        assert bad.status_code == 500 and "inference failed" in bad.json()["detail"]
        assert "Traceback" not in bad.text and "synthetic" not in bad.text
        assert httpx.get(url + "/readyz").status_code == 200
        assert "checkout_cam_http_rejected_busy_total 1.0" in httpx.get(url + "/metrics").text


def test_readyz_is_503_until_the_model_runs(classifier):
    from checkout_cam.engine import InferenceEngine
    from checkout_cam.web.app import WebServices, create_app
    from checkout_cam.web.server import WebServer

    engine = InferenceEngine(classifier)   # not started: the model is not serving yet
    with WebServer(create_app(WebServices(make_cfg(), engine)), "127.0.0.1", 0) as server:
        r = httpx.get(server.url + "/readyz")
        assert r.status_code == 503 and "model is not loaded" in r.json()["detail"]
        assert httpx.get(server.url + "/healthz").status_code == 200


# ---------------------------------------------------------------- token and exposure


def test_with_a_token_every_route_but_healthz_needs_it(classifier):
    token = "t" * 24
    with running(classifier, token=token) as (url, _):
        assert httpx.get(url + "/healthz").status_code == 200
        for route in ("/", "/readyz", "/api/status", "/metrics", "/static/app.js", "/openapi.json"):
            r = httpx.get(url + route)
            assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Bearer"), route
            check_headers(r)
        r = httpx.post(url + "/predict", files={"image": ("a.jpg", jpeg())})
        assert r.status_code == 401
        assert httpx.get(url + "/api/status", headers={"authorization": "Bearer wrong"}).status_code == 401
        ok = httpx.post(url + "/predict", files={"image": ("a.jpg", jpeg())},
                        headers={"authorization": f"Bearer {token}"})
        assert ok.status_code == 200
        # A browser: /?token= once sets an HttpOnly cookie, then the page and its API calls pass.
        with httpx.Client(base_url=url, follow_redirects=True) as browser:
            r = browser.get(f"/?token={token}")
            assert r.status_code == 200 and 'id="drop"' in r.text
            assert "HttpOnly" in r.history[0].headers["set-cookie"]
            assert browser.get("/api/status").status_code == 200
        assert httpx.get(url + "/?token=wrong").status_code == 401


def test_a_public_address_needs_a_token_or_an_explicit_yes():
    from checkout_cam.errors import CheckoutCamError
    from checkout_cam.web.server import resolve_listen

    assert resolve_listen(make_cfg(), None) == ("127.0.0.1", 8080, None)
    with pytest.raises(CheckoutCamError, match="refusing to listen on 0.0.0.0.*http.token.*allow_anonymous"):
        resolve_listen(make_cfg(), "0.0.0.0:8080")
    assert resolve_listen(make_cfg(token="s" * 20), "0.0.0.0:8080") == ("0.0.0.0", 8080, "s" * 20)
    assert resolve_listen(make_cfg(allow_anonymous=True), "[::]:9000") == ("::", 9000, None)
    with pytest.raises(CheckoutCamError, match="HOST:PORT"):
        resolve_listen(make_cfg(), "8080")


def test_the_web_command_refuses_a_public_address_before_loading_anything(tmp_path):
    out = subprocess.run([sys.executable, "-m", "checkout_cam", "web", "--model", str(tmp_path / "none.pt"),
                          "--http", "0.0.0.0:8080"], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert out.returncode == 2
    assert "refusing to listen on 0.0.0.0" in out.stderr and "Traceback" not in out.stderr


def test_config_checks_the_http_settings():
    from checkout_cam.errors import ConfigError
    with pytest.raises(ConfigError, match="http.listen: expected HOST:PORT"):
        make_cfg(listen="localhost")
    with pytest.raises(ConfigError, match="http.token: must be at least 16"):
        make_cfg(token="short")


def test_the_web_command_serves_photos_and_stops_on_sigterm(random_artifact, grocery_images):
    import signal

    from tests.helpers.http import free_port

    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "checkout_cam", "web", "--model", str(random_artifact),
                             "--http", f"127.0.0.1:{port}"], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_ready(url)
        p = grocery_images[0]
        r = httpx.post(url + "/predict", files={"image": (p.name, p.read_bytes())}, timeout=30)
        assert r.status_code == 200 and len(r.json()["top"]) == 3
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert f"open http://127.0.0.1:{port}/" in out and "Traceback" not in err
