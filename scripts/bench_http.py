"""The `http` section of scripts/bench.py: /predict under concurrent clients, and the lane under HTTP load.

1. `/predict` requests/s and p50/p95 latency with 1, 4 and 16 concurrent
   clients posting real grocery photos, for: the source material's Flask loop
   (scripts/bench_http_seed.py: one request at a time, PIL + torchvision +
   eager model), `checkout-cam web` with our fp32 artifact, and with our int8
   one (same seeded weights, calibrated on grocery photos). Each server is its
   own process; the clients are threads of this one.
2. A lone request's latency (1 client, median) against what the model needs
   for one photo in-process: decode + preprocess + batch-1 call.
3. `serve --http` on box.mp4 looped and paced at 30 fps: the lane's result
   rate (frames that got a decision per second) and its capture-to-result p95,
   first quiet, then while 8 clients call /predict.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import statistics
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
    "http_lone_latency_ratio": "median latency of one client's /predict (fp32) / the in-process decode + "
                               "preprocess + batch-1 model call for the same photos",
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
    """``clients`` threads posting photos back to back; latencies of requests started after the warm-up."""
    import httpx
    stop = threading.Event()
    lat: list[float] = []
    errors = {"n": 0, "codes": {}}
    lock = threading.Lock()
    t_measure = time.monotonic() + warmup_s

    def client(k: int) -> None:
        i = k
        with httpx.Client(base_url=url, timeout=60) as c:
            while not stop.is_set():
                name, data = photos[i % len(photos)]
                i += clients
                t0 = time.monotonic()
                try:
                    r = c.post("/predict", files={"image": (name, data, "image/jpeg")})
                    ok = r.status_code == 200
                    code = r.status_code
                except httpx.HTTPError as exc:
                    ok, code = False, type(exc).__name__
                t1 = time.monotonic()
                with lock:
                    if not ok:
                        errors["n"] += 1
                        errors["codes"][str(code)] = errors["codes"].get(str(code), 0) + 1
                    elif t0 >= t_measure and not stop.is_set():
                        lat.append((t1 - t0) * 1e3)

    threads = [threading.Thread(target=client, args=(k,), daemon=True) for k in range(clients)]
    for t in threads:
        t.start()
    time.sleep(warmup_s + seconds)
    stop.set()
    for t in threads:
        t.join(60)
    lat.sort()
    n = len(lat)
    pct = (lambda q: lat[min(n - 1, int(round(q / 100 * (n - 1))))]) if n else (lambda q: float("nan"))
    return {"clients": clients, "requests": n, "rps": n / seconds, "p50_ms": pct(50), "p95_ms": pct(95),
            "errors": errors["n"], "error_codes": errors["codes"], "latencies": lat}


def photos_of(bench, n: int) -> list[tuple[str, bytes]]:
    if bench.grocery:
        lines = (bench.grocery / "val.txt").read_text().splitlines()[::5][:n]
        paths = [bench.grocery / ln.split(",")[0].strip() for ln in lines]
        return [(p.name, p.read_bytes()) for p in paths]
    import cv2
    return [(f"noise{i}.jpg", cv2.imencode(".jpg", img)[1].tobytes()) for i, img in enumerate(bench.images(n))]


def lone_model_ms(model: Path, photos: list[tuple[str, bytes]]) -> float:
    """Median in-process decode + preprocess + batch-1 model call (what one photo costs, without HTTP)."""
    from checkout_cam.images import decode_image
    from checkout_cam.model import open_classifier
    clf = open_classifier(model)
    for _, data in photos[:3]:
        clf.infer(clf.preprocess([decode_image(data)]), 3)
    times = []
    for _ in range(2):
        for _, data in photos:
            t0 = time.perf_counter()
            clf.infer(clf.preprocess([decode_image(data)]), 3)
            times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


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
    """``b`` is the bench module (Row, Stats, SectionResult)."""
    res = b.SectionResult()
    try:
        import flask  # noqa: F401
        import httpx  # noqa: F401
    except ImportError as exc:
        res.notes.append(f"http: skipped, needs {exc.name} (pip install -e '.[bench]')")
        return res
    work = bench.work
    seconds = 4.0 if bench.quick else 10.0
    photos = photos_of(bench, 32)
    fp32, int8 = bench.fp32_artifact(), bench.int8_artifact()
    py = [sys.executable]
    servers = {
        "seed": py + [str(ROOT / "scripts" / "bench_http_seed.py")],
        "fp32": py + ["-m", "checkout_cam", "web", "--model", str(fp32)],
        "int8": py + ["-m", "checkout_cam", "web", "--model", str(int8)],
    }
    results: dict[str, dict[int, dict]] = {}
    for name, cmd in servers.items():
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        args = cmd + (["--port", str(port)] if name == "seed" else ["--http", f"127.0.0.1:{port}"])
        with process(args, url, work, f"http-{name}"):
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
    lone = lone_model_ms(fp32, photos)
    seed16, fp16, i16 = results["seed"][16], results["fp32"][16], results["int8"][16]
    res.rows.append(b.Row("http", "fp32, in-process", "decode + preprocess + batch-1 model", b.Stats.of([lone]), "ms"))
    res.figures.update(
        http_rps_vs_seed_fp32_16=round(fp16["rps"] / seed16["rps"], 2) if seed16["rps"] else None,
        http_rps_vs_seed_int8_16=round(i16["rps"] / seed16["rps"], 2) if seed16["rps"] else None,
        http_p95_ms_16=round(fp16["p95_ms"], 1),
        http_lone_latency_ratio=round(results["fp32"][1]["p50_ms"] / lone, 2))
    res.details["predict"] = {name: {c: {k: (round(v, 2) if isinstance(v, float) else v)
                                         for k, v in r.items() if k != "latencies"}
                                     for c, r in per.items()} for name, per in results.items()}
    res.details["lone_model_ms"] = round(lone, 2)

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
