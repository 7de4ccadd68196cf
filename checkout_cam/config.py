"""The one declaration of every setting: type, default, range and description.

``config.yaml`` at the repository top is generated from this module
(``checkout-cam validate-config --print-defaults``) and a test keeps the two
equal, so a setting is added here and nowhere else.

Loading rejects unknown keys and names every bad setting by its key path
(``review.min_confidence: must be <= 1.0, got 1.5``).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import types
import typing
from dataclasses import dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any

import yaml

from checkout_cam.errors import ConfigError

logger = logging.getLogger(__name__)

DEFAULT_CONFIG_PATH = Path("config.yaml")


def setting(default: Any, help: str, *, min: float | None = None, max: float | None = None,
            choices: tuple | None = None, length: int | None = None):
    """A config field: its default, a one-line description, and its allowed range."""
    meta = {"help": help, "min": min, "max": max, "choices": choices, "length": length}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class ModelConfig:
    path: str = setting("models/model.pt",
                        "Model artifact every command uses (export-model and finetune write it, the others "
                        "load it; --model overrides): .pt (TorchScript), or .onnx with the onnx extra.")
    top_k: int = setting(3, "How many labels each result keeps and shows.", min=1, max=20)
    threads: int = setting(0, "Torch intra-op threads for inference; 0 = auto: one for an int8 model on a lane (live, serve) "
                              "where the CPU has VNNI (small spaced calls; the other core is for capture), else one "
                              "per core.",
                           min=0, max=256)
    batch_size: int = setting(8, "Images per model call in classify/evaluate.", min=1, max=512)


@dataclass(frozen=True)
class PreprocessConfig:
    roi: list[float] | None = setting(
        None,
        "Scanning area cropped before classification, as [x, y, width, height] in fractions "
        "of the frame (0..1); null = the whole frame.",
        min=0.0, max=1.0, length=4)
    max_image_pixels: int = setting(
        50_000_000, "Images larger than this many pixels are refused before decoding "
        "(decompression-bomb guard).", min=1)


@dataclass(frozen=True)
class SourceConfig:
    uri: str = setting("0", "Camera index (0, 1, ...), video file path, or rtsp:// / http:// URL.")
    realtime: bool = setting(False, "Pace a video file at its own fps and drop frames like a live "
                             "camera would (a file standing in for a camera).")
    loop: bool = setting(False, "Restart a video file when it ends (a demo camera that never stops).")
    reconnect_initial_s: float = setting(1.0, "First wait before reopening a failed camera/stream.",
                                         min=0.01, max=600)
    reconnect_max_s: float = setting(30.0, "Longest wait between reconnect attempts (backoff doubles).",
                                     min=0.01, max=3600)
    stall_timeout_s: float = setting(5.0, "A live source that yields no frame for this long is "
                                     "treated as offline and reopened.", min=0.1, max=600)


@dataclass(frozen=True)
class PipelineConfig:
    motion_gating: bool = setting(True, "Live/serve: reuse the last result while the scanning area "
                                  "has not changed, instead of running the model again.")
    motion_threshold: float = setting(2.0, "Mean absolute change (0-255 levels) of the downscaled "
                                      "scanning area that counts as motion.", min=0.0, max=255.0)
    motion_max_reuse_s: float = setting(1.0, "Run the model at least this often even in a still scene, "
                                        "so a change below the threshold cannot hide an item for long.",
                                        min=0.0, max=60.0)
    replay_batch_size: int = setting(8, "Replay: frames already decoded are classified together, up to "
                                     "this many per model call (live always uses 1 for latency).",
                                     min=1, max=64)
    queue_timeout_s: float = setting(0.1, "How often blocked threads wake to check for shutdown.",
                                     min=0.001, max=10)
    shutdown_timeout_s: float = setting(3.0, "How long shutdown waits for each thread before "
                                        "logging that it did not stop.", min=0.1, max=60)


@dataclass(frozen=True)
class ReviewConfig:
    min_confidence: float = setting(0.6, "Flag for cashier review when the smoothed top-1 "
                                    "probability is below this.", min=0.0, max=1.0)
    min_margin: float = setting(0.15, "Flag when top-1 minus top-2 (smoothed) is below this.",
                                min=0.0, max=1.0)
    smoothing_window: int = setting(5, "Results averaged to smooth probabilities (1 = no smoothing).",
                                    min=1, max=100)
    stable_results: int = setting(5, "Consecutive classified results with the scanning area occupied "
                                  "before an item event opens (at least 2: a blip of one frame is "
                                  "never an item). The label flickering meanwhile does not matter.",
                                  min=2, max=1000)
    empty_threshold: float = setting(12.0, "Mean absolute difference (0-255 levels) between the "
                                     "scanning area and the background below which the scene "
                                     "counts as empty.", min=0.0, max=255.0)
    empty_results: int = setting(3, "Consecutive empty results that close an open item event.",
                                 min=1, max=1000)
    still_threshold: float = setting(1.5, "Mean absolute change (0-255 levels) of the scanning area's "
                                     "thumbnail under which the scene counts as still (how the empty "
                                     "lane is recognised).", min=0.0, max=255.0)
    background_learn_s: float = setting(3.0, "At start (or after a resolution change), a scene still for "
                                        "this long is learned as the empty lane.", min=0.1, max=600)
    background_relearn_s: float = setting(20.0, "A scene that looks occupied but has been still for this "
                                          "long is learned as the new empty lane (an item left lying, a "
                                          "moved camera).", min=0.5, max=86400)
    background_adapt_s: float = setting(5.0, "Time constant (s) with which the empty lane's background "
                                        "follows slow light changes.", min=0.1, max=86400)
    swap_threshold: float = setting(0.3, "Colour-signature distance (0-1) from the open item's at which "
                                    "the item in view counts as another one (a swap without an empty "
                                    "gap), when it lasts stable_results results.", min=0.0, max=1.0)
    min_label_share: float = setting(0.6, "Flag an item for review (mixed_labels) when fewer of its "
                                     "results than this share had its label as their top-1.",
                                     min=0.0, max=1.0)
    outage_gap_s: float = setting(1.0, "Frames further apart than this are a camera outage: the open "
                                  "item closes at its last frame (camera_lost) and an outage record "
                                  "is logged.", min=0.05, max=3600)


@dataclass(frozen=True)
class RenderConfig:
    stale_after_ms: float = setting(500.0, "A result older than this (capture to display) is not "
                                    "shown, so a label never outlives its item.", min=1, max=60000)
    window_name: str = setting("checkout-cam", "Title of the live window.")
    font_scale: float = setting(0.6, "Overlay text size.", min=0.1, max=5.0)


@dataclass(frozen=True)
class LaneConfig:
    """One lane of a several-lane `serve` (an item of ``serve.lanes``); unset values come from the
    file's single-lane settings."""

    lane_id: str = setting("", "This lane's id (as serve.lane_id): unique in the store.")
    source: str = setting("", "Its camera: index, video file or rtsp:// / http:// URL (as source.uri).")
    roi: list[float] | None = setting(None, "Its scanning area [x, y, width, height] in fractions; null = "
                                      "preprocess.roi.", min=0.0, max=1.0, length=4)
    min_confidence: float | None = setting(None, "Its review threshold; null = review.min_confidence.",
                                           min=0.0, max=1.0)
    min_margin: float | None = setting(None, "Its review margin; null = review.min_margin.", min=0.0, max=1.0)
    log_path: str | None = setting(None, "Its event log; null = serve.log_path with the lane id added "
                                   "(logs/events-LANE.jsonl).")


