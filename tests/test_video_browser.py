"""The annotated video plays in a real browser (headless Chromium): H.264 in MP4, the index first."""

import functools
import http.server
import shutil
import socketserver
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from checkout_cam.frames import Frame
from checkout_cam.render import OverlayRenderer
from checkout_cam.sinks import VideoWriterSink

CHROMIUM, DRIVER = shutil.which("chromium") or "/usr/bin/chromium", shutil.which("chromedriver") or "/usr/bin/chromedriver"
pytestmark = pytest.mark.skipif(not (Path(CHROMIUM).exists() and Path(DRIVER).exists()),
                                reason="needs chromium and chromium-driver (apt-get install; CI has them)")


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def test_annotated_video_plays_in_chromium_with_its_duration(tmp_path):
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    times = [i / 25 for i in range(50)] + [2.0 + 0.1 * i for i in range(1, 11)]   # variable rate, 3.0 s
    with VideoWriterSink(tmp_path / "v.mp4", fps=25, size=(320, 240),
                         renderer=OverlayRenderer(model_name="m", trained=True)) as sink:
        for i, t in enumerate(times):
            img = np.zeros((240, 320, 3), np.uint8)
            img[:, : (i * 5) % 320] = (40, 120, 200)
            sink(Frame(img, frame_id=i, timestamp=10.0 + t, source="t", video_time=t), None)
    (tmp_path / "page.html").write_text('<video id="v" src="v.mp4" muted></video>')
    server = socketserver.TCPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(tmp_path)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    opts = Options()
    opts.binary_location = CHROMIUM
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--autoplay-policy=no-user-gesture-required"):
        opts.add_argument(a)
    driver = webdriver.Chrome(service=Service(DRIVER), options=opts)
    try:
        driver.get(f"http://127.0.0.1:{server.server_address[1]}/page.html")
        driver.execute_script("document.getElementById('v').play()")
        state = {}
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            state = driver.execute_script("const v = document.getElementById('v'); return {d: v.duration, "
                                          "t: v.currentTime, e: v.error && v.error.code, w: v.videoWidth}")
            if state["e"] or (state["t"] or 0) > 0.5:
                break
            time.sleep(0.2)
    finally:
        driver.quit()
        server.shutdown()
        server.server_close()
    assert state["e"] is None, f"the browser could not play it (MediaError {state['e']})"
    assert state["w"] == 320 and state["t"] > 0.5
    assert state["d"] == pytest.approx(3.0, abs=0.11)   # the frames' own times, last frame included
