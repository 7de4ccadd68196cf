"""An attendant's resolution on the lane's web view: /api/events, /api/status, the live picture and the
page (real server, real headless Chromium), with a fake resolution reader in place of the MQTT
publisher (tests/console/test_serve_lanes.py runs the real console -> broker -> lane path)."""

from __future__ import annotations

import threading
import time

import cv2
import httpx
import numpy as np
import pytest

from checkout_cam.frames import Frame
from checkout_cam.render import BLUE, OverlayRenderer, Status
from checkout_cam.results import Classification, InferenceResult, Prediction
from checkout_cam.review import Decision, ItemEvent
from checkout_cam.schema import ResolutionRecord, RunIdentity
from checkout_cam.web.app import Lane
from checkout_cam.web.lane import LaneFeed, LiveView
from tests.web import browser
from tests.web.conftest import running

IDENT = RunIdentity("lane7")
TOP = (Prediction(3, "Granny Smith", 0.41), Prediction(5, "Pink Lady", 0.35), Prediction(9, "Banana", 0.1))


class FakeReader:
    """What the app reads of a lane's pipeline (LaneReader's surface), fixed numbers."""

    lane_id = "lane7"

    def status(self):
        return Status(30.0, 10.0, 40.0, 0)

    def ready(self):
        return True, "ok"

    def health(self):
        return None

    def counters(self):
        return {"camera_fps": 30.0, "inference_fps": 10.0, "camera_online": 1.0, "latency_p50_ms": 40.0,
                "latency_p95_ms": 60.0, "dropped": 0, "processed": 10, "model_runs": 10, "reused": 0,
                "errors": 0, "items": 2, "flagged": 2}


def item(seq: int, label: str) -> ItemEvent:
    return ItemEvent(label, 3, 0.41, TOP, True, ("low_confidence",), seq * 10, seq * 10 + 9, 1.0 * seq,
                     1.0 * seq + 0.5, results=5, id=IDENT.event_id(seq), seq=seq, closed_by="empty")


def decision(item_id: str | None) -> tuple[Frame, Decision]:
    t = time.monotonic()
    r = InferenceResult(1, t, None, Classification(TOP), 20.0, done=t)
    d = Decision(frame_id=1, result=r, smoothed=Classification(TOP), review=True, reasons=("low_confidence",),
                 empty=False, item="Granny Smith", opened=None, closed=None, item_id=item_id)
    return Frame(np.full((240, 320, 3), 90, np.uint8), frame_id=1, timestamp=t, source="cam"), d


def resolution(seq: int, outcome: str, label: str | None) -> ResolutionRecord:
    return ResolutionRecord(event_id=IDENT.event_id(seq), lane_id="lane7", outcome=outcome, label=label, index=None,
                            resolver="ann", resolved_at="2026-12-01T17:00:00Z", model_label="Granny Smith")


@pytest.fixture
def lane_with_answers(classifier):
    answers: dict[str, ResolutionRecord] = {}
    feed = LaneFeed(identity=IDENT, source="cam", model={"name": "m", "sha256": "0" * 64, "trained": True},
                    policy={"min_confidence": 0.6}, wall_clock_offset=1000.0)
    view = LiveView(feed, OverlayRenderer(model_name="m", trained=True), FakeReader(), resolutions=answers.get)
    lane = Lane(feed, FakeReader(), view, resolutions=answers.get)
    feed.close_event(item(1, "Granny Smith"))
    feed.close_event(item(2, "Granny Smith"))
    answers[IDENT.event_id(1)] = resolution(1, "correct", "Banana")
    stop = threading.Event()

    def camera():   # keeps the open item 3 current (a decision is shown for 500 ms)
        deadline = time.monotonic() + 120
        while not stop.wait(0.1) and time.monotonic() < deadline:
            feed(*decision(IDENT.event_id(3)))

    feed(*decision(IDENT.event_id(3)))
    t = threading.Thread(target=camera, daemon=True)
    t.start()
    try:
        with running(classifier, lane=lane) as (url, _):
            yield url, answers
    finally:
        stop.set()
        t.join(5)
        view.close()


