"""Headless Chromium from the system's packages, driven by Selenium; nothing is downloaded.

Selenium Manager would fetch a browser or driver it cannot find: passing the
chromedriver path through ``Service`` and the browser through
``binary_location`` keeps it from looking.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path

CHROMIUM = os.environ.get("CHECKOUT_CAM_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("CHECKOUT_CAM_CHROMEDRIVER", "/usr/bin/chromedriver")


def available() -> str | None:
    """None when both are installed, else what is missing (apt-get install chromium chromium-driver)."""
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not Path(p).exists()]
    return None if not missing else f"needs {' and '.join(missing)} (apt-get install chromium chromium-driver)"


@contextlib.contextmanager
def chromium(width: int = 1280, height: int = 1000):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="checkout-cam-chromium-")
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--disable-default-apps", "--no-first-run", "--disable-extensions", "--hide-scrollbars",
                "--mute-audio", f"--window-size={width},{height}", f"--user-data-dir={profile}"):
        opts.add_argument(arg)
    os.environ["SE_AVOID_STATS"] = "true"
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=opts)
    try:
        driver.set_page_load_timeout(30)
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def keep_screenshot(png: Path) -> None:
    """Copy a screenshot to $CHECKOUT_CAM_SCREENSHOTS (for the README), when set."""
    target = os.environ.get("CHECKOUT_CAM_SCREENSHOTS")
    if target:
        Path(target).mkdir(parents=True, exist_ok=True)
        shutil.copy(png, Path(target) / png.name)