@dataclass(frozen=True)
class ServeConfig:
    lane_id: str = setting("lane1", "This lane's id: in every event line, event id and (with MQTT) topic. "
                           "Letters, digits, '_', '.', '-'; unique in the store.")
    log_path: str = setting("logs/events.jsonl", "JSON-lines event log (one item event per line).")
    log_max_bytes: int = setting(10_000_000, "Rotate the event log when it would grow past this.",
                                 min=1000)
    log_backups: int = setting(5, "Rotated event logs kept (events.jsonl.1 ... .N).", min=0, max=1000)
    stats_interval_s: float = setting(60.0, "Seconds between stats lines on stderr.", min=1, max=86400)
    lanes: list[LaneConfig] = setting(
        [], "Several lanes in one process, one model: a list of {lane_id, source, roi, min_confidence, "
        "min_margin, log_path} (e.g. [{lane_id: lane1, source: 0}, {lane_id: lane2, source: "
        "'rtsp://cam2/stream'}]); empty = the one lane of source.uri and serve.lane_id.")
    sink_unhealthy_after_s: float = setting(
        30.0, "A sink (the event log, MQTT) failing for this long makes the service unhealthy: the "
        "systemd watchdog is no longer pinged (systemd restarts it) and /readyz says why.",
        min=0.0, max=86400)


