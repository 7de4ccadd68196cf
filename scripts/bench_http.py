"""The `http` section of scripts/bench.py: /predict under concurrent clients, and the lane under HTTP load.

1. `/predict` requests/s and p50/p95 latency with 1, 4 and 16 concurrent
   clients posting real grocery photos, for: the source material's Flask loop
   (scripts/bench_http_seed.py: one request at a time, PIL + torchvision +
   eager model), `checkout-cam web` with our fp32 artifact, and with our int8
   one (same seeded weights, calibrated on grocery photos). Each server is its
   own process; the clients are threads of this one.
2. A lone request's latency against what the model needs for the same photo
   in-process (decode + preprocess + batch-1 call), alternating photo by photo.
3. `serve --http` on box.mp4 looped and paced at 30 fps: the lane's result
   rate (frames that got a decision per second) and its capture-to-result p95,
   first quiet, then while 8 clients call /predict.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

FIGURE_KEYS = ["http_rps_vs_seed_fp32_16", "http_rps_vs_seed_int8_16", "http_p95_ms_16",
               "http_lone_latency_ratio", "lane_fps_under_http", "lane_p95_ratio_under_http"]

DEFINITIONS = {
    "http_rps_vs_seed_fp32_16": "/predict requests/s with 16 concurrent clients, `checkout-cam web` with the fp32 "
                                "artifact / the source material's Flask loop (one request at a time, PIL, "
                                "torchvision, eager fp32)",
    "http_rps_vs_seed_int8_16": "the same with our int8 artifact (the baseline stays the Flask eager fp32 loop)",
    "http_p95_ms_16": "95th percentile /predict latency at 16 clients, our fp32 server, ms",
    "http_lone_latency_ratio": "one client's /predict latency (fp32) / the in-process decode + preprocess + "
                               "batch-1 model call of the same photo, alternating, median of the ratios",
    "lane_fps_under_http": "`serve --http` on box.mp4 paced at 30 fps while 8 clients call /predict: frames that "
                           "got a decision per second",
    "lane_p95_ratio_under_http": "that lane's capture-to-result p95 under the 8 clients / the same lane's quiet p95",
}

CLIENTS = (1, 4, 16)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def process(args: list[str], url: str, work: Path, name: str, timeout: float = 120):
    """A server process, ready (its /readyz answers 200) for the block; SIGTERM after."""
    import httpx
    log = open(work / f"{name}.log", "w")
    proc = subprocess.Popen(args, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited with {proc.returncode}; see {work / (name + '.log')}")
            try:
                if httpx.get(url + "/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"{name} not ready after {timeout:.0f} s")
            time.sleep(0.3)
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
        log.close()


def load(url: str, photos: list[tuple[str, bytes]], clients: int, seconds: float, warmup_s: float = 1.0) -> dict:
    """``clients`` concurrent clients posting photos back to back (asyncio tasks on one thread: cheaper
    for this process than 16 threads, so the clients take less CPU from the server they measure);
    latencies of requests started after the warm-up."""
    import asyncio

    import httpx

    lat: list[float] = []
    errors: dict = {"n": 0, "codes": {}}

    async def client(k: int, c: "httpx.AsyncClient", t_measure: float, t_end: float) -> None:
        i = k
        while time.monotonic() < t_end:
            name, data = photos[i % len(photos)]
            i += clients
            t0 = time.monotonic()
            try:
                r = await c.post("/predict", files={"image": (name, data, "image/jpeg")})
                ok, code = r.status_code == 200, r.status_code
            except httpx.HTTPError as exc:
                ok, code = False, type(exc).__name__
            t1 = time.monotonic()
            if not ok:
                errors["n"] += 1
                errors["codes"][str(code)] = errors["codes"].get(str(code), 0) + 1
            elif t0 >= t_measure and t1 <= t_end:
                lat.append((t1 - t0) * 1e3)

    async def main() -> None:
        limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
        async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as c:
            t_measure = time.monotonic() + warmup_s
            await asyncio.gather(*(client(k, c, t_measure, t_measure + seconds) for k in range(clients)))

    asyncio.run(main())
    lat.sort()
    n = len(lat)
    pct = (lambda q: lat[min(n - 1, int(round(q / 100 * (n - 1))))]) if n else (lambda q: float("nan"))
    return {"clients": clients, "requests": n, "rps": n / seconds, "p50_ms": pct(50), "p95_ms": pct(95),
            "errors": errors["n"], "error_codes": errors["codes"], "latencies": lat}


def photo_paths(bench, n: int) -> list[Path]:
    if bench.grocery:
        lines = (bench.grocery / "val.txt").read_text().splitlines()[::5][:n]
        return [bench.grocery / ln.split(",")[0].strip() for ln in lines]
    import cv2
    folder = bench.work / "noise-photos"
    folder.mkdir(exist_ok=True)
    out = []
    for i, img in enumerate(bench.images(n)):
        cv2.imwrite(str(folder / f"noise{i}.jpg"), img)
        out.append(folder / f"noise{i}.jpg")
    return out


LONE_SCRIPT = """
import json, sys, time, statistics
import httpx
sys.path.insert(0, sys.argv[3])
from checkout_cam.images import decode_image
from checkout_cam.model import open_classifier
url, model = sys.argv[1], sys.argv[2]
paths = sys.argv[4:]
photos = [open(p, "rb").read() for p in paths]
clf = open_classifier(model)
local, remote = [], []
with httpx.Client(base_url=url, timeout=60) as c:
    for rnd in range(3):
        for data in photos:
            t0 = time.perf_counter()
            clf.infer(clf.preprocess([decode_image(data)]), 3)
            t1 = time.perf_counter()
            assert c.post("/predict", files={"image": ("p.jpg", data, "image/jpeg")}).status_code == 200
            t2 = time.perf_counter()
            if rnd:  # the first round warms both up
                local.append((t1 - t0) * 1e3)
                remote.append((t2 - t1) * 1e3)
