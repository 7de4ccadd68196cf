"""`checkout-cam doctor`: check a lane before it goes live, and say what to fix.

Each check gives one ``Finding``: ok, warn (works, but worth knowing) or fail
(must be fixed before the lane goes live), a line of what was found and, when
not ok, what to do. The checks use the product's own parts (config loader,
model loader, frame sources), so what doctor passes is what serve will run.
"""

from __future__ import annotations

import logging
import os
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from checkout_cam.config import Config, path_problems, writable_folder_problem

from checkout_cam.cpu import cpu_info, parse_cpuinfo

logger = logging.getLogger(__name__)

OK, WARN, FAIL = "ok", "warn", "fail"

# /proc/cpuinfo flag -> what it is called in words; the order is the order printed.
CPU_FEATURES = {
    "avx2": "AVX2",
    "avx512f": "AVX-512",
    "avx512_vnni": "AVX-512 VNNI",
    "avx_vnni": "AVX-VNNI",
    "avx512_bf16": "AVX-512 BF16",
    "amx_tile": "AMX",
    "amx_bf16": "AMX-BF16",
    "amx_int8": "AMX-INT8",
}


@dataclass(frozen=True)
class Finding:
    check: str
    status: str          # ok | warn | fail
    detail: str
    fix: str = ""

    def line(self) -> str:
        mark = {OK: "OK  ", WARN: "WARN", FAIL: "FAIL"}[self.status]
        text = f"{mark} {self.check}: {self.detail}"
        return text + (f"\n     fix: {self.fix}" if self.fix else "")

    def to_dict(self) -> dict:
        return asdict(self)


def check_cpu(cpuinfo: str | None = None) -> Finding:
    """``cpuinfo``: /proc/cpuinfo's text (tests); None reads this machine's through checkout_cam.cpu."""
    cpu = cpu_info() if cpuinfo is None else parse_cpuinfo(cpuinfo)
    flags = cpu.flags
    if not flags:
        return Finding("cpu", WARN, f"{cpu.cores} cores; instruction sets unknown (no /proc/cpuinfo flags)")
    have = [name for flag, name in CPU_FEATURES.items() if flag in flags]
    detail = f"{cpu.cores} cores; {', '.join(have) if have else 'none of AVX2/AVX-512/VNNI/BF16/AMX'}"
    if "avx2" not in flags:
        return Finding("cpu", WARN, detail, "without AVX2 ResNet-18 runs several times slower: expect a low "
                       "inference fps (see `python3 scripts/bench.py --quick`)")
    if not cpu.vnni:
        return Finding("cpu", OK, detail + " (no VNNI/AMX: int8 models gain less here, and use 7-bit activations)")
    return Finding("cpu", OK, detail + " (int8 models use VNNI/AMX)")


def check_config(cfg_path: str | None, load) -> tuple[Config | None, list[Finding]]:
    """``load`` builds the config the command would run with (file + command-line overrides)."""
    from checkout_cam.errors import ConfigError
    if cfg_path:
        where = cfg_path
    else:
        where = "config.yaml" if Path("config.yaml").exists() else "built-in defaults (no ./config.yaml)"
    try:
        cfg = load()
    except ConfigError as exc:
        return None, [Finding("config", FAIL, "; ".join(exc.errors),
                              "correct the settings named (`checkout-cam validate-config FILE` lists them)")]
    findings = [Finding("config", OK, f"{where}: settings valid")]
    # The model, source and log are checked below in depth; these are the other paths.
    for problem in path_problems(cfg):
        if problem.startswith("live.snapshot_dir"):
            findings.append(Finding("config", WARN, problem, "only the live window's `s` key writes there"))
    return cfg, findings


def check_model(cfg: Config) -> Finding:
    from checkout_cam.errors import CheckoutCamError
    path = cfg.model.path
    t0 = time.monotonic()
    try:
        from checkout_cam.model import open_classifier
        clf = open_classifier(path, roi=cfg.preprocess.roi, threads=cfg.model.threads)
        import numpy as np
        image = np.zeros((480, 640, 3), np.uint8)
        clf.classify([image], 1)  # warm-up: the first call pays for kernel selection
        t1 = time.monotonic()
        clf.classify([image], 1)
        infer_ms = (time.monotonic() - t1) * 1e3
    except CheckoutCamError as exc:
        return Finding("model", FAIL, str(exc), f"make it: `checkout-cam export-model --weights imagenet --out "
                       f"{path}` (or `finetune`), or point model.path / --model at the right file")
    load_s = time.monotonic() - t0
    detail = (f"{path}: {clf.name}, {clf.meta.precision}, {len(clf.labels)} classes, loaded in {load_s:.1f} s, "
              f"one frame in {infer_ms:.0f} ms")
    if not clf.trained:
        return Finding("model", FAIL, detail + "; UNTRAINED (random weights: its labels are meaningless)",
                       "a lane needs a trained model: `checkout-cam finetune --train photos/` on the store's "
                       "products (or export ImageNet weights)")
    return Finding("model", OK, detail + "; trained")