@dataclass(frozen=True)
class MqttConfig:
    host: str = setting("", "MQTT broker host for the store (events, review pictures, availability, stats); "
                        "empty = MQTT off. The lane id is serve.lane_id.")
    port: int = setting(1883, "Broker port (8883 is the usual one with TLS).", min=1, max=65535)
    protocol: str = setting("3.1.1", "MQTT protocol version.", choices=("3.1.1", "5"))
    username: str = setting("", "Broker username; empty = anonymous.")
    password: str = setting("", "Broker password (prefer password_file: config files get copied around).")
    password_file: str = setting("", "File holding the broker password (first line); wins over password.")
    tls_ca: str = setting("", "CA certificate file: set it to connect with TLS and check the broker's "
                          "certificate.")
    tls_cert: str = setting("", "Client certificate file for TLS client authentication (with tls_key).")
    tls_key: str = setting("", "Client private key file for tls_cert.")
    client_id: str = setting("", "MQTT client id; empty = checkout_cam-<lane_id>.")
    topic_prefix: str = setting("checkout_cam", "Topics are <topic_prefix>/<lane_id>/... .")
    keepalive_s: int = setting(30, "Seconds between keepalive pings; the broker declares the lane "
                               "offline (its Last Will) after 1.5 times this without a word.",
                               min=5, max=3600)
    state_dir: str = setting("state", "The lane's state directory: the durable outbox "
                             "(outbox.sqlite3) lives here.")
    outbox_max_mb: float = setting(200.0, "Outbox size bound in MB of payload: past it new messages are "
                                   "dropped (logged loudly and counted; the event log still has "
                                   "them).", min=0.01, max=100000)
    reconnect_min_s: float = setting(1.0, "First wait before reconnecting to the broker (doubles).",
                                     min=0.1, max=600)
    reconnect_max_s: float = setting(30.0, "Longest wait between reconnect attempts.", min=0.1, max=3600)
    review_images: bool = setting(True, "Publish a JPEG of the scanning area of each flagged item's "
                                  "most confident frame on review/<event_id>.")
    review_max_px: int = setting(320, "Longest side of a review picture, in pixels.", min=32, max=2048)
    shutdown_drain_s: float = setting(2.0, "On shutdown, wait up to this long for the outbox to drain "
                                      "before disconnecting (the rest is sent at the next start).",
                                      min=0.0, max=60)


@dataclass(frozen=True)
class LiveConfig:
    snapshot_dir: str = setting("snapshots", "Where the `s` key saves raw and annotated PNGs.")


