"""HOST:PORT addresses and the rule for who may listen where."""

from __future__ import annotations

import ipaddress
import os

from checkout_cam.errors import CheckoutCamError

DEFAULT_LISTEN = "127.0.0.1:8080"
TOKEN_ENV = "CHECKOUT_CAM_HTTP_TOKEN"


def parse_listen(text: str) -> tuple[str, int]:
    """``127.0.0.1:8080``, ``[::1]:8080``, ``0.0.0.0:80`` -> (host, port). ValueError names the problem."""
    text = str(text).strip()
    if text.startswith("["):
        host, sep, port = text[1:].partition("]:")
    else:
        host, sep, port = text.rpartition(":")
    if not sep or not host or not port:
        raise ValueError(f"expected HOST:PORT (e.g. 127.0.0.1:8080), got {text!r}")
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"port must be 1-65535, got {port!r}")
    return host, int(port)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to anything


def effective_token(configured: str | None) -> str | None:
    return os.environ.get(TOKEN_ENV) or configured


def check_exposure(host: str, token: str | None, allow_anonymous: bool) -> None:
    """Refuse to serve a non-loopback address to anyone without a token, unless told to."""
    if is_loopback(host) or token or allow_anonymous:
        return
    raise CheckoutCamError(
        f"refusing to listen on {host}: that address is reachable from other machines and no token is "
        f"set. Set http.token (or the {TOKEN_ENV} environment variable) so every request must carry "
        f"'Authorization: Bearer TOKEN', or set http.allow_anonymous: true on a network you trust, or "
        f"listen on 127.0.0.1")
