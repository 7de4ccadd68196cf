"""Running the app: uvicorn in a thread beside the lane (serve), or in the foreground (web)."""

from __future__ import annotations

import contextlib
import logging
import signal
import socket
import threading
import time

import uvicorn

from checkout_cam.config import Config
from checkout_cam.errors import CheckoutCamError
from checkout_cam.web.address import DEFAULT_LISTEN, check_exposure, effective_token, parse_listen

logger = logging.getLogger(__name__)


def resolve_listen(cfg: Config, given: str | None = None) -> tuple[str, int, str | None]:
    """(host, port, token) from the flag or http.listen, with the exposure rule applied."""
    text = given or cfg.http.listen or DEFAULT_LISTEN
    try:
        host, port = parse_listen(text)
    except ValueError as exc:
        raise CheckoutCamError(f"--http / http.listen: {exc}") from None
    token = effective_token(cfg.http.token)
    if token is not None and len(token) < 16:
        raise CheckoutCamError("the HTTP token must be at least 16 characters")
    check_exposure(host, token, cfg.http.allow_anonymous)
    return host, port, token


class _Server(uvicorn.Server):
    """uvicorn without its own signal handling: it re-raises SIGTERM after shutting down, which
    kills the process before our ``finally`` blocks (engine, event log) run. The command installs
    its own handlers instead."""

    @contextlib.contextmanager
    def capture_signals(self):
        yield


class WebServer:
    """uvicorn serving ``app`` on (host, port). ``with WebServer(...)`` runs it in a thread."""

    def __init__(self, app, host: str, port: int, *, stop: threading.Event | None = None):
        self.host, self.port = host, port
        self.stop_event = stop
        self._sock = self._bind(host, port)
        self.port = self._sock.getsockname()[1]
        config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off",
                                timeout_graceful_shutdown=2, server_header=False)
        self.server = _Server(config)
        self._thread: threading.Thread | None = None

    @staticmethod
    def _bind(host: str, port: int) -> socket.socket:
        # Bound here, before anything starts, so a taken port is one clear error and port 0 can be read back.
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        # proto=IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY on accepted connections only when the
        # listening socket says TCP. Without it uvicorn's separate header and body writes meet the
        # client's delayed ACK, and every keep-alive request waits 40 ms.
        sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            sock.close()
            raise CheckoutCamError(f"cannot listen on {host}:{port}: {exc.strerror or exc} (another "
                                   f"process on that port? choose another with --http HOST:PORT)") from None
        sock.listen(128)
        sock.set_inheritable(True)
        return sock

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def serve_forever(self) -> None:
        """Foreground, until SIGINT/SIGTERM (then open requests get a moment to finish)."""
        def stop(signum, _frame):
            logger.info("received %s: stopping the web service", signal.Signals(signum).name)
            self.server.should_exit = True

        previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            self.server.run(sockets=[self._sock])
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            self._sock.close()

    def __enter__(self) -> "WebServer":
        self._thread = threading.Thread(target=self._run, name="web", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started and self._thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.02)
        if not self.server.started:
            raise CheckoutCamError(f"the web service on {self.url} did not start")
        logger.info("web page and API on %s", self.url)
        return self

    def _run(self) -> None:
        try:
            self.server.run(sockets=[self._sock])
        except Exception:
            logger.exception("the web service failed")
        finally:
            if self.stop_event is not None and not self.stop_event.is_set() and not self.server.should_exit:
                logger.error("the web service stopped by itself")

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self.server.should_exit = True
        if self._thread is not None:
            self._thread.join(5)
            if self._thread.is_alive():
                self.server.force_exit = True
                self._thread.join(2)
                if self._thread.is_alive():
                    logger.error("web service thread did not stop within 7 s")
        self._sock.close()