@dataclass(frozen=True)
class HttpConfig:
    listen: str | None = setting(None, "HOST:PORT of the web page and HTTP API. `checkout-cam web` and "
                                 "`serve --http` use 127.0.0.1:8080 when null; plain `serve` starts no "
                                 "web service unless this is set.")
    token: str | None = setting(None, "Bearer token every route but /healthz then needs (at least 16 "
                                "characters; the CHECKOUT_CAM_HTTP_TOKEN environment variable wins). "
                                "Required to listen on an address other than loopback.")
    allow_anonymous: bool = setting(False, "Listen on a non-loopback address without a token (only on a "
                                    "network you trust).")
    max_upload_bytes: int = setting(10 * 1024 * 1024, "Largest request body accepted; a bigger one is "
                                    "answered 413 before it is read.", min=1024)
    max_images: int = setting(16, "Most images one /predict request may carry.", min=1, max=256)
    max_batch: int = setting(8, "Most images per model call when requests wait together (a lone "
                             "request is never held back).", min=1, max=256)
    max_batch_beside_lane: int = setting(1, "While a lane is active, HTTP batches are cut to this many "
                                         "images, so a lane frame never waits behind a long call.",
                                         min=1, max=256)
    max_share_beside_lane: float = setting(0.5, "While a lane is active, HTTP calls take at most this share "
                                           "of the model's time; the rest stays free for the lane's frames "
                                           "and its capture thread (1 = no limit).", min=0.05, max=1.0)
    max_queue: int = setting(64, "HTTP images that may wait for the model; more are answered 503 with "
                             "Retry-After.", min=1, max=100000)
    request_timeout_s: float = setting(30.0, "A request still waiting for the model after this long is "
                                       "answered 503.", min=0.1, max=3600)
    stream_fps: float = setting(15.0, "Most frames per second the live MJPEG view is encoded at.",
                                min=0.5, max=60)
    max_viewers: int = setting(4, "Live MJPEG viewers at once; one more is answered 503.", min=0, max=1000)
    jpeg_quality: int = setting(80, "JPEG quality of the live view and /latest.jpg.", min=10, max=100)
    recent_events: int = setting(100, "Item events /api/events keeps in memory.", min=1, max=100000)
    cors_origins: list[str] = setting([], "Origins allowed to call the API from a browser page of their "
                                      "own (CORS); empty = none.")


@dataclass(frozen=True)
class Config:
    model: ModelConfig = field(default_factory=ModelConfig, metadata={"help": "The model artifact and how it runs."})
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig, metadata={"help": "What part of each frame/image the model sees."})
    source: SourceConfig = field(default_factory=SourceConfig, metadata={"help": "Where frames come from."})
    pipeline: PipelineConfig = field(default_factory=PipelineConfig, metadata={"help": "Threads and queues between capture and inference."})
    review: ReviewConfig = field(default_factory=ReviewConfig, metadata={"help": "When an item is decided, and when a cashier must look."})
    render: RenderConfig = field(default_factory=RenderConfig, metadata={"help": "The overlay drawn on frames."})
    serve: ServeConfig = field(default_factory=ServeConfig, metadata={"help": "The headless service's event log and stats."})
    live: LiveConfig = field(default_factory=LiveConfig, metadata={"help": "The live camera window."})
    mqtt: MqttConfig = field(default_factory=MqttConfig, metadata={"help": "Publishing to the store's MQTT broker through a durable outbox (serve)."})
    http: HttpConfig = field(default_factory=HttpConfig, metadata={"help": "The web page and HTTP API (`web`, `serve --http`)."})


# ---------------------------------------------------------------- validation

def _type_name(tp: Any) -> str:
    return {int: "an integer", float: "a number", str: "a string", bool: "true or false"}.get(tp, str(tp))


def _check_value(path: str, value: Any, tp: Any, meta: dict, errors: list[str]) -> Any:
    if is_dataclass(tp):   # a list of records (serve.lanes)
        return _build(tp, value, path, errors)
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None:
            return None
        return _check_value(path, value, args[0], meta, errors)
    if origin is list:
        (item_tp,) = typing.get_args(tp)
        if not isinstance(value, list):
            errors.append(f"{path}: must be a list, got {value!r}")
            return value
        if is_dataclass(item_tp):
            return [_build(item_tp, v, f"{path}[{i}]", errors) for i, v in enumerate(value)]
        if meta.get("length") is not None and len(value) != meta["length"]:
            errors.append(f"{path}: must have {meta['length']} items, got {len(value)}")
            return value
        return [_check_value(f"{path}[{i}]", v, item_tp, meta, errors) for i, v in enumerate(value)]
    if tp is bool:
        if not isinstance(value, bool):
            errors.append(f"{path}: must be true or false, got {value!r}")
        return value
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if tp is str and isinstance(value, (int, float)) and not isinstance(value, bool):
        value = str(value)  # `uri: 0` in YAML means camera 0
    if not isinstance(value, tp) or (tp is int and isinstance(value, bool)):
        errors.append(f"{path}: must be {_type_name(tp)}, got {value!r}")
        return value
    if tp is float and not math.isfinite(value):
        # NaN passes every `<` and `>` range check (all comparisons are False), so it is refused
        # here for every float setting, before the range checks can be fooled by it.
        errors.append(f"{path}: must be a finite number, got {value!r}")
        return value
    if meta.get("min") is not None and value < meta["min"]:
        errors.append(f"{path}: must be >= {meta['min']}, got {value!r}")
    if meta.get("max") is not None and value > meta["max"]:
        errors.append(f"{path}: must be <= {meta['max']}, got {value!r}")
    if meta.get("choices") is not None and value not in meta["choices"]:
        errors.append(f"{path}: must be one of {', '.join(map(str, meta['choices']))}, got {value!r}")
    return value