def check_camera(cfg: Config, seconds: float = 3.0) -> Finding:
    """Open the source the way serve does and read frames for ``seconds``: fps and size."""
    from checkout_cam.errors import CheckoutCamError
    from checkout_cam.sources import open_source
    s = cfg.source
    stop = threading.Event()
    try:
        source = open_source(s.uri, realtime=True, stop=stop, reconnect_initial_s=s.reconnect_initial_s,
                             reconnect_max_s=s.reconnect_max_s, stall_timeout_s=s.stall_timeout_s, loop=s.loop)
    except CheckoutCamError as exc:
        return Finding("camera", FAIL, str(exc), "set source.uri (or --source) to the lane's camera")
    stamps: list[float] = []
    sizes: set[tuple[int, int]] = set()

    def read() -> None:
        for frame in source:
            stamps.append(frame.timestamp)
            sizes.add((frame.image.shape[1], frame.image.shape[0]))

    reader = threading.Thread(target=read, name="doctor-camera", daemon=True)
    reader.start()
    # A camera may take a while to open (network streams probe for about a second): wait for the first
    # frame up to the stall timeout, then measure for `seconds`.
    deadline = time.monotonic() + s.stall_timeout_s + seconds
    while time.monotonic() < deadline and not stamps:
        time.sleep(0.05)
    if stamps:
        stop.wait(seconds)
    stop.set()
    reader.join(s.stall_timeout_s + 2)
    source.close()
    kind = "camera" if s.uri.isdigit() else "stream" if "://" in s.uri else "video file"
    if not stamps:
        fix = ("check the cable and `ls /dev/video*`; the service user needs the video group" if s.uri.isdigit()
               else "check the URL, the network and the camera's stream settings")
        return Finding("camera", FAIL, f"{kind} {s.uri} gave no frame in {s.stall_timeout_s + seconds:.0f} s", fix)
    span = stamps[-1] - stamps[0]
    fps = (len(stamps) - 1) / span if span > 0 else 0.0
    size = ", ".join(f"{w}x{h}" for w, h in sorted(sizes))
    detail = f"{kind} {s.uri}: {len(stamps)} frames at {fps:.1f} fps, {size}"
    if len(sizes) > 1:
        return Finding("camera", WARN, detail + " (the frame size changed)", "fix the camera's resolution")
    if fps < 10 and len(stamps) > 1:
        return Finding("camera", WARN, detail, "below 10 fps items may pass unseen: check the camera's "
                       "frame rate, exposure (low light lowers it) and the USB bandwidth")
    return Finding("camera", OK, detail)


def check_log_folder(cfg: Config) -> Finding:
    log = Path(cfg.serve.log_path)
    if log.is_dir():
        return Finding("event log", FAIL, f"serve.log_path {log} is a directory",
                       f"give a file name, e.g. {log / 'events.jsonl'}")
    problem = writable_folder_problem(log.parent)
    if problem:
        return Finding("event log", FAIL, f"serve.log_path {log}: {problem}",
                       "choose a writable folder (serve.log_path or --log), or fix its owner/mode")
    if log.parent.exists():
        try:  # a real write: a read-only mount or a full disk shows here, not in the mode bits
            with tempfile.NamedTemporaryFile(dir=log.parent, prefix=".doctor-"):
                pass
        except OSError as exc:
            return Finding("event log", FAIL, f"cannot write in {log.parent}: {exc.strerror or exc}",
                           "choose a writable folder (serve.log_path or --log)")
        free = os.statvfs(log.parent)
        free_mb = free.f_bavail * free.f_frsize / 1e6
        detail = f"{log}: folder writable, {free_mb:.0f} MB free"
        if free_mb < 100:
            return Finding("event log", WARN, detail, "free some disk space: a full disk stops the event log")
        return Finding("event log", OK, detail)
    return Finding("event log", OK, f"{log}: its folder will be created (the parent is writable)")


def run_checks(cfg_path: str | None, load, *, camera_seconds: float = 3.0, camera: bool = True) -> list[Finding]:
    cfg, findings = check_config(cfg_path, load)
    if cfg is None:
        return findings + [check_cpu()]
    findings.append(check_model(cfg))
    if camera:
        findings.append(check_camera(cfg, camera_seconds))
    findings.append(check_log_folder(cfg))
    findings.append(check_cpu())
    return findings
