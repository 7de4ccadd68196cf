"""Servers under test: waiting for one to answer, and `serve --http` run as a user runs it."""

from __future__ import annotations

import contextlib
import signal
import socket
import subprocess
import sys
import time
from typing import Callable

import httpx
import pytest


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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def serve_http(args: list[str], ready: Callable[[str], bool], *, timeout: float = 90.0, what: str = "serve --http"):
    """`checkout-cam serve ARGS --http 127.0.0.1:PORT` as a user runs it, until ``ready(url)`` is true:
    ``(url, proc, stderr)``; SIGTERM (then kill) when the block ends, if it is still running."""
    from tests.conftest import REPO
    from tests.modes.test_serve import Stderr

    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "checkout_cam", "serve", *args, "--http", f"127.0.0.1:{port}"],
                            cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    err = Stderr(proc)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert proc.poll() is None, err.text
            try:
                if ready(url):
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        else:
            pytest.fail(f"{what} never became ready:\n{err.text}")
        yield url, proc, err
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