def _build(cls: type, data: Any, prefix: str, errors: list[str]) -> Any:
    if data is None:
        data = {}
    if not isinstance(data, dict):
        errors.append(f"{prefix or 'config'}: must be a mapping of settings, got {data!r}")
        return cls()
    hints = typing.get_type_hints(cls)
    known = {f.name: f for f in fields(cls)}
    for key in data:
        if key not in known:
            where = f"{prefix}.{key}" if prefix else str(key)
            errors.append(f"{where}: unknown setting (known here: {', '.join(known)})")
    values = {}
    for name, f in known.items():
        if name not in data:
            continue
        path = f"{prefix}.{name}" if prefix else name
        tp = hints[name]
        if is_dataclass(tp):
            values[name] = _build(tp, data[name], path, errors)
        else:
            values[name] = _check_value(path, data[name], tp, dict(f.metadata), errors)
    return cls(**values)


def _cross_checks(cfg: Config, errors: list[str]) -> None:
    from checkout_cam.schema import LANE_ID_RE
    if not LANE_ID_RE.match(cfg.serve.lane_id):
        errors.append(f"serve.lane_id: must be 1-64 letters, digits, '_', '.', '-' starting with a letter "
                      f"or digit, got {cfg.serve.lane_id!r}")
    _check_roi("preprocess.roi", cfg.preprocess.roi, errors)
    seen_ids: set[str] = set()
    seen_logs: set[str] = set()
    for i, lane in enumerate(cfg.serve.lanes):
        where = f"serve.lanes[{i}]"
        if not LANE_ID_RE.match(lane.lane_id):
            errors.append(f"{where}.lane_id: must be 1-64 letters, digits, '_', '.', '-' starting with a "
                          f"letter or digit, got {lane.lane_id!r}")
        elif lane.lane_id in seen_ids:
            errors.append(f"{where}.lane_id: {lane.lane_id!r} is used by an earlier lane; lane ids are unique")
        seen_ids.add(lane.lane_id)
        if not lane.source:
            errors.append(f"{where}.source: every lane needs its camera (index, file or URL)")
        _check_roi(f"{where}.roi", lane.roi, errors)
        log = lane_log_path(cfg.serve.log_path, lane)
        if log in seen_logs:
            errors.append(f"{where}.log_path: {log} is the log of an earlier lane; each lane writes its own")
        seen_logs.add(log)
    h = cfg.http
    if h.listen is not None:
        from checkout_cam.web.address import parse_listen
        try:
            parse_listen(h.listen)
        except ValueError as exc:
            errors.append(f"http.listen: {exc}")
    if h.token is not None and len(h.token) < 16:
        errors.append("http.token: must be at least 16 characters (make one with "
                      "`python3 -c 'import secrets; print(secrets.token_urlsafe(24))'`)")
    if cfg.source.reconnect_max_s < cfg.source.reconnect_initial_s:
        errors.append("source.reconnect_max_s: must be >= source.reconnect_initial_s")
    m = cfg.mqtt
    if m.reconnect_max_s < m.reconnect_min_s:
        errors.append("mqtt.reconnect_max_s: must be >= mqtt.reconnect_min_s")
    if bool(m.tls_cert) != bool(m.tls_key):
        errors.append("mqtt.tls_cert: tls_cert and tls_key go together (set both or neither)")
    if m.tls_cert and not m.tls_ca:
        errors.append("mqtt.tls_cert: a client certificate needs TLS: set mqtt.tls_ca too")
    if (m.password or m.password_file) and not m.username:
        errors.append("mqtt.username: a password needs a username")
    if not m.topic_prefix or any(c in m.topic_prefix for c in "+#") or m.topic_prefix.endswith("/"):
        errors.append(f"mqtt.topic_prefix: must be non-empty, without + # or a trailing /, got {m.topic_prefix!r}")


