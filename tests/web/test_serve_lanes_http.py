"""`serve --http` with several lanes: one server, each lane its own live view, status and events, and an
overview page of them all, with a dead camera beside two videos."""

from __future__ import annotations

import io
import json
import signal
import time

import httpx
import numpy as np
import pytest

from checkout_cam.schema import ItemRecord
from tests.helpers.http import serve_http
from tests.web import browser
from tests.web.test_serve_http import decode, mjpeg_frames

DEAD_CAMERA = "rtsp://127.0.0.1:9/no-camera"   # port 9 (discard): refused at once


@pytest.fixture(scope="module")
def lanes(tmp_path_factory, random_artifact, videos):
    tmp = tmp_path_factory.mktemp("serve-lanes-http")
    cfg = tmp / "lanes.yaml"
    cfg.write_text(f"""
source: {{loop: true, reconnect_initial_s: 0.2, reconnect_max_s: 1.0}}
serve:
  log_path: {tmp / 'events.jsonl'}
  stats_interval_s: 2
  lanes:
    - {{lane_id: box, source: {videos / 'box.mp4'}}}
    - {{lane_id: cup, source: {videos / 'cup.mp4'}, roi: [0.1, 0.1, 0.8, 0.8]}}
    - {{lane_id: dead, source: "{DEAD_CAMERA}"}}
http:
  max_viewers: 2
  stream_fps: 10
""")

    def both_videos_have_results(url: str) -> bool:
        lanes = httpx.get(url + "/api/status", timeout=2).json()["lanes"]
        return all(lane["decision"] is not None for lane in lanes if lane["lane_id"] != "dead")

    with serve_http(["--config", str(cfg), "--model", str(random_artifact)], both_videos_have_results,
                    what="serve --http with lanes") as (url, proc, err):
        yield url, proc, err, tmp


def test_every_lane_has_its_status_and_the_dead_camera_is_named(lanes):
    url, _, _, _ = lanes
    info = httpx.get(url + "/api/info").json()
    assert info["lanes"] == ["box", "cup", "dead"] and info["lane"] is None
    s = httpx.get(url + "/api/status").json()
    by_id = {lane["lane_id"]: lane for lane in s["lanes"]}
    assert s["lane"] is None and list(by_id) == ["box", "cup", "dead"]
    assert by_id["box"]["camera"] == by_id["cup"]["camera"] == "online"
    assert by_id["dead"]["camera"] == "offline" and not by_id["dead"]["ready"]
    assert by_id["box"]["model_runs"] > 0 and by_id["cup"]["model_runs"] > 0 and by_id["dead"]["model_runs"] == 0
    # Not ready while a camera is missing, and the answer says which lane.
    r = httpx.get(url + "/readyz")
    assert r.status_code == 503 and r.json()["detail"].startswith("dead: ")
    assert "box" not in r.json()["detail"]
    one = httpx.get(url + "/api/lanes/cup").json()
    assert one["lane_id"] == "cup" and one["camera"] == "online"
    missing = httpx.get(url + "/api/lanes/nope")
    assert missing.status_code == 404 and "box, cup, dead" in missing.json()["detail"]


def test_each_lane_has_its_own_live_picture(lanes, videos):
    url, _, _, _ = lanes
    box = decode(httpx.get(url + "/lanes/box/latest.jpg", params={"raw": 1}).content)
    cup = decode(httpx.get(url + "/lanes/cup/latest.jpg", params={"raw": 1}).content)
    assert box.shape[:2] == cup.shape[:2] and box.shape[0] > 100
    # Each picture is its own video's: nearer the first frame of its own file than of the other's.
    import cv2
    first = {}
    for name in ("box", "cup"):
        cap = cv2.VideoCapture(str(videos / f"{name}.mp4"))
        ok, frame = cap.read()
        cap.release()
        assert ok
        first[name] = cv2.resize(frame, (box.shape[1], box.shape[0])).astype(float)

    def dist(a, b):
        return float(np.abs(a.astype(float) - b).mean())
    assert dist(box, first["box"]) < dist(box, first["cup"])
    assert dist(cup, first["cup"]) < dist(cup, first["box"])
    assert httpx.get(url + "/lanes/dead/latest.jpg").status_code == 503
    frames = mjpeg_frames(url + "/lanes/cup", 6)
    assert len(frames) == 6
    assert np.abs(decode(frames[0]).astype(int) - decode(frames[-1]).astype(int)).mean() > 0.5


def test_the_short_routes_name_the_per_lane_ones(lanes):
    url, _, _, _ = lanes
    for path, per_lane in (("/stream.mjpg", "/lanes/box/stream.mjpg"), ("/latest.jpg", "/lanes/box/latest.jpg"),
                           ("/api/events", "/api/lanes/box/events")):
        r = httpx.get(url + path)
        assert r.status_code == 404 and "3 lanes (box, cup, dead)" in r.json()["detail"], path
        assert per_lane in r.json()["detail"]


