"""Waiting for a server under test to answer."""

from __future__ import annotations

import time

import httpx


def wait_ready(url: str, timeout: float = 60.0, path: str = "/readyz") -> bool:
    """Poll ``url + path`` until it answers 200; False when ``timeout`` passes first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + path, timeout=1).status_code == 200:
                return True
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    return False