print(json.dumps({"local_ms": statistics.median(local), "http_ms": statistics.median(remote),
                  "ratio": statistics.median(r / l for r, l in zip(remote, local))}))
"""


def lone_latency(url: str, model: Path, photo_paths: list[Path]) -> dict:
    """One client's /predict against the same photo done in-process (decode + preprocess + batch-1 call),
    alternating photo by photo in a fresh process, so both see the same machine load and never overlap."""
    import json
    out = subprocess.run([sys.executable, "-c", LONE_SCRIPT, url, str(model), str(ROOT), *map(str, photo_paths)],
                         cwd=ROOT, capture_output=True, text=True, timeout=600,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    if out.returncode != 0:
        raise RuntimeError(f"lone-latency probe failed: {out.stderr[-500:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def lane_phase(url: str, seconds: float) -> dict:
    """The lane's result rate and its recent p95 over one phase, from /api/status."""
    import httpx
    s0 = httpx.get(url + "/api/status", timeout=10).json()["lane"]
    t0 = time.monotonic()
    time.sleep(seconds)
    s1 = httpx.get(url + "/api/status", timeout=10).json()["lane"]
    dt = time.monotonic() - t0
    return {"result_fps": (s1["processed"] - s0["processed"]) / dt, "camera_fps": s1["camera_fps"],
            "p95_ms": s1["latency_p95_ms"], "p50_ms": s1["latency_p50_ms"],
            "dropped": s1["dropped"] - s0["dropped"], "model_runs": s1["model_runs"] - s0["model_runs"],
            "frames": s1["processed"] - s0["processed"]}


