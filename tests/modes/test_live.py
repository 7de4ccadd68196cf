"""The live window for real: under Xvfb, driven by keys, checked by a screenshot."""

import os
import shutil
import subprocess
import sys
import time

import cv2
import numpy as np
import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.skipif(
    not all(shutil.which(t) for t in ("Xvfb", "xdotool", "import")),
    reason="needs Xvfb, xdotool and ImageMagick's import (apt-get install xvfb xdotool imagemagick)")


@pytest.fixture
def display():
    proc = subprocess.Popen(["Xvfb", "-displayfd", "1", "-screen", "0", "1024x768x24", "-nolisten", "tcp"],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        number = proc.stdout.readline().strip()
        assert number, "Xvfb did not start"
        yield f":{number}"
    finally:
        proc.terminate()
        proc.wait(10)


def _wait_for_window(env, timeout=60.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        out = subprocess.run(["xdotool", "search", "--name", "checkout-cam"], env=env, capture_output=True,
                             text=True)
        if out.stdout.strip():
            return out.stdout.split()[0]
        time.sleep(0.5)
    raise AssertionError("the live window did not appear")


def test_live_window_under_xvfb(display, random_artifact, videos, tmp_path):
    env = {**os.environ, "DISPLAY": display}
    cfg = tmp_path / "config.yaml"
    cfg.write_text(f"live:\n  snapshot_dir: {tmp_path / 'snaps'}\n")
    proc = subprocess.Popen([sys.executable, "-m", "checkout_cam", "live", "--config", str(cfg), "--model",
                             str(random_artifact), "--source", str(videos / "box.mp4"),
                             "--seconds", "120"], cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        window = _wait_for_window(env)
        time.sleep(4)  # let frames and results arrive
        shot = tmp_path / "screen.png"
        subprocess.run(["import", "-window", "root", str(shot)], env=env, check=True)
        subprocess.run(["xdotool", "windowfocus", "--sync", window], env=env, check=True)
        subprocess.run(["xdotool", "key", "s"], env=env, check=True)
        time.sleep(1)
        subprocess.run(["xdotool", "key", "q"], env=env, check=True)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    snaps = sorted((tmp_path / "snaps").glob("*.png"))
    assert [p.name.endswith(s) for p, s in zip(snaps, ["annotated.png", "raw.png"])] == [True, True]
    raw = cv2.imread(str(snaps[1]))
    assert raw.shape == (480, 640, 3)

    screen = cv2.imread(str(shot))
    window_area = screen[:480, :640]
    assert window_area.std() > 20, "the window shows no picture"
    amber = np.all(np.abs(window_area.astype(int) - (0, 170, 255)) < 60, axis=2)  # REVIEW band (BGR)
    red = (window_area[..., 2] > 180) & (window_area[..., 1] < 60) & (window_area[..., 0] < 80)  # UNTRAINED
    assert amber.sum() > 2000, "no REVIEW state drawn"
    assert red.sum() > 1000, "no UNTRAINED badge drawn"
    assert screen[600:, 700:].std() < 1, "something drawn outside the window"


@pytest.mark.parametrize("env_display", [None, ":97"], ids=["unset", "no-server"])
def test_live_without_a_display_says_so_instead_of_aborting(env_display, tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    if env_display:
        env["DISPLAY"] = env_display
    proc = subprocess.run([sys.executable, "-m", "checkout_cam", "live", "--model", str(tmp_path / "none.pt"),
                           "--source", "0"], cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2, proc.stderr  # not Qt's abort (134)
    assert "cannot open the live window" in proc.stderr and "checkout-cam serve" in proc.stderr


def test_display_check_accepts_a_running_x_server(display):
    from checkout_cam.modes.live import display_problem
    assert display_problem({"DISPLAY": display}) is None
    assert display_problem({"WAYLAND_DISPLAY": "wayland-0"}) is None