def _check_roi(where: str, roi: list[float] | None, errors: list[str]) -> None:
    if roi is not None and all(isinstance(v, float) for v in roi):
        x, y, w, h = roi
        if w <= 0 or h <= 0:
            errors.append(f"{where}: width and height must be > 0")
        if x + w > 1.0 + 1e-9 or y + h > 1.0 + 1e-9:
            errors.append(f"{where}: x+width and y+height must be <= 1, got {roi}")


def lane_log_path(base: str, lane: LaneConfig) -> str:
    """A lane's event log: its own setting, else ``base`` with the lane id before the suffix."""
    if lane.log_path:
        return lane.log_path
    p = Path(base)
    return str(p.with_name(f"{p.stem}-{lane.lane_id}{p.suffix}"))


def lane_config(cfg: Config, lane: LaneConfig) -> Config:
    """The single-lane Config one lane of ``serve.lanes`` runs with: the file's settings, with the
    lane's own id, camera, scanning area, review thresholds and log."""
    review = {k: v for k, v in (("min_confidence", lane.min_confidence), ("min_margin", lane.min_margin))
              if v is not None}
    return dataclasses.replace(
        cfg,
        source=dataclasses.replace(cfg.source, uri=lane.source),
        preprocess=dataclasses.replace(cfg.preprocess, roi=lane.roi if lane.roi is not None else cfg.preprocess.roi),
        review=dataclasses.replace(cfg.review, **review),
        serve=dataclasses.replace(cfg.serve, lane_id=lane.lane_id, log_path=lane_log_path(cfg.serve.log_path, lane),
                                  lanes=[]),
        # Each lane publishes as itself: its own MQTT client and durable outbox.
        mqtt=dataclasses.replace(cfg.mqtt, state_dir=str(Path(cfg.mqtt.state_dir) / lane.lane_id),
                                 client_id=f"{cfg.mqtt.client_id}-{lane.lane_id}" if cfg.mqtt.client_id else ""))


def config_from_dict(data: Any, source: str = "config") -> Config:
    """Validate a parsed mapping; raise ConfigError listing every problem by key path."""
    errors: list[str] = []
    cfg = _build(Config, data, "", errors)
    if not errors:
        _cross_checks(cfg, errors)
    if errors:
        raise ConfigError(errors, source)
    return cfg


def load_config(path: str | Path | None = None) -> Config:
    """Load a YAML config file. ``None`` means ./config.yaml if present, else the defaults."""
    if path is None:
        if not DEFAULT_CONFIG_PATH.exists():
            logger.debug("no %s here; using built-in defaults", DEFAULT_CONFIG_PATH)
            return Config()
        path = DEFAULT_CONFIG_PATH
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError([f"file not found; make one with `checkout-cam validate-config "
                           f"--print-defaults > {path}`"], str(path)) from None
    except PermissionError:
        raise ConfigError(["permission denied: the user running checkout-cam cannot read it "
                           "(check its owner and mode)"], str(path)) from None
    except IsADirectoryError:
        raise ConfigError(["is a directory, not a config file"], str(path)) from None
    except OSError as exc:
        raise ConfigError([f"cannot read: {exc.strerror or exc}"], str(path)) from None
    except UnicodeDecodeError as exc:
        line = text_line_of(path, exc.start)
        raise ConfigError([f"not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at line {line}); "
                           f"save it as UTF-8"], str(path)) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError([f"not valid YAML{where}: {getattr(exc, 'problem', exc)}"], str(path)) from None
    return config_from_dict(data, str(path))


def text_line_of(path: Path, offset: int) -> int:
    """The 1-based line of byte ``offset`` in a file (for a decoding error)."""
    try:
        return path.read_bytes()[:offset].count(b"\n") + 1
    except OSError:
        return 0