def test_each_lanes_items_events_and_metrics_are_its_own(lanes, grocery_images):
    url, _, _, _ = lanes
    # The open item of each lane carries its lane's id (box.mp4 and cup.mp4 hold their item all along, so
    # items close at shutdown: the SIGTERM test reads them from each lane's log).
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        s = {lane["lane_id"]: lane for lane in httpx.get(url + "/api/status").json()["lanes"]}
        items = {k: (s[k]["decision"] or {}).get("item_id") for k in ("box", "cup")}
        if all(items.values()):
            break
        time.sleep(0.3)
    assert items["box"].startswith("box-") and items["cup"].startswith("cup-"), items
    for lane_id in ("box", "cup"):
        for e in httpx.get(url + f"/api/lanes/{lane_id}/events?limit=50").json():
            assert ItemRecord.from_dict(e).lane_id == lane_id
    assert httpx.get(url + "/api/lanes/nope/events").status_code == 404
    text = httpx.get(url + "/metrics").text
    assert 'checkout_cam_camera_online{lane="dead"} 0.0' in text
    assert 'checkout_cam_camera_online{lane="box"} 1.0' in text
    assert 'checkout_cam_model_runs_total{lane="cup"}' in text
    # Photos share the lanes' model.
    photo = grocery_images[0]
    r = httpx.post(url + "/predict", files={"image": (photo.name, photo.read_bytes(), "image/jpeg")}, timeout=30)
    assert r.status_code == 200 and len(r.json()["top"]) == 3


@pytest.mark.skipif(browser.available() is not None, reason=browser.available() or "")
def test_the_overview_shows_every_lane_and_opens_one(lanes, tmp_path):
    from PIL import Image
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    url, _, _, _ = lanes
    with browser.chromium(1280, 1000) as driver:
        driver.get(url + "/")
        wait = WebDriverWait(driver, 60, poll_frequency=0.2)
        wait.until(lambda d: d.find_element(By.ID, "lanes").is_displayed())
        assert not driver.find_element(By.ID, "lane").is_displayed()
        cards = {c.get_attribute("data-lane"): c for c in driver.find_elements(By.CSS_SELECTOR, ".lane-card")}
        assert list(cards) == ["box", "cup", "dead"]
        for lane_id in ("box", "cup"):
            wait.until(lambda d, c=cards[lane_id]: c.get_attribute("data-shown")
                       and d.execute_script("return arguments[0].querySelector('img').naturalWidth", c) > 0)
        wait.until(lambda d: "offline" in cards["dead"].get_attribute("class"))
        assert cards["dead"].find_element(By.CSS_SELECTOR, ".cam").text == "offline"
        assert cards["box"].find_element(By.CSS_SELECTOR, ".cam").text == "online"
        # The snapshots move.
        img = cards["cup"].find_element(By.TAG_NAME, "img")
        shots = []
        for _ in range(2):
            shots.append(np.asarray(Image.open(io.BytesIO(img.screenshot_as_png)).convert("RGB"), dtype=int))
            time.sleep(2.5)
        assert np.abs(shots[0] - shots[1]).mean() > 0.5, "the cup lane's snapshot did not change"
        png = tmp_path / "serve-lanes-overview.png"
        driver.save_screenshot(str(png))
        browser.keep_screenshot(png)

        cards["cup"].click()
        wait.until(lambda d: d.find_element(By.ID, "lane").is_displayed())
        assert driver.current_url.endswith("/?lane=cup")
        assert driver.find_element(By.ID, "lane-id").text == "cup"
        assert not driver.find_element(By.ID, "lanes").is_displayed()
        live = driver.find_element(By.ID, "live")
        assert live.get_attribute("src").endswith("/lanes/cup/stream.mjpg")
        wait.until(lambda d: d.execute_script("return arguments[0].naturalWidth", live) > 0)
        wait.until(lambda d: d.find_element(By.ID, "st-camera").text == "online")
        png = tmp_path / "serve-lanes-one.png"
        driver.save_screenshot(str(png))
        browser.keep_screenshot(png)

        driver.find_element(By.ID, "all-lanes").click()
        wait.until(lambda d: d.find_element(By.ID, "lanes").is_displayed())
        severe = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
        # The dead lane's snapshot answers 503 (no frame yet): the browser logs that as a failed load.
        assert all("/lanes/dead/latest.jpg" in e["message"] for e in severe), severe


def test_sigterm_stops_every_lane_and_the_web_service_cleanly(lanes):
    url, proc, err, tmp = lanes
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(60) == 0, err.text
    assert "3 lanes on the web" in err.text
    for lane_id in ("box", "cup"):
        lines = [json.loads(line) for line in (tmp / f"events-{lane_id}.jsonl").read_text().splitlines()]
        records = [ItemRecord.from_dict(d) for d in lines if d["type"] == "item"]
        assert records and all(r.lane_id == lane_id for r in records), lane_id
    with pytest.raises(httpx.HTTPError):
        httpx.get(url + "/healthz", timeout=2)
