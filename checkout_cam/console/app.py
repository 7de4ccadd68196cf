"""The attendant's web app (FastAPI): login, the page, its JSON API, live updates, history CSV.

Security, all of it on every request:

- Login sets a random session token in a cookie (HttpOnly, SameSite=Strict,
  Secure under TLS); the store keeps only its sha256, so a copied database
  holds no usable session. Sessions last ``session_ttl_s`` and survive a
  console restart.
- Every state-changing request (resolve, logout) carries the session's CSRF
  token (``X-CSRF-Token`` header, or a ``csrf`` form field), compared in
  constant time; the login form has its own double-submit token.
- Viewers see everything and resolve nothing (403).
- Failed logins are limited per name and per client address (429 with
  Retry-After).
- A strict Content-Security-Policy (scripts and styles from this origin only,
  no inline script), no framing, no MIME sniffing.
"""

from __future__ import annotations

import asyncio
import csv
import hashlib
import hmac
import html
import io
import logging
import secrets
import time
from pathlib import Path
from string import Template
from urllib.parse import parse_qs, quote

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles

from checkout_cam.console.service import Console, ResolveError
from checkout_cam.console.users import LoginLimiter, dummy_hash, verify_password
from checkout_cam.schema import EVENT_ID_RE, OUTCOMES, utc_now_iso

logger = logging.getLogger(__name__)

HERE = Path(__file__).parent
SESSION_COOKIE = "cc_session"
LOGIN_COOKIE = "cc_login"
HISTORY_COLUMNS = ("resolved_at", "lane_id", "event_id", "outcome", "label", "model_label", "model_confidence",
                   "resolver", "waited_s", "review_reasons", "flagged_at", "correction", "published")
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
                               "connect-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


def _hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("ascii", errors="replace")).hexdigest()


def _cell(value) -> str:
    """A CSV cell; free text that a spreadsheet would run as a formula gets a leading quote."""
    if value is None:
        return ""
    text = str(value)
    return "'" + text if text[:1] in ("=", "+", "-", "@") and isinstance(value, str) else text


def _template(name: str) -> Template:
    return Template((HERE / "templates" / name).read_text(encoding="utf-8"))