def run(bench, b) -> object:
    """``b`` is the bench's core module (scripts/benchkit/core.py: Row, Stats, SectionResult)."""
    res = b.SectionResult()
    try:
        import flask  # noqa: F401
        import httpx  # noqa: F401
    except ImportError as exc:
        res.notes.append(f"http: skipped, needs {exc.name} (pip install -e '.[bench]')")
        return res
    work = bench.work
    seconds = 4.0 if bench.quick else 10.0
    paths = photo_paths(bench, 32)
    photos = [(p.name, p.read_bytes()) for p in paths]
    fp32, int8 = bench.fp32_artifact(), bench.int8_artifact()
    py = [sys.executable]
    servers = {
        "seed": py + [str(ROOT / "scripts" / "bench_http_seed.py")],
        "fp32": py + ["-m", "checkout_cam", "web", "--model", str(fp32)],
        "int8": py + ["-m", "checkout_cam", "web", "--model", str(int8)],
    }
    results: dict[str, dict[int, dict]] = {}
    lone = None
    for name, cmd in servers.items():
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        args = cmd + (["--port", str(port)] if name == "seed" else ["--http", f"127.0.0.1:{port}"])
        with process(args, url, work, f"http-{name}"):
            if name == "fp32":
                lone = lone_latency(url, fp32, paths[:12] if bench.quick else paths[:24])
            results[name] = {}
            for clients in CLIENTS:
                r = load(url, photos, clients, seconds)
                results[name][clients] = r
                res.rows.append(b.Row("http", f"{name}, {clients} clients", "/predict requests/s",
                                      b.Stats.of([r["rps"]]), "req/s",
                                      f"p50 {r['p50_ms']:.0f} ms, p95 {r['p95_ms']:.0f} ms, {r['requests']} requests"
                                      + (f", {r['errors']} errors {r['error_codes']}" if r["errors"] else "")))
                if r["latencies"]:
                    res.rows.append(b.Row("http", f"{name}, {clients} clients", "/predict latency",
                                          b.Stats.of(r["latencies"]), "ms"))
    seed16, fp16, i16 = results["seed"][16], results["fp32"][16], results["int8"][16]
    res.rows.append(b.Row("http", "fp32, in-process", "decode + preprocess + batch-1 model",
                          b.Stats.of([lone["local_ms"]]), "ms", f"one client's /predict alternating with it: "
                          f"{lone['http_ms']:.1f} ms (median ratio {lone['ratio']:.2f})"))
    res.figures.update(
        http_rps_vs_seed_fp32_16=round(fp16["rps"] / seed16["rps"], 2) if seed16["rps"] else None,
        http_rps_vs_seed_int8_16=round(i16["rps"] / seed16["rps"], 2) if seed16["rps"] else None,
        http_p95_ms_16=round(fp16["p95_ms"], 1),
        http_lone_latency_ratio=round(lone["ratio"], 2))
    res.details["predict"] = {name: {c: {k: (round(v, 2) if isinstance(v, float) else v)
                                         for k, v in r.items() if k != "latencies"}
                                     for c, r in per.items()} for name, per in results.items()}
    res.details["lone"] = {k: round(v, 2) for k, v in lone.items()}

    # The lane under HTTP load.
    video = Path(bench.args.data).parent / "videos" / "box.mp4"
    if not video.exists():
        res.notes.append(f"lane under HTTP load: skipped, {video} not found")
        return res
    cfg = work / "serve-http.yaml"
    cfg.write_text("source:\n  loop: true\n  realtime: true\nserve:\n  stats_interval_s: 60\n")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    phase_s = 8.0 if bench.quick else 15.0
    with process(py + ["-m", "checkout_cam", "serve", "--config", str(cfg), "--model", str(fp32), "--source",
                       str(video), "--log", str(work / "serve-http.jsonl"), "--http", f"127.0.0.1:{port}"],
                 url, work, "serve-http"):
        time.sleep(3)   # past the first seconds (model warm, background taken)
        quiet = lane_phase(url, phase_s)
        loader = threading.Thread(target=lambda: loaded.update(load(url, photos, 8, phase_s + 2, warmup_s=1.0)))
        loaded: dict = {}
        loader.start()
        time.sleep(1.5)
        busy = lane_phase(url, phase_s)
        loader.join(120)
    for label, ph in (("quiet", quiet), ("8 HTTP clients", busy)):
        res.rows.append(b.Row("http", f"serve --http lane, {label}", "frames with a decision /s",
                              b.Stats.of([ph["result_fps"]]), "fps",
                              f"camera {ph['camera_fps']:.1f} fps, p50 {ph['p50_ms']} ms, p95 {ph['p95_ms']} ms, "
                              f"model on {ph['model_runs']} of {ph['frames']} frames, dropped {ph['dropped']}"))
    if loaded:
        res.rows.append(b.Row("http", "8 clients beside the lane", "/predict requests/s", b.Stats.of([loaded["rps"]]),
                              "req/s", f"p50 {loaded['p50_ms']:.0f} ms, p95 {loaded['p95_ms']:.0f} ms"))
    res.figures.update(lane_fps_under_http=round(busy["result_fps"], 2),
                       lane_p95_ratio_under_http=round(busy["p95_ms"] / quiet["p95_ms"], 2)
                       if quiet["p95_ms"] else None)
    res.details["lane"] = {"quiet": quiet, "http8": busy,
                           "http8_predict": {k: v for k, v in loaded.items() if k != "latencies"}}
    return res
