"""`serve --http` as a user runs it: box.mp4 as a paced camera, the lane's API and live view, in a browser."""

from __future__ import annotations

import io
import signal
import time

import cv2
import httpx
import numpy as np
import pytest

from checkout_cam.schema import ItemRecord
from tests.helpers.http import serve_http
from tests.web import browser


@pytest.fixture(scope="module")
def lane(tmp_path_factory, random_artifact, videos):
    tmp = tmp_path_factory.mktemp("serve-http")
    cfg = tmp / "config.yaml"
    cfg.write_text("source:\n  loop: true\nserve:\n  stats_interval_s: 2\nhttp:\n  max_viewers: 2\n  stream_fps: 10\n")
    args = ["--config", str(cfg), "--model", str(random_artifact), "--source", str(videos / "box.mp4"),
            "--log", str(tmp / "events.jsonl")]
    with serve_http(args, lambda url: httpx.get(url + "/readyz", timeout=2).status_code == 200) as running:
        yield running


def mjpeg_frames(url: str, n: int, timeout: float = 30) -> list[bytes]:
    frames, buf = [], b""
    with httpx.stream("GET", url + "/stream.mjpg", timeout=timeout) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("multipart/x-mixed-replace")
        for chunk in r.iter_bytes():
            buf += chunk
            while True:
                start = buf.find(b"\xff\xd8")
                end = buf.find(b"\xff\xd9", start + 2)
                if start < 0 or end < 0:
                    break
                frames.append(buf[start:end + 2])
                buf = buf[end + 2:]
            if len(frames) >= n:
                return frames
    return frames


def decode(data: bytes) -> np.ndarray:
    return cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)


def test_the_lane_status_is_live_and_ready(lane):
    url, _, _ = lane
    deadline = time.monotonic() + 40
    while time.monotonic() < deadline:   # box.mp4 starts on an empty counter; the box comes in later
        s = httpx.get(url + "/api/status").json()
        d = s["lane"]["decision"]
        if s["lane"]["camera_fps"] > 0 and d and d["top"] and not d["stale"]:
            break
        time.sleep(0.5)
    lane_s = s["lane"]
    assert s["ready"] is True and lane_s["camera"] == "online" and lane_s["lane_id"] == "lane1"
    assert lane_s["camera_fps"] > 0 and lane_s["model_runs"] > 0 and lane_s["errors"] == 0
    assert s["engine"]["lane"]["images"] >= lane_s["model_runs"] - 1   # the lane's frames go through the engine
    d = lane_s["decision"]
    assert d is not None and len(d["top"]) == 3 and d["review"] is True and "untrained" in d["review_reasons"]
    assert httpx.get(url + "/readyz").json() == {"status": "ready"}


def test_latest_jpg_and_the_mjpeg_stream_show_the_moving_camera(lane, videos):
    url, _, _ = lane
    cap = cv2.VideoCapture(str(videos / "box.mp4"))
    w, h = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
    cap.release()
    r = httpx.get(url + "/latest.jpg")
    assert r.status_code == 200 and r.headers["content-type"] == "image/jpeg"
    assert decode(r.content).shape == (h, w, 3)
    raw = httpx.get(url + "/latest.jpg?raw=1")
    assert raw.status_code == 200 and decode(raw.content).shape == (h, w, 3)
    frames = mjpeg_frames(url, 12)
    assert len(frames) >= 12
    first, last = decode(frames[0]), decode(frames[-1])
    assert first.shape == (h, w, 3)
    assert np.abs(first.astype(int) - last.astype(int)).mean() > 0.5   # the picture moves