def create_app(console: Console, *, secure_cookies: bool = False, session_ttl_s: float = 12 * 3600,
               limiter: LoginLimiter | None = None, broker=None) -> FastAPI:
    """``broker``: an object with a ``connected`` threading.Event (the Ingest), shown on the page."""
    store = console.store
    limiter = limiter or LoginLimiter()
    app = FastAPI(title="checkout_cam console", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.stopping = False
    index_page = _template("index.html")
    login_page = _template("login.html")

    @app.middleware("http")
    async def security_headers(request: Request, call_next):
        response = await call_next(request)
        for k, v in SECURITY_HEADERS.items():
            response.headers.setdefault(k, v)
        return response

    def set_cookie(response: Response, name: str, value: str, max_age: int | None) -> None:
        response.set_cookie(name, value, max_age=max_age, httponly=True, samesite="strict", secure=secure_cookies,
                            path="/")

    def session_of(request: Request) -> dict | None:
        token = request.cookies.get(SESSION_COOKIE)
        return store.session(_hash_token(token)) if token else None

    def require(request: Request) -> dict:
        s = session_of(request)
        if s is None:
            raise HTTPException(401, "log in first")
        return s

    def check_csrf(request: Request, s: dict, supplied: str | None = None) -> None:
        supplied = supplied if supplied is not None else request.headers.get("x-csrf-token", "")
        if not supplied or not hmac.compare_digest(supplied, s["csrf"]):
            logger.warning("refused a request without a valid CSRF token from %s (user %s) to %s",
                           request.client.host if request.client else "?", s["user"], request.url.path)
            raise HTTPException(403, "missing or wrong CSRF token: reload the page")

    # ------------------------------------------------------------ login

    def render_login(message: str = "", status: int = 200, name: str = "") -> Response:
        token = secrets.token_urlsafe(24)
        body = login_page.substitute(csrf=token, message=html.escape(message), name=html.escape(name),
                                     message_class="error" if message else "hidden")
        response = HTMLResponse(body, status_code=status)
        set_cookie(response, LOGIN_COOKIE, token, 3600)
        return response

    @app.get("/login", response_class=HTMLResponse)
    def login_form(request: Request):
        if session_of(request) is not None:
            return RedirectResponse("/", status_code=303)
        return render_login()

    @app.post("/login")
    async def login(request: Request):
        form = {k: v[0] for k, v in parse_qs((await request.body()).decode("utf-8", errors="replace")).items()}
        name = form.get("name", "").strip()[:64]
        address = request.client.host if request.client else "?"
        cookie = request.cookies.get(LOGIN_COOKIE, "")
        if not cookie or not hmac.compare_digest(cookie, form.get("csrf", "")):
            return render_login("The login form expired: try again.", 403, name)
        wait = limiter.retry_after(name, address)
        if wait > 0:
            response = render_login(f"Too many failed logins: try again in {int(wait) + 1} s.", 429, name)
            response.headers["Retry-After"] = str(int(wait) + 1)
            return response
        user = store.user(name)
        ok = await asyncio.to_thread(verify_password, form.get("password", ""),
                                     user["password"] if user else dummy_hash())
        if not (user and ok):
            limiter.failed(name, address)
            logger.warning("failed login for %r from %s", name, address)
            return render_login("Wrong name or password.", 401, name)
        limiter.succeeded(name)
        token = secrets.token_urlsafe(32)
        store.add_session(_hash_token(token), user["name"], secrets.token_urlsafe(32), session_ttl_s)
        logger.info("%s logged in from %s", user["name"], address)
        response = RedirectResponse("/", status_code=303)
        set_cookie(response, SESSION_COOKIE, token, int(session_ttl_s))
        response.delete_cookie(LOGIN_COOKIE, path="/")
        return response

    @app.post("/logout")
    async def logout(request: Request):
        s = require(request)
        form = {k: v[0] for k, v in parse_qs((await request.body()).decode("utf-8", errors="replace")).items()}
        check_csrf(request, s, form.get("csrf") or request.headers.get("x-csrf-token", ""))
        store.end_session(_hash_token(request.cookies.get(SESSION_COOKIE, "")))
        response = RedirectResponse("/login", status_code=303)
        response.delete_cookie(SESSION_COOKIE, path="/")
        return response

    # ------------------------------------------------------------ the page

    @app.get("/", response_class=HTMLResponse)
    def index(request: Request):
        s = session_of(request)
        if s is None:
            return RedirectResponse("/login", status_code=303)
        return HTMLResponse(index_page.substitute(csrf=html.escape(s["csrf"]), user=html.escape(s["user"]),
                                                  role=html.escape(s["role"])))

    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")

    @app.get("/healthz")
    def healthz():
        return {"ok": True, "broker": bool(broker and broker.connected.is_set())}

    # ------------------------------------------------------------ API

    @app.get("/api/state")
    def state(request: Request):
        s = require(request)
        return {"me": {"user": s["user"], "role": s["role"]}, "now": utc_now_iso(), "version": store.version,
                "broker": bool(broker and broker.connected.is_set()) if broker is not None else None,
                "lanes": store.lanes(), "counters": store.counters(),
                "queue": [{"id": q.id, "lane_id": q.lane_id, "state": q.state, "received_at": q.received_at,
                           # a lane may send a better picture at the end: the stamp makes it a new URL
                           "picture": f"/api/pictures/{q.id}.jpg?v={quote(q.picture_at or '')}"
                           if q.has_picture else None,
                           "label": q.record.get("label"), "confidence": q.record.get("confidence"),
                           "top": q.record.get("top", [])[:3], "reasons": q.record.get("review_reasons", []),
                           "t_start": q.record.get("t_start")} for q in store.queue()]}

    @app.get("/api/stream")
    async def stream(request: Request):
        require(request)

        async def changes():
            last, beat = None, time.monotonic()
            yield "retry: 2000\n\n"
            while not app.state.stopping and not await request.is_disconnected():
                v = store.version
                if v != last:
                    last, beat = v, time.monotonic()
                    yield f"event: version\ndata: {v}\n\n"
                elif time.monotonic() - beat > 15:
                    beat = time.monotonic()
                    yield ": keep-alive\n\n"
                await asyncio.sleep(0.05)

        return StreamingResponse(changes(), media_type="text/event-stream",
                                 headers={"X-Accel-Buffering": "no"})

    @app.get("/api/pictures/{event_id}.jpg")
    def picture(event_id: str, request: Request):
        require(request)
        jpeg = store.picture(event_id) if EVENT_ID_RE.match(event_id) else None
        if jpeg is None:
            raise HTTPException(404, "no picture for that item")
        return Response(jpeg, media_type="image/jpeg", headers={"Cache-Control": "private, max-age=3600"})

    @app.get("/api/labels")
    def labels(request: Request):
        require(request)
        return {"labels": console.all_labels()}

    @app.post("/api/resolve")
    async def resolve(request: Request):
        s = require(request)
        check_csrf(request, s)
        try:
            body = await request.json()
        except ValueError:
            raise HTTPException(400, "expected a JSON body") from None
        if not isinstance(body, dict):
            raise HTTPException(400, "expected a JSON object")
        try:
            result = await asyncio.to_thread(
                console.resolve, user=s["user"], role=s["role"], event_id=body.get("event_id"),
                outcome=body.get("outcome"), label=body.get("label"), index=body.get("index"))
        except ResolveError as exc:
            if exc.status == 403:
                logger.warning("refused: %s", exc)
            raise HTTPException(exc.status, str(exc)) from None
        return JSONResponse(result)

    def filters(request: Request) -> dict:
        q = request.query_params
        outcome = q.get("outcome") or None
        if outcome is not None and outcome not in OUTCOMES:
            raise HTTPException(400, f"outcome must be one of {', '.join(OUTCOMES)}")
        return {"lane": q.get("lane") or None, "outcome": outcome, "since": q.get("since") or None,
                "until": q.get("until") or None}

    @app.get("/api/history")
    def history(request: Request):
        require(request)
        return {"history": store.history(**filters(request), limit=500)}

    @app.get("/history.csv")
    def history_csv(request: Request):
        require(request)
        rows = store.history(**filters(request), limit=1_000_000)
        buf = io.StringIO()
        w = csv.writer(buf)
        w.writerow(HISTORY_COLUMNS)
        for r in rows:
            w.writerow([_cell(";".join(r[c]) if c == "review_reasons" else r[c]) for c in HISTORY_COLUMNS])
        name = f"checkout-cam-history-{utc_now_iso()[:10]}.csv"
        return Response(buf.getvalue(), media_type="text/csv; charset=utf-8",
                        headers={"Content-Disposition": f'attachment; filename="{name}"'})

    return app
