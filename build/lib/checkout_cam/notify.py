"""The systemd notify protocol (sd_notify) over an AF_UNIX datagram socket, stdlib only.

Under ``Type=notify`` systemd passes ``$NOTIFY_SOCKET``; the service sends
newline-separated ``KEY=VALUE`` assignments there: ``READY=1`` once it works,
``WATCHDOG=1`` at least every ``WatchdogSec`` (``$WATCHDOG_USEC``),
``STOPPING=1`` when it begins to shut down and ``STATUS=...`` for the line
``systemctl status`` shows. Outside systemd ``$NOTIFY_SOCKET`` is unset and
every call is a cheap no-op, so the serve loop calls the notifier
unconditionally.

Sends never raise and never block: the frame loop calls ``watchdog()`` every
frame, and a stuck or vanished socket must cost it a logged warning, not a
stall.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Mapping

logger = logging.getLogger(__name__)


def _address(path: str) -> str | None:
    """The socket address for a $NOTIFY_SOCKET value; None when it is not a unix socket we can use."""
    if path.startswith("@"):
        return "\0" + path[1:]  # Linux abstract namespace, as sd_notify(3) spells it
    if path.startswith("/"):
        return path
    return None  # relative paths are refused by sd_notify too; "vsock:" is for VMs, not us


def _watchdog_interval(environ: Mapping[str, str]) -> float | None:
    usec = environ.get("WATCHDOG_USEC", "")
    if not usec:
        return None
    pid = environ.get("WATCHDOG_PID", "")
    # A child that inherited the environment must not ping on the parent's behalf.
    if pid and pid != str(os.getpid()):
        logger.debug("WATCHDOG_PID=%s is not this process (%d); no watchdog here", pid, os.getpid())
        return None
    try:
        value = int(usec)
    except ValueError:
        logger.warning("ignoring WATCHDOG_USEC=%r: not an integer number of microseconds", usec)
        return None
    return value / 1e6 if value > 0 else None


class SystemdNotifier:
    """Tells systemd how the service is doing; a no-op when not run by systemd.

    ``socket_path`` None reads ``$NOTIFY_SOCKET``; an empty path (or an unset
    variable) gives a disabled notifier (``enabled`` False) whose calls do
    nothing. ``environ`` and ``clock`` are for tests.
    """

    def __init__(self, socket_path: str | None = None, *,
                 environ: Mapping[str, str] | None = None,
                 clock: Callable[[], float] = time.monotonic):
        environ = os.environ if environ is None else environ
        if socket_path is None:
            socket_path = environ.get("NOTIFY_SOCKET", "")
        self.socket_path = socket_path
        self._clock = clock
        self._lock = threading.Lock()
        self._last_watchdog: float | None = None
        self._warned = False
        self._address = _address(socket_path) if socket_path else None
        self._sock: socket.socket | None = None
        if socket_path and self._address is None:
            logger.warning("NOTIFY_SOCKET=%r is not an absolute path or @abstract name; "
                           "not notifying systemd", socket_path)
        if self._address is not None:
            self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.watchdog_interval: float | None = _watchdog_interval(environ) if self.enabled else None

    @property
    def enabled(self) -> bool:
        return self._sock is not None

    def notify(self, *fields: str) -> bool:
        """Send the assignments as one datagram; True if it was sent.

        A field must be ``KEY=VALUE`` without a newline (a newline would let
        the value forge another assignment). Send errors are logged, once at
        warning level, and reported as False.
        """
        for f in fields:
            if "=" not in f or "\n" in f:
                raise ValueError(f"notify field must be KEY=VALUE on one line, got {f!r}")
        sock = self._sock
        if sock is None or not fields:
            return False
        try:
            # MSG_DONTWAIT: if the receiver's queue is full we drop the message rather than
            # stall the caller (the frame loop); systemd drains its socket promptly.
            sock.sendto("\n".join(fields).encode("utf-8"), socket.MSG_DONTWAIT, self._address)
        except OSError as exc:
            if not self._warned:
                self._warned = True
                logger.warning("cannot notify systemd at %s: %s (further failures are logged at "
                               "debug level)", self.socket_path, exc)
            else:
                logger.debug("cannot notify systemd at %s: %s", self.socket_path, exc)
            return False
        return True

    def ready(self, status: str = "") -> None:
        """The service is up: systemd finishes `systemctl start` and starts the watchdog."""
        self.notify("READY=1", *self._status_field(status))

    def stopping(self, status: str = "") -> None:
        self.notify("STOPPING=1", *self._status_field(status))

    def status(self, text: str) -> None:
        self.notify(*self._status_field(text))

    def watchdog(self) -> None:
        """Ping the watchdog; cheap enough to call every frame.

        Sends at most once per half ``watchdog_interval`` (sd_watchdog_enabled(3)
        recommends pinging at half the timeout); does nothing without a watchdog.
        """
        interval = self.watchdog_interval
        if interval is None:
            return
        now = self._clock()
        with self._lock:
            if self._last_watchdog is not None and now - self._last_watchdog < interval / 2:
                return
            self._last_watchdog = now
        self.notify("WATCHDOG=1")

    @staticmethod
    def _status_field(text: str) -> tuple[str, ...]:
        if not text:
            return ()
        return ("STATUS=" + " ".join(text.splitlines()),)

    def close(self) -> None:
        sock, self._sock = self._sock, None
        if sock is not None:
            sock.close()

    def __enter__(self) -> SystemdNotifier:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f"SystemdNotifier(socket={self.socket_path!r}, enabled={self.enabled}, "
                f"watchdog_interval={self.watchdog_interval})")