def no_viewers(url: str, timeout: float = 15) -> None:
    """The server counts a viewer until its stream notices the client left (within about a second)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and httpx.get(url + "/api/status").json()["lane"]["viewers"]:
        time.sleep(0.2)


def test_a_viewer_over_the_cap_gets_503(lane):
    url, _, _ = lane
    no_viewers(url)   # the previous test's stream
    streams = [httpx.stream("GET", url + "/stream.mjpg", timeout=30) for _ in range(2)]
    opened = [s.__enter__() for s in streams]
    try:
        assert all(r.status_code == 200 for r in opened)
        readers = [r.iter_bytes() for r in opened]   # kept: a dropped iterator closes its connection
        for reader in readers:
            next(reader)
        with httpx.stream("GET", url + "/stream.mjpg", timeout=10) as third:   # never reads a whole stream
            r = third
            r.read() if r.status_code != 200 else None
        assert r.status_code == 503 and "http.max_viewers" in r.json()["detail"] and r.headers["retry-after"]
    finally:
        for s in streams:
            s.__exit__(None, None, None)
    no_viewers(url)
    assert len(mjpeg_frames(url, 1)) == 1


def test_predict_and_metrics_beside_the_lane(lane, grocery_images):
    url, _, _ = lane
    photo = grocery_images[0]
    r = httpx.post(url + "/predict", files={"image": (photo.name, photo.read_bytes())}, timeout=30)
    assert r.status_code == 200 and len(r.json()["top"]) == 3
    text = httpx.get(url + "/metrics").text
    for line in ('checkout_cam_camera_online{lane="lane1"} 1.0', 'checkout_cam_inference_seconds_count{priority="lane"}',
                 'checkout_cam_inference_seconds_count{priority="http"} 1.0', "checkout_cam_dropped_frames_total",
                 "checkout_cam_model_runs_total", "checkout_cam_reused_results_total", "checkout_cam_items_total",
                 "checkout_cam_flagged_items_total", "checkout_cam_frame_errors_total", "checkout_cam_camera_fps",
                 'checkout_cam_http_requests_total{method="POST",route="/predict",status="200"}'):
        assert line in text, line
    events = httpx.get(url + "/api/events?limit=5").json()
    assert isinstance(events, list)
    for e in events:
        assert ItemRecord.from_dict(e).lane_id == "lane1"


@pytest.mark.skipif(browser.available() is not None, reason=browser.available() or "")
def test_the_page_shows_the_live_picture_changing_and_the_status_updating(lane, tmp_path):
    from PIL import Image
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    url, _, _ = lane
    with browser.chromium(1280, 1100) as driver:
        driver.get(url + "/")
        wait = WebDriverWait(driver, 60, poll_frequency=0.2)
        wait.until(lambda d: d.find_element(By.ID, "lane").is_displayed())
        live = driver.find_element(By.ID, "live")
        wait.until(lambda d: d.execute_script("return arguments[0].naturalWidth", live) > 0)
        wait.until(lambda d: d.find_element(By.ID, "status").get_attribute("data-updated"))
        stamp = driver.find_element(By.ID, "status").get_attribute("data-updated")
        shots = []
        for _ in range(2):
            shots.append(np.asarray(Image.open(io.BytesIO(live.screenshot_as_png)).convert("RGB"), dtype=int))
            time.sleep(1.5)
        assert shots[0].shape == shots[1].shape and shots[0].shape[0] > 100
        assert np.abs(shots[0] - shots[1]).mean() > 0.5, "the live picture did not change"
        wait.until(lambda d: d.find_element(By.ID, "status").get_attribute("data-updated") != stamp)
        assert driver.find_element(By.ID, "st-camera").text == "online"
        assert float(driver.find_element(By.ID, "st-camera-fps").text) > 0   # a measured rate is shown; how fast is the bench's business
        wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#decision-bars .bar-row")) == 3)
        assert driver.find_element(By.ID, "decision-band").text.startswith("REVIEW")
        png = tmp_path / "serve-http-lane.png"
        driver.save_screenshot(str(png))
        browser.keep_screenshot(png)
        severe = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
        assert not severe, severe


def test_sigterm_stops_the_lane_and_the_web_service_cleanly(lane):
    url, proc, err = lane
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 0, err.text
    assert "stopped (clean)" in err.text
    with pytest.raises(httpx.HTTPError):
        httpx.get(url + "/healthz", timeout=2)
