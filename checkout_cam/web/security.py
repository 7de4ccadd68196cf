"""ASGI middleware: security headers, the bearer token, request counting.

Pure ASGI (not Starlette's BaseHTTPMiddleware), so streaming answers (MJPEG)
pass through untouched and a body is never buffered here.
"""

from __future__ import annotations

import hmac
import json
import logging
from typing import Callable
from urllib.parse import parse_qs

logger = logging.getLogger(__name__)

COOKIE = "checkout_cam_token"

# The page loads only its own script, style and images; nothing may frame it.
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
       "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'")
# FastAPI's /docs page is Swagger UI from its CDN with an inline bootstrap script.
DOCS_CSP = ("default-src 'none'; script-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net; "
            "style-src 'self' https://cdn.jsdelivr.net; img-src 'self' data: https://fastapi.tiangolo.com; "
            "connect-src 'self'; base-uri 'none'; frame-ancestors 'none'")
DOCS_PATHS = ("/docs", "/redoc")

OPEN_PATHS = ("/healthz",)


def _header(scope, name: bytes) -> bytes | None:
    for k, v in scope.get("headers", ()):
        if k == name:
            return v
    return None


async def _send_json(send, status: int, body: dict, headers: list[tuple[bytes, bytes]] = ()) -> None:
    data = json.dumps(body).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode()),
                            *headers]})
    await send({"type": "http.response.body", "body": data})


class SecurityHeaders:
    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        csp = DOCS_CSP if scope["path"].startswith(DOCS_PATHS) else CSP

        async def with_headers(message):
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers += [(b"x-content-type-options", b"nosniff"), (b"content-security-policy", csp.encode()),
                            (b"x-frame-options", b"DENY"), (b"referrer-policy", b"no-referrer"),
                            (b"cross-origin-opener-policy", b"same-origin")]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, with_headers)


class BearerAuth:
    """Every route but /healthz needs ``Authorization: Bearer TOKEN``.

    A browser cannot put a header on ``<img src=/stream.mjpg>``, so opening
    ``/?token=TOKEN`` once sets an HttpOnly, SameSite=Strict cookie holding
    the token and redirects to ``/``; requests with that cookie pass too.
    """

    def __init__(self, app, token: str):
        self.app = app
        self.token = token.encode()

    def _ok(self, value: bytes | None) -> bool:
        return value is not None and hmac.compare_digest(value, self.token)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["path"] in OPEN_PATHS:
            return await self.app(scope, receive, send)
        auth = _header(scope, b"authorization") or b""
        scheme, _, value = auth.partition(b" ")
        if scheme.lower() == b"bearer" and self._ok(value.strip()):
            return await self.app(scope, receive, send)
        cookies = _header(scope, b"cookie") or b""
        for part in cookies.split(b";"):
            k, _, v = part.strip().partition(b"=")
            if k == COOKIE.encode() and self._ok(v):
                return await self.app(scope, receive, send)
        if scope["path"] == "/":
            given = parse_qs(scope.get("query_string", b"").decode("latin-1")).get("token", [""])[0]
            if given and self._ok(given.encode()):
                cookie = f"{COOKIE}={given}; HttpOnly; SameSite=Strict; Path=/".encode()
                await send({"type": "http.response.start", "status": 303,
                            "headers": [(b"location", b"/"), (b"set-cookie", cookie), (b"content-length", b"0")]})
                await send({"type": "http.response.body", "body": b""})
                return
        await _send_json(send, 401, {"detail": "authorization required: send 'Authorization: Bearer TOKEN' "
                                               "(http.token), or open /?token=TOKEN once in a browser"},
                         [(b"www-authenticate", b'Bearer realm="checkout-cam"')])


class RequestCounter:
    """Counts each answer by its route template (``/predict``, not the raw path) and status."""

    def __init__(self, app, count: Callable[[str, str, int], None]):
        self.app = app
        self.count = count

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        status = {"code": 500}

        async def counting(message):
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, counting)
        finally:
            route = scope.get("route")
            path = getattr(route, "path", None) or ("/static" if scope["path"].startswith("/static/") else "other")
            try:
                self.count(path, scope.get("method", "?"), status["code"])
            except Exception:
                logger.exception("counting a request failed")