def path_problems(cfg: Config, *, base: Path | None = None) -> list[str]:
    """Files and folders the settings name that a run needs, checked on this machine.

    ``load_config`` does not check them (``export-model`` writes the model that
    ``model.path`` names); ``validate-config`` and ``doctor`` do. Relative paths
    resolve against ``base`` (the current directory: under systemd the unit's
    WorkingDirectory).
    """
    base = Path.cwd() if base is None else base
    problems: list[str] = []

    def where(p: str) -> Path:
        return base / p if not Path(p).is_absolute() else Path(p)

    model = where(cfg.model.path)
    if not model.exists():
        problems.append(f"model.path: {model} does not exist; make it with `checkout-cam export-model "
                        f"--weights imagenet` (or --weights random for an untrained demo)")
    elif not model.is_file():
        problems.append(f"model.path: {model} is not a file")
    elif not os.access(model, os.R_OK):
        problems.append(f"model.path: {model} is not readable by this user (check its owner and mode)")
    uri = cfg.source.uri
    if not uri.isdigit() and "://" not in uri:
        video = where(uri)
        if not video.is_file():
            problems.append(f"source.uri: video file {video} does not exist (a camera is an index "
                            f"like 0, a stream an rtsp:// or http:// URL)")
    for key, value in (("serve.log_path", cfg.serve.log_path), ("live.snapshot_dir", cfg.live.snapshot_dir)):
        target = where(value)
        folder = target.parent if key == "serve.log_path" else target
        problem = writable_folder_problem(folder)
        if problem:
            problems.append(f"{key}: {problem}")
        if key == "serve.log_path" and target.is_dir():
            problems.append(f"{key}: {target} is a directory; give a file name such as events.jsonl")
    for i, lane in enumerate(cfg.serve.lanes):
        if lane.source and not lane.source.isdigit() and "://" not in lane.source and not where(lane.source).is_file():
            problems.append(f"serve.lanes[{i}].source: video file {where(lane.source)} does not exist")
        log = where(lane_log_path(cfg.serve.log_path, lane))
        problem = writable_folder_problem(log.parent)
        if problem:
            problems.append(f"serve.lanes[{i}].log_path: {problem}")
    return problems


def writable_folder_problem(folder: Path) -> str | None:
    """Why files cannot be created in ``folder`` (or the folders that would be made for it); None if they can."""
    probe = folder
    while not probe.exists():
        if probe.parent == probe:
            return f"{folder}: no existing folder above it"
        probe = probe.parent
    if not probe.is_dir():
        return f"{probe} is a file, so {folder} cannot be a folder"
    if not os.access(probe, os.W_OK | os.X_OK):
        return f"{probe} is not writable by this user" + ("" if probe == folder else f" (needed to create {folder})")
    return None


def override(cfg: Config, dotted: str, value: Any) -> Config:
    """Return a copy with one setting replaced (CLI flags win over the file), validated."""
    section, name = dotted.split(".")
    data = to_dict(cfg)
    data[section][name] = value
    return config_from_dict(data, "command line")


def to_dict(cfg: Any) -> dict:
    return dataclasses.asdict(cfg)


# ---------------------------------------------------------------- config.yaml

def _yaml_scalar(value: Any) -> str:
    return yaml.safe_dump(value, default_flow_style=True, width=1000).strip().removesuffix("...").strip()


def render_defaults_yaml() -> str:
    """config.yaml as shipped: every setting at its default, each with its description."""
    lines = ["# checkout_cam configuration. Every setting, at its default, with what it does.",
             "# Check a file with: checkout-cam validate-config FILE",
             "# Generated by: checkout-cam validate-config --print-defaults", ""]
    defaults = Config()
    for sec in fields(Config):
        lines.append(f"# {sec.metadata['help']}")
        lines.append(f"{sec.name}:")
        section = getattr(defaults, sec.name)
        for f in fields(section):
            meta = f.metadata
            rng = ""
            if meta.get("min") is not None or meta.get("max") is not None:
                rng = f" [{'' if meta['min'] is None else meta['min']}..{'' if meta['max'] is None else meta['max']}]"
            lines.append(f"  # {meta['help']}{rng}")
            lines.append(f"  {f.name}: {_yaml_scalar(getattr(section, f.name))}")
        lines.append("")
    return "\n".join(lines)
