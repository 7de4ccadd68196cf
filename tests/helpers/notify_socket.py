"""The systemd side of the notify protocol, for tests: a datagram socket that collects messages.

    with NotifySocket(tmp_path) as ns:
        proc = subprocess.Popen(cmd, env={**os.environ, **ns.env(watchdog_sec=2)})
        assert ns.wait_for("READY=1", timeout=60)

Each received datagram is one message: newline-separated ``KEY=VALUE`` fields.
"""

from __future__ import annotations

import os
import select
import shutil
import socket
import tempfile
import time
from pathlib import Path

# sockaddr_un.sun_path holds 108 bytes; pytest's tmp_path for a long test name can exceed that.
_MAX_SOCKET_PATH = 100


class NotifySocket:
    """An AF_UNIX SOCK_DGRAM socket standing in for systemd's $NOTIFY_SOCKET.

    ``abstract=True`` binds a Linux abstract-namespace name instead of a file;
    ``path`` is then ``@name``, as systemd writes it.
    """

    def __init__(self, tmp_path: Path, *, abstract: bool = False):
        self._tmp_path = Path(tmp_path)
        self._abstract = abstract
        self._short_dir: str | None = None
        self._sock: socket.socket | None = None
        self.path = ""
        self.messages: list[str] = []  # every datagram received so far, in order

    def __enter__(self) -> NotifySocket:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            if self._abstract:
                name = f"checkout-cam-test-{os.getpid()}-{id(self):x}"
                sock.bind("\0" + name)
                self.path = "@" + name
            else:
                path = self._tmp_path / "notify.sock"
                if len(os.fsencode(path)) > _MAX_SOCKET_PATH:
                    self._short_dir = tempfile.mkdtemp(prefix="ntfy")
                    path = Path(self._short_dir) / "notify.sock"
                sock.bind(str(path))
                self.path = str(path)
        except BaseException:
            sock.close()
            self._cleanup_dir()
            raise
        self._sock = sock
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        if self.path.startswith("/"):
            Path(self.path).unlink(missing_ok=True)
        self._cleanup_dir()

    def _cleanup_dir(self) -> None:
        if self._short_dir is not None:
            shutil.rmtree(self._short_dir, ignore_errors=True)
            self._short_dir = None

    def env(self, watchdog_sec: float | None = None) -> dict[str, str]:
        """The variables systemd would set (merge into os.environ for a child process).

        With ``watchdog_sec`` also WATCHDOG_USEC; WATCHDOG_PID is left out
        because the child's pid is not known before it starts.
        """
        env = {"NOTIFY_SOCKET": self.path}
        if watchdog_sec is not None:
            env["WATCHDOG_USEC"] = str(round(watchdog_sec * 1_000_000))
        return env

    def receive(self, timeout: float) -> list[str]:
        """Messages that arrive within ``timeout`` seconds: waits for the first, then drains."""
        if self._sock is None:
            raise RuntimeError("NotifySocket is not open; use it as a context manager")
        got: list[str] = []
        deadline = time.monotonic() + timeout
        while True:
            wait = 0.0 if got else max(0.0, deadline - time.monotonic())
            ready, _, _ = select.select([self._sock], [], [], wait)
            if not ready:
                break
            got.append(self._sock.recv(65536).decode("utf-8", errors="replace"))
        self.messages.extend(got)
        return got

    def drain(self, seconds: float) -> None:
        """Keep reading for ``seconds``, as systemd does: an unread datagram socket holds only
        net.unix.max_dgram_qlen (often 10) messages, and the notifier drops what does not fit."""
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            self.receive(min(0.2, left))

    def fields(self) -> list[str]:
        """Every field of every message received so far, in order."""
        return [f for msg in self.messages for f in msg.split("\n") if f]

    def count(self, field: str) -> int:
        return sum(1 for f in self.fields() if _matches(f, field))

    def wait_for(self, field: str, timeout: float) -> bool:
        """True once a received field matches ``field``, waiting up to ``timeout`` seconds.

        ``"READY=1"`` matches that exact field; ``"STATUS"`` (no ``=``) matches
        any value of the key. Messages received earlier count too.
        """
        if self.count(field):
            return True
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            if any(_matches(f, field) for msg in self.receive(left) for f in msg.split("\n")):
                return True
        return False


def _matches(received: str, wanted: str) -> bool:
    if "=" in wanted:
        return received == wanted
    return received.split("=", 1)[0] == wanted
