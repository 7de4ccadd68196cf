"""`serve` lanes and the `events` consumer as child processes, as a store runs them."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.conftest import REPO
from tests.modes.test_serve import Stderr

# Short reconnect waits and frequent stats keep the test quick; more item events per minute of video
# (stable after 2 results, closed after 2 empty ones) give the outage and the crash something to lose.
LANE_CONFIG = """\
serve:
  lane_id: {lane}
  stats_interval_s: 2
model:
  threads: 1
source:
  loop: true
review:
  stable_results: 2
  smoothing_window: 1
  empty_results: 2
mqtt:
  host: 127.0.0.1
  port: {port}
  state_dir: {state}
  reconnect_min_s: 0.2
  reconnect_max_s: 1.0
  keepalive_s: 5
{extra}"""


class Lane:
    def __init__(self, workdir: Path, lane: str, video: Path, model: Path, port: int, extra: str = ""):
        self.lane, self.video, self.model = lane, video, model
        self.dir = Path(workdir) / lane
        self.dir.mkdir(parents=True, exist_ok=True)
        self.log = self.dir / "events.jsonl"
        self.cfg = self.dir / "config.yaml"
        self.cfg.write_text(LANE_CONFIG.format(lane=lane, port=port, state=self.dir / "state", extra=extra))
        self.proc: subprocess.Popen | None = None
        self.err: Stderr | None = None
        self.stderr_texts: list[str] = []

    def start(self) -> "Lane":
        self.proc = subprocess.Popen([sys.executable, "-m", "checkout_cam", "serve", "--config", str(self.cfg),
                                      "--model", str(self.model), "--source", str(self.video),
                                      "--log", str(self.log)],
                                     cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        self.err = Stderr(self.proc)
        return self

    def items(self) -> list[dict]:
        if not self.log.exists():
            return []
        out = []
        for line in self.log.read_text().splitlines():
            data = json.loads(line)
            if data["type"] == "item":
                out.append(data)
        return out

    def wait_items(self, n: int, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if len(self.items()) >= n:
                return True
            if self.proc.poll() is not None:
                raise AssertionError(f"lane {self.lane} exited {self.proc.returncode}: {self.text}")
            time.sleep(0.2)
        return False

    def stop(self, sig=signal.SIGTERM, timeout: float = 20) -> int:
        self.proc.send_signal(sig)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
        time.sleep(0.2)   # let the reader thread take the last lines
        self.stderr_texts.append(self.err.text)
        return self.proc.returncode

    def kill(self) -> None:
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)
        self.stderr_texts.append(self.err.text)

    @property
    def text(self) -> str:
        return "".join(self.stderr_texts) + (self.err.text if self.err else "")

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)


class Consumer:
    """`checkout-cam events --follow --log-lines --out FILE` with a persistent session."""

    def __init__(self, workdir: Path, port: int, session: str = "store-it", extra: list[str] = ()):
        self.out = Path(workdir) / "consumer.jsonl"
        self.proc = subprocess.Popen([sys.executable, "-m", "checkout_cam", "events", "--mqtt", "127.0.0.1",
                                      "--port", str(port), "--follow", "--log-lines", "--session", session,
                                      "--out", str(self.out), *extra],
                                     cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        self.err = Stderr(self.proc)

    def lines(self) -> list[dict]:
        return [json.loads(line) for line in self.out.read_text().splitlines()] if self.out.exists() else []

    def wait_lines(self, n: int, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if len(self.lines()) >= n:
                return True
            time.sleep(0.2)
        return len(self.lines()) >= n

    def stop(self) -> str:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        time.sleep(0.2)
        return self.err.text