def test_events_status_and_live_picture_carry_the_resolution(lane_with_answers):
    url, answers = lane_with_answers
    events = httpx.get(url + "/api/events").json()
    assert [e["id"] for e in events] == [IDENT.event_id(1), IDENT.event_id(2)]
    assert events[0]["resolution"] == resolution(1, "correct", "Banana").to_dict()
    assert events[1]["resolution"] is None
    d = httpx.get(url + "/api/status").json()["lane"]["decision"]
    assert d["item_id"] == IDENT.event_id(3) and d["resolution"] is None and d["review"]
    before = cv2.imdecode(np.frombuffer(httpx.get(url + "/latest.jpg").content, np.uint8), cv2.IMREAD_COLOR)
    answers[IDENT.event_id(3)] = resolution(3, "accept", "Granny Smith")
    time.sleep(0.3)   # a newer frame, drawn with the answer
    d = httpx.get(url + "/api/status").json()["lane"]["decision"]
    assert d["resolution"]["outcome"] == "accept" and d["resolution"]["resolver"] == "ann"
    after = cv2.imdecode(np.frombuffer(httpx.get(url + "/latest.jpg").content, np.uint8), cv2.IMREAD_COLOR)

    def blue(img):
        return float((np.abs(img.astype(np.int16) - np.array(BLUE, np.int16)).max(axis=2) < 40).mean())
    assert blue(before) < 0.001 and blue(after) > 0.02


def test_without_a_reader_events_have_no_resolution_field(classifier):
    feed = LaneFeed(identity=IDENT, source="cam", model={"name": "m", "sha256": "0" * 64, "trained": True},
                    policy={}, wall_clock_offset=None)
    feed.close_event(item(1, "Granny Smith"))
    view = LiveView(feed, OverlayRenderer(model_name="m", trained=True))
    with running(classifier, lane=Lane(feed, FakeReader(), view)) as (url, _):
        assert "resolution" not in httpx.get(url + "/api/events").json()[0]
    view.close()


def test_a_failing_reader_is_logged_and_the_api_still_answers(classifier, caplog):
    def broken(event_id):
        raise OSError("outbox gone")
    feed = LaneFeed(identity=IDENT, source="cam", model={"name": "m", "sha256": "0" * 64, "trained": True},
                    policy={}, wall_clock_offset=None)
    feed.close_event(item(1, "Granny Smith"))
    view = LiveView(feed, OverlayRenderer(model_name="m", trained=True), resolutions=broken)
    feed(*decision(IDENT.event_id(2)))
    with running(classifier, lane=Lane(feed, FakeReader(), view, resolutions=broken)) as (url, _):
        assert httpx.get(url + "/api/events").json()[0]["resolution"] is None
        assert httpx.get(url + "/latest.jpg").status_code == 200
    view.close()
    assert "looking up the resolution of lane7-" in caplog.text


@pytest.mark.skipif(browser.available() is not None, reason=browser.available() or "")
def test_the_page_says_who_resolved_an_item(lane_with_answers, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    url, answers = lane_with_answers
    answers[IDENT.event_id(3)] = resolution(3, "correct", "Pink Lady")
    with browser.chromium() as driver:
        driver.get(url + "/")
        wait = WebDriverWait(driver, 30, poll_frequency=0.1)
        band = wait.until(lambda d: (b := d.find_element(By.ID, "decision-band")).text.startswith("Resolved") and b)
        assert band.text == "Resolved by ann: Pink Lady" and "resolved" in band.get_attribute("class")
        cells = wait.until(lambda d: (c := d.find_elements(By.CSS_SELECTOR, "#events td.resolved")) and c)
        assert [c.text for c in cells] == ["resolved by ann: Banana"]
        verdicts = [r.find_elements(By.TAG_NAME, "td")[3].text
                    for r in driver.find_elements(By.CSS_SELECTOR, "#events tbody tr")]
        assert verdicts == ["REVIEW: low confidence", "resolved by ann: Banana"]   # newest first
        png = tmp_path / "web-lane-resolved.png"
        driver.save_screenshot(str(png))
        browser.keep_screenshot(png)
        logs = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
        assert not logs, logs
