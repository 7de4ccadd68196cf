"""Run the console: store + MQTT ingest + web app under uvicorn, until SIGTERM or Ctrl-C.

Binding rule (the lane web service's: loopback by default): the page always
needs a login, so the console may listen beyond 127.0.0.1 only once at least
one user exists (``checkout-cam console add-user``); without TLS
(``--tls-cert``/``--tls-key``) it then warns that passwords and session
cookies cross the network in clear, and a TLS proxy or the TLS options should
be used.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from checkout_cam.console.ingest import Ingest
from checkout_cam.console.service import Console
from checkout_cam.console.store import Store
from checkout_cam.errors import CheckoutCamError
from checkout_cam.web.address import is_loopback  # the lane web service's bind rule, shared

logger = logging.getLogger(__name__)


@dataclass
class ConsoleOptions:
    data: Path
    http_host: str = "127.0.0.1"
    http_port: int = 8090
    mqtt_host: str = "127.0.0.1"
    mqtt_port: int = 1883
    mqtt_username: str | None = None
    mqtt_password: str | None = None
    name: str = ""
    labels: tuple[str, ...] = ()
    models: dict = field(default_factory=dict)     # sha256 -> labels of each --model
    tls_cert: str | None = None
    tls_key: str | None = None
    keep_days: float = 90.0
    session_hours: float = 12.0


def check_bind(host: str, users: int, tls: bool) -> None:
    if is_loopback(host):
        return
    if users == 0:
        raise CheckoutCamError(f"--http {host}: the console listens beyond this machine only when it has users "
                               f"(everyone logs in); add one first: checkout-cam console add-user NAME "
                               f"--role attendant --data DIR")
    if not tls:
        logger.warning("listening on %s without TLS: passwords and session cookies cross the network in clear; "
                       "use --tls-cert/--tls-key or a TLS reverse proxy", host)


def serve_console(opts: ConsoleOptions, stop: threading.Event | None = None,
                  ready: threading.Event | None = None) -> int:
    import uvicorn

    from checkout_cam.console.app import create_app

    stop = stop or threading.Event()
    tls = bool(opts.tls_cert and opts.tls_key)
    with Store(opts.data) as store:
        check_bind(opts.http_host, len(store.users()), tls)
        if not store.users():
            logger.warning("no console users yet: nobody can log in; add one with `checkout-cam console add-user "
                           "NAME --role attendant --data %s`", opts.data)
        client_id = f"checkout-cam-console-{opts.name}" if opts.name else None
        ingest = Ingest(store, opts.mqtt_host, opts.mqtt_port, client_id=client_id,
                        username=opts.mqtt_username, password=opts.mqtt_password)
        console = Console(store, publisher=ingest, labels=opts.labels, name=opts.name, models=opts.models)
        console.repair_corrections()
        app = create_app(console, secure_cookies=tls, session_ttl_s=opts.session_hours * 3600, broker=ingest)
        config = uvicorn.Config(app, host=opts.http_host, port=opts.http_port, log_level="warning",
                                ssl_certfile=opts.tls_cert if tls else None, ssl_keyfile=opts.tls_key if tls else None,
                                timeout_graceful_shutdown=3, access_log=False, lifespan="off")
        server = uvicorn.Server(config)
        server.install_signal_handlers = lambda: None   # the one stop event below owns SIGTERM/SIGINT
        web = threading.Thread(target=server.run, name="console-http", daemon=True)
        with ingest:
            web.start()
            deadline = time.monotonic() + 20
            while not server.started and web.is_alive() and time.monotonic() < deadline:
                time.sleep(0.05)
            if not server.started:
                stop.set()
                raise CheckoutCamError(f"the console's web server did not start on {opts.http_host}:{opts.http_port} "
                                       f"(port in use? see the log above)")
            scheme = "https" if tls else "http"
            logger.info("console on %s://%s:%d/, MQTT %s:%d, data in %s", scheme, opts.http_host, opts.http_port,
                        opts.mqtt_host, opts.mqtt_port, opts.data)
            print(f"checkout-cam console: {scheme}://{opts.http_host}:{opts.http_port}/ (MQTT {opts.mqtt_host}:"
                  f"{opts.mqtt_port}, data {opts.data})", flush=True)
            if ready is not None:
                ready.set()
            next_prune = time.monotonic() + 60
            try:
                while not stop.wait(1.0):
                    if not web.is_alive():
                        logger.error("the web server stopped")
                        break
                    if time.monotonic() >= next_prune:
                        next_prune = time.monotonic() + 3600
                        gone = store.prune(opts.keep_days)
                        if any(gone.values()):
                            logger.info("pruned %s older than %g days", gone, opts.keep_days)
                    ingest.flush()   # anything the broker has not acknowledged yet
            finally:
                app.state.stopping = True
                server.should_exit = True
                web.join(timeout=10)
                if web.is_alive():
                    logger.warning("the web server did not stop within 10 s")
    return 0
