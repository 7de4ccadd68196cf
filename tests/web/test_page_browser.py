"""The photo page in a real headless Chromium: upload a grocery photo, see three bars; upload text, see the error."""

from __future__ import annotations

import httpx
import pytest

from tests.web import browser

pytestmark = pytest.mark.skipif(browser.available() is not None, reason=browser.available() or "")


def wait(driver, cond, timeout=60):
    from selenium.webdriver.support.ui import WebDriverWait
    return WebDriverWait(driver, timeout, poll_frequency=0.1).until(cond)


def test_upload_a_grocery_photo_and_see_the_same_top3_as_predict(server, grocery_images, tmp_path):
    from selenium.webdriver.common.by import By

    url, _ = server
    photo = grocery_images[3]
    expected = httpx.post(url + "/predict", files={"image": (photo.name, photo.read_bytes())}, timeout=30).json()
    with browser.chromium() as driver:
        driver.get(url + "/")
        wait(driver, lambda d: d.find_element(By.ID, "model-name").text not in ("", "loading model…"))
        assert driver.find_element(By.ID, "untrained").is_displayed()     # the demo model is untrained
        driver.find_element(By.ID, "file").send_keys(str(photo))
        rows = wait(driver, lambda d: (r := d.find_elements(By.CSS_SELECTOR, "#bars .bar-row")) and len(r) == 3 and r)
        labels = [r.get_attribute("data-label") for r in rows]
        assert labels == [t["label"] for t in expected["top"]]
        for row, t in zip(rows, expected["top"]):
            assert float(row.get_attribute("data-prob")) == pytest.approx(t["prob"], abs=1e-6)
            track = row.find_element(By.CSS_SELECTOR, ".bar-track").size["width"]
            fill = row.find_element(By.CSS_SELECTOR, ".bar-fill").size["width"]
            assert fill == pytest.approx(t["prob"] * track, abs=1.5)
            assert row.find_element(By.CSS_SELECTOR, ".bar-pct").text == f"{t['prob'] * 100:.1f}%"
        verdict = driver.find_element(By.ID, "verdict")
        assert verdict.is_displayed() and verdict.text.startswith("REVIEW") and "untrained model" in verdict.text
        assert driver.find_element(By.ID, "preview").is_displayed()
        png = tmp_path / "web-photo.png"
        driver.save_screenshot(str(png))
        browser.keep_screenshot(png)
        logs = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
        assert not logs, logs    # no CSP violation, no script error


def test_upload_a_text_file_and_see_the_error_in_words(server, tmp_path):
    from selenium.webdriver.common.by import By

    url, _ = server
    text = tmp_path / "shopping-list.txt"
    text.write_text("milk\neggs\n")
    with browser.chromium() as driver:
        driver.get(url + "/")
        wait(driver, lambda d: d.find_element(By.ID, "model-name").text not in ("", "loading model…"))
        driver.find_element(By.ID, "file").send_keys(str(text))
        error = wait(driver, lambda d: (e := d.find_element(By.ID, "error")).is_displayed() and e)
        assert "shopping-list.txt" in error.text and "not an image" in error.text and "415" in error.text
        assert not driver.find_elements(By.CSS_SELECTOR, "#bars .bar-row")
        png = tmp_path / "web-error.png"
        driver.save_screenshot(str(png))
        browser.keep_screenshot(png)
