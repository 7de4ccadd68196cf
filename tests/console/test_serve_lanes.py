"""The console with two real `serve` lanes (box.mp4 and cup.mp4) on a real Mosquitto, in headless Chromium.

The lanes run the untrained demo model with a strict review policy, so their
items are flagged; they publish through their durable outboxes. The attendant
corrects lane1's first flagged item and accepts lane2's; each lane's event log
then holds the resolution line for its item, with the attendant's name, and
the console's corrections folder, history and CSV hold both.
"""

from __future__ import annotations

import csv
import io
import json
import time

import httpx

from tests.console.test_browser import ConsoleProcess, browser, cli, log_in, pytestmark, shot, wait  # noqa: F401
from tests.fleet.lanes import Lane

STRICT = "review:\n  min_confidence: 0.9\n  min_margin: 0.5\n"


def test_two_serve_lanes_get_their_answers_back(tmp_path, mosquitto, videos, random_artifact, browser):  # noqa: F811
    from selenium.webdriver.common.by import By

    data = tmp_path / "console"
    assert cli("add-user", "ann", "--role", "attendant", "--password-stdin", stdin="ann-secret-1\n",
               data=data).returncode == 0
    console = ConsoleProcess(data, mosquitto.port, random_artifact)
    lanes = {name: Lane(tmp_path, name, videos / video, random_artifact, mosquitto.port, extra=STRICT)
             for name, video in (("lane1", "box.mp4"), ("lane2", "cup.mp4"))}
    try:
        console.start()
        for lane in lanes.values():
            lane.start()
        log_in(browser, console.url, "ann", "ann-secret-1")
        first = {}
        for name in lanes:
            card_id = wait(browser, f"""(() => {{
                const c = [...document.querySelectorAll('.card[data-lane="{name}"]')]
                  .find(c => c.querySelector('img') && c.querySelector('img').naturalWidth > 0);
                return c && c.dataset.id; }})()""", timeout=120, what=f"a flagged item of {name} with its picture")
            first[name] = card_id
        wait(browser, "document.querySelectorAll('.lane.online').length === 2", what="both lanes online")
        time.sleep(1.0)
        shot(browser, "console-serve-lanes.png", tmp_path)
        a, b = first["lane1"], first["lane2"]
        card_a = browser.find_element(By.ID, f"item-{a}")
        card_a.find_element(By.CSS_SELECTOR, "button.correct").click()
        card_a.find_element(By.CSS_SELECTOR, "input.search").send_keys("banan")
        wait(browser, f"document.querySelector('#item-{a} .choice[data-label=\"banana\"]')", what="the search")
        card_a.find_element(By.CSS_SELECTOR, '.choice[data-label="banana"]').click()
        browser.find_element(By.CSS_SELECTOR, f"#item-{b} button.accept").click()

        def resolutions(lane):
            if not lane.log.exists():
                return []
            return [json.loads(x) for x in lane.log.read_text().splitlines() if '"resolution"' in x]

        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not (resolutions(lanes["lane1"]) and resolutions(lanes["lane2"])):
            time.sleep(0.2)
        r1, r2 = resolutions(lanes["lane1"]), resolutions(lanes["lane2"])
        assert [(r["event_id"], r["outcome"], r["label"], r["resolver"]) for r in r1] == [(a, "correct", "banana", "ann")]
        assert [(r["event_id"], r["outcome"], r["resolver"]) for r in r2] == [(b, "accept", "ann")]
        # The resolution references an item event of the lane's own log, written when the item closes.
        # Looped box.mp4 and cup.mp4 hold their item in view all the time (one presence interval),
        # so it closes when the lane stops: SIGTERM closes the open item and flushes the log.
        for lane in lanes.values():
            lane.stop()
        assert [i["review"] for i in lanes["lane1"].items() if i["id"] == a] == [True]
        assert [i["review"] for i in lanes["lane2"].items() if i["id"] == b] == [True]
        photos = sorted(p.relative_to(data / "corrections").as_posix() for p in (data / "corrections").rglob("*.jpg"))
        assert photos == sorted([f"banana/{a}.jpg", f"{r2[0]['label']}/{b}.jpg"])
        cookies = {c["name"]: c["value"] for c in browser.get_cookies()}
        rows = list(csv.DictReader(io.StringIO(httpx.get(console.url + "/history.csv", cookies=cookies).text)))
        assert sorted((r["event_id"], r["resolver"]) for r in rows) == sorted([(a, "ann"), (b, "ann")])
    finally:
        for lane in lanes.values():
            if lane.proc is not None and lane.proc.poll() is None:
                lane.stop()
            lane.close()
        console.stop()
