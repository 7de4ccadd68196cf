"""The FastAPI app: the page, /predict, each lane's status, events and live view, /metrics.

A `serve` may run several lanes (``serve.lanes``): each has its routes under
``/lanes/{lane_id}/`` and ``/api/lanes/{lane_id}``; ``/api/status`` lists
them all. With one lane the short forms (``/stream.mjpg``, ``/latest.jpg``,
``/api/events``) are that lane; with several they answer 404 naming the
per-lane form, never a lane picked at random.

Why FastAPI + uvicorn: typed request/response models that become the
OpenAPI description at /docs for free, async handlers so a request waiting
for the model holds no thread (the engine batches what waits), and
streaming responses for MJPEG; uvicorn is a maintained production ASGI
server. Everything a handler can get wrong becomes a JSON answer with a
message; a bug is a logged 500 with no traceback in the answer.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Union

from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import FileResponse, JSONResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from checkout_cam import __version__
from checkout_cam.config import Config
from checkout_cam.engine import HTTP, EngineBusy, EngineClosed, InferenceEngine
from checkout_cam.images import CorruptImage, ImageTooLarge, NotAnImage, decode_image
from checkout_cam.review import ReviewPolicy
from checkout_cam.web.lane import LaneFeed, LaneReader, LiveView, ResolutionReader, decision_dict, resolution_of
from checkout_cam.web.metrics import CONTENT_TYPE, Metrics
from checkout_cam.web.security import BearerAuth, RequestCounter, SecurityHeaders
from checkout_cam.web.uploads import UploadError, read_uploads

logger = logging.getLogger(__name__)

STATIC = Path(__file__).parent / "static"
BOUNDARY = "checkoutcamframe"


# ---------------------------------------------------------------- response models (OpenAPI)

class TopEntry(BaseModel):
    label: str
    index: int
    prob: float = Field(ge=0, le=1)


class ModelRef(BaseModel):
    name: str
    sha256: str


class PredictResult(BaseModel):
    top: list[TopEntry] = Field(description="the K most probable labels, most probable first")
    trained: bool = Field(description="false for an untrained demo model: its labels are meaningless")
    model: ModelRef
    review: bool = Field(description="a cashier should look: the lane's review thresholds (config review.*)")
    review_reasons: list[str] = Field(description="low_confidence, low_margin, untrained")
    latency_ms: float = Field(description="decode + preprocess + queue + model time of this image")
    filename: str | None = None


class ErrorAnswer(BaseModel):
    detail: str


@dataclass
class Lane:
    """What serve hands the web layer about one of its lanes."""

    feed: LaneFeed
    reader: LaneReader
    view: LiveView
    stale_after_ms: float = 500.0
    resolutions: ResolutionReader | None = None   # event id -> the attendant's answer (serve with MQTT)

    @property
    def lane_id(self) -> str:
        return self.reader.lane_id


@dataclass
class WebServices:
    cfg: Config
    engine: InferenceEngine
    lanes: list[Lane] = field(default_factory=list)   # empty for `checkout-cam web` (photos only)
    token: str | None = None
    started: float = field(default_factory=time.monotonic)


def _error(status: int, message: str, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"detail": message}, status_code=status, headers=headers)


ERRORS = {400: {"model": ErrorAnswer}, 401: {"model": ErrorAnswer}, 413: {"model": ErrorAnswer},
          415: {"model": ErrorAnswer}, 422: {"model": ErrorAnswer}, 503: {"model": ErrorAnswer}}


def create_app(services: WebServices) -> FastAPI:
    cfg, engine = services.cfg, services.engine
    lanes = {lane.lane_id: lane for lane in services.lanes}
    if len(lanes) != len(services.lanes):
        raise ValueError(f"two lanes with the same lane_id: {[lane.lane_id for lane in services.lanes]}")
    only = services.lanes[0] if len(services.lanes) == 1 else None
    clf = engine.classifier
    h = cfg.http
    policy = ReviewPolicy(cfg.review, trained=clf.trained, labels=clf.labels, roi=cfg.preprocess.roi,
                          top_k=cfg.model.top_k)
    metrics = Metrics(engine, [lane.reader for lane in services.lanes])
    n_labels = len(clf.labels)

    app = FastAPI(title="checkout-cam", version=__version__,
                  description="The lanes' photo classifier and live views. POST a photo to /predict for its "
                              "Top-K labels; under `serve --http`, /api/status lists the lanes and "
                              "/lanes/{lane_id}/stream.mjpg shows one.")
    app.state.services = services
    app.state.metrics = metrics

    # ------------------------------------------------------------ error answers: JSON, no traceback

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        return _error(exc.status_code, str(exc.detail), getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError):
        parts = []
        for e in exc.errors():
            where = ".".join(str(x) for x in e.get("loc", ()) if x not in ("query", "body"))
            parts.append(f"{where}: {e.get('msg')}")
        return _error(422, "; ".join(parts) or "invalid request")

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception):
        logger.exception("%s %s failed", request.method, request.url.path)
        return _error(500, "internal error; the server log has the details")

    # ------------------------------------------------------------ page and health

    @app.get("/", include_in_schema=False)
    async def page():
        return FileResponse(STATIC / "index.html", headers={"cache-control": "no-store"})

    @app.get("/healthz", summary="The process is alive (no auth)")
    async def healthz():
        return {"status": "alive"}

    def readiness(states: dict[str, tuple[bool, str]] | None = None) -> tuple[bool, str]:
        """Ready while the engine runs and every lane is (one lane's reason as it is; with several,
        each lane that is not ready, named). ``states``: each lane's (ready, why), if already read."""
        if not engine.is_alive():
            return False, "the model is not loaded (the inference engine is not running)"
        states = states if states is not None else {lane_id: lane.reader.ready() for lane_id, lane in lanes.items()}
        if only is not None:
            return states[only.lane_id]
        waiting = [f"{lane_id}: {why}" for lane_id, (ok, why) in states.items() if not ok]
        return (False, "; ".join(waiting)) if waiting else (True, "ok")

    @app.get("/readyz", summary="Ready to answer: model loaded and (serve) every lane's camera delivering frames",
             responses={503: {"model": ErrorAnswer}})
    async def readyz():
        ok, why = readiness()
        if not ok:
            return JSONResponse({"status": "not ready", "detail": why}, status_code=503)
        return {"status": "ready"}

    @app.get("/api/info", summary="The model and what this service has (a lane or not)")
    async def info():
        return {"model": {"name": clf.name, "sha256": clf.sha256, "trained": clf.trained,
                          "labels": n_labels},
                "lane": only.lane_id if only else None, "lanes": list(lanes), "version": __version__,
                "max_upload_bytes": h.max_upload_bytes, "top_k": cfg.model.top_k}

    # ------------------------------------------------------------ /predict

    def prepare(data: bytes, name: str):
        image = decode_image(data, name, cfg.preprocess.max_image_pixels)
        return clf.preprocess([image])

    def answer(classification, name: str | None, latency_ms: float) -> dict:
        c = classification
        reasons = policy.reasons_for(c.best.prob, c.margin)
        return {"top": c.to_list(), "trained": clf.trained, "model": {"name": clf.name, "sha256": clf.sha256},
                "review": bool(reasons), "review_reasons": list(reasons), "latency_ms": round(latency_ms, 2),
                "filename": name}

    @app.post("/predict", summary="Top-K labels for one or several photos",
              response_model=Union[PredictResult, list[PredictResult]], responses=ERRORS,
              openapi_extra={"requestBody": {"required": True, "content": {
                  "multipart/form-data": {"schema": {"type": "object", "required": ["image"], "properties": {
                      "image": {"type": "array", "items": {"type": "string", "format": "binary"},
                                "description": "one or several photos (jpg/png), field name 'image'"}}}},
                  "image/jpeg": {"schema": {"type": "string", "format": "binary"}},
                  "image/png": {"schema": {"type": "string", "format": "binary"}}}}},
              description="Send the photo as multipart field `image` (`curl -F image=@photo.jpg`), several "
                          "`image` fields for several photos, or the image itself as the body. One photo "
                          "gives one object; several give a list in upload order.")
    async def predict(request: Request, top: int = Query(None, ge=1, le=100, description="labels per photo "
                                                                               "(default model.top_k)")):
        k = min(top or cfg.model.top_k, n_labels)
        t0 = time.monotonic()
        try:
            uploads = await read_uploads(request, h.max_upload_bytes, h.max_images)
        except UploadError as exc:
            return _error(exc.status, exc.message)
        futures = []
        try:
            outs = []
            for up in uploads:
                t_img = time.monotonic()
                try:
                    batch = await run_in_threadpool(prepare, up.data, up.name)
                except ImageTooLarge as exc:
                    return _error(413, str(exc))
                except NotAnImage as exc:
                    return _error(415, str(exc))
                except CorruptImage as exc:
                    return _error(422, str(exc))
                futures.append((engine.submit(batch, priority=HTTP, caller="http", top_k=k), up, t_img))
            remaining = h.request_timeout_s - (time.monotonic() - t0)
            for fut, up, t_img in futures:
                got = await asyncio.wait_for(asyncio.wrap_future(fut), timeout=max(0.01, remaining))
                outs.append(answer(got[0], up.name if up.name != "body" else None,
                                   (time.monotonic() - t_img) * 1e3))
                remaining = h.request_timeout_s - (time.monotonic() - t0)
        except EngineBusy as exc:
            metrics.rejected.inc()
            return _error(503, f"busy: {exc}", {"Retry-After": str(int(exc.retry_after_s))})
        except EngineClosed as exc:
            return _error(503, f"shutting down: {exc}", {"Retry-After": "5"})
        except (asyncio.TimeoutError, TimeoutError):
            return _error(503, f"no answer within {h.request_timeout_s:g} s (http.request_timeout_s): the model "
                               f"is busy", {"Retry-After": str(int(engine.retry_after_s()))})
        except Exception as exc:  # the model failed on this photo: say so, keep the details in the log
            logger.error("inference failed on an uploaded photo: %s: %s", type(exc).__name__, exc)
            return _error(500, f"inference failed on this photo ({type(exc).__name__}); the server log has "
                               f"the details")
        finally:
            for fut, _, _ in futures:
                fut.cancel()   # no-op when done; frees the engine from a caller that gave up
        return outs[0] if len(outs) == 1 else outs

    # ------------------------------------------------------------ the lanes

    def lane_named(lane_id: str) -> Lane:
        lane = lanes.get(lane_id)
        if lane is None:
            known = ", ".join(lanes) or "none: this is `checkout-cam web` (photos only)"
            raise StarletteHTTPException(404, f"no lane {lane_id!r} here (lanes: {known})")
        return lane

    def the_lane(route: str) -> Lane:
        """The short routes (/stream.mjpg ...) are the lane of a one-lane serve."""
        if only is not None:
            return only
        if not lanes:
            raise StarletteHTTPException(404, "no lane here: this is `checkout-cam web` (photos only); "
                                              "run `checkout-cam serve --http` to see a lane")
        first = next(iter(lanes))
        raise StarletteHTTPException(404, f"this service runs {len(lanes)} lanes ({', '.join(lanes)}): ask for "
                                          f"one, e.g. {route.format(lane_id=first)}")

    def lane_status(lane: Lane) -> dict:
        c = lane.reader.counters()
        ok, why = lane.reader.ready()
        _, decision, _ = lane.feed.latest()
        return {"lane_id": lane.lane_id, "ready": ok, "ready_detail": why,
                "camera": "online" if c["camera_online"] else "offline",
                "camera_fps": round(c["camera_fps"], 2), "inference_fps": round(c["inference_fps"], 2),
                "latency_p50_ms": _round(c["latency_p50_ms"]), "latency_p95_ms": _round(c["latency_p95_ms"]),
                "dropped": c["dropped"], "processed": c["processed"], "model_runs": c["model_runs"],
                "reused": c["reused"], "errors": c["errors"], "items": c["items"],
                "flagged": c["flagged"], "viewers": lane.view.viewers, "health": lane.reader.health(),
                "decision": decision_dict(decision, lane.stale_after_ms, resolutions=lane.resolutions)}

    def lane_events(lane: Lane, limit: int) -> list[dict]:
        out = [r.to_dict() for r in lane.feed.events(limit)]
        if lane.resolutions is not None:
            for e in out:
                r = resolution_of(lane.resolutions, e.get("id"))
                e["resolution"] = r.to_dict() if r is not None else None
        return out

    async def latest_of(lane: Lane, raw: bool):
        data = await run_in_threadpool(lane.view.latest_jpeg, raw)
        if data is None:
            return _error(503, f"no frame yet from lane {lane.lane_id}'s camera", {"Retry-After": "1"})
        return Response(data, media_type="image/jpeg", headers={"cache-control": "no-store"})

    def stream_of(lane: Lane, request: Request):
        view = lane.view
        if not view.join_viewer():
            return _error(503, f"too many live viewers of lane {lane.lane_id} (http.max_viewers = "
                               f"{view.max_viewers}); try its latest.jpg or later", {"Retry-After": "10"})

        async def frames():
            version = -1
            try:
                while not view.stop_event.is_set():
                    data, new = await run_in_threadpool(view.wait_jpeg, version, 1.0)
                    if await request.is_disconnected():
                        break
                    if data is None or new == version:
                        continue
                    version = new
                    yield (f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\nContent-Length: {len(data)}\r\n\r\n"
                           .encode() + data + b"\r\n")
            finally:
                view.leave_viewer()

        return StreamingResponse(frames(), media_type=f"multipart/x-mixed-replace; boundary={BOUNDARY}",
                                 headers={"cache-control": "no-store"})

    @app.get("/api/status", summary="The engine, and each lane's camera, throughput, decision and counts")
    async def status():
        each = [lane_status(lane) for lane in lanes.values()]
        ok, why = readiness({e["lane_id"]: (e["ready"], e["ready_detail"]) for e in each})
        return {"ready": ok, "ready_detail": why, "uptime_s": round(time.monotonic() - services.started, 1),
                "model": {"name": clf.name, "sha256": clf.sha256, "trained": clf.trained},
                "engine": engine.status(), "lane": each[0] if only is not None else None, "lanes": each}

    @app.get("/api/lanes/{lane_id}", summary="One lane's camera, throughput, decision and counts",
             responses={404: {"model": ErrorAnswer}})
    async def one_lane_status(lane_id: str):
        return lane_status(lane_named(lane_id))

    events_summary = ("recent item events (the event log's objects), oldest first; under MQTT each has "
                      "`resolution`, the attendant's answer or null")

    @app.get("/api/lanes/{lane_id}/events", summary=f"One lane's {events_summary}",
             responses={404: {"model": ErrorAnswer}})
    async def one_lane_events(lane_id: str, limit: int = Query(20, ge=1, le=10000)):
        return lane_events(lane_named(lane_id), limit)

    @app.get("/api/events", summary=f"The lane's {events_summary} (one-lane serve)",
             responses={404: {"model": ErrorAnswer}})
    async def events(limit: int = Query(20, ge=1, le=10000)):
        return lane_events(the_lane("/api/lanes/{lane_id}/events"), limit)

    jpeg = {200: {"content": {"image/jpeg": {}}}, 404: {"model": ErrorAnswer}, 503: {"model": ErrorAnswer}}
    mjpeg = {200: {"content": {f"multipart/x-mixed-replace; boundary={BOUNDARY}": {}}},
             404: {"model": ErrorAnswer}, 503: {"model": ErrorAnswer}}

    @app.get("/lanes/{lane_id}/latest.jpg", summary="One lane's newest frame, annotated (raw=1: as the camera "
             "saw it)", response_class=Response, responses=jpeg)
    async def one_lane_latest(lane_id: str, raw: bool = Query(False)):
        return await latest_of(lane_named(lane_id), raw)

    @app.get("/latest.jpg", summary="The lane's newest frame, annotated (raw=1: as the camera saw it; "
             "one-lane serve)", response_class=Response, responses=jpeg)
    async def latest(raw: bool = Query(False)):
        return await latest_of(the_lane("/lanes/{lane_id}/latest.jpg"), raw)

    @app.get("/lanes/{lane_id}/stream.mjpg", summary="One lane's annotated live picture (MJPEG)",
             response_class=StreamingResponse, responses=mjpeg)
    async def one_lane_stream(lane_id: str, request: Request):
        return stream_of(lane_named(lane_id), request)

    @app.get("/stream.mjpg", summary="The lane's annotated live picture (MJPEG; one-lane serve)",
             response_class=StreamingResponse, responses=mjpeg)
    async def stream(request: Request):
        return stream_of(the_lane("/lanes/{lane_id}/stream.mjpg"), request)

    @app.get("/metrics", summary="Prometheus text format", response_class=Response)
    async def prometheus():
        return Response(metrics.render(), media_type=CONTENT_TYPE)

    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    # Middleware, innermost first: auth, then CORS (only if configured), headers, counting outermost.
    if services.token:
        app.add_middleware(BearerAuth, token=services.token)
    if h.cors_origins:
        app.add_middleware(CORSMiddleware, allow_origins=list(h.cors_origins), allow_methods=["GET", "POST"],
                           allow_headers=["Authorization", "Content-Type"])
    app.add_middleware(SecurityHeaders)
    app.add_middleware(RequestCounter, count=metrics.request)
    return app


def _round(v: float) -> float | None:
    return None if v != v else round(v, 1)
