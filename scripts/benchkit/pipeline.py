"""The end-to-end sections: the source material's naive loop against `replay` on box.mp4 (fp32 and
int8, with and without motion gating) and the ceiling replay has on this machine (replay); `live` on
box.mp4 looped at 30 fps and on a still scene (live); `serve` as a fresh process, launch to first
result and peak RSS (serve); and their helpers (the video check, the no-model classifier, an X
display, an RSS sampler)."""

from __future__ import annotations

import contextlib
import os
import resource
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Callable

import torch

from checkout_cam.model.artifact import read_meta
from checkout_cam.model.classifier import BACKENDS, Classifier, open_classifier

from .core import ROOT, Bench, Row, SectionResult, Stats, torch_threads

# ---------------------------------------------------------------- end to end: replay, live, serve

def _video_section(bench: "Bench") -> tuple[Path | None, SectionResult]:
    """box.mp4 and a fresh result; the result already says why when the video is missing."""
    res = SectionResult()
    video = Path(bench.args.data).parent / "videos" / "box.mp4"
    if not video.exists():
        res.notes.append(f"skipped: {video} not found")
        return None, res
    return video, res


def naive_loop(video: Path, model: torch.nn.Module) -> int:
    """The source material's loop (per frame BGR->RGB, PIL, torchvision transforms, eager model,
    softmax, top-3, one after another) over ``video``; returns the frames it classified."""
    from PIL import Image
    from torchvision import transforms as T
    import cv2
    tf = T.Compose([T.Resize(256), T.CenterCrop(224), T.ToTensor(),
                    T.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])])
    cap = cv2.VideoCapture(str(video))
    n = 0
    with torch.inference_mode():
        while True:
            ok, bgr = cap.read()
            if not ok:
                break
            x = tf(Image.fromarray(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))).unsqueeze(0)
            torch.topk(torch.softmax(model(x), 1), 3)
            n += 1
    cap.release()
    return n


def _cfg(model: Path, source: Path, **extra):
    from checkout_cam.config import Config, override
    cfg = override(override(Config(), "model.path", str(model)), "source.uri", str(source))
    for key, value in extra.items():
        cfg = override(cfg, key, value)
    return cfg


class NoModelClassifier(Classifier):
    """Replay with the model taken out: zeros for logits, everything else as `replay` does it
    (decode, preprocess, review, drawing, encoding, event log). Only the bench opens it, through the
    backend registry, under a suffix of its own; the file names the artifact whose metadata it copies."""

    SUFFIX = ".bench-nomodel"

    def __init__(self, path: str | Path, roi=None):
        meta = read_meta(Path(path).read_text(encoding="utf-8").strip())
        super().__init__(meta, "no model", roi)

    def logits(self, batch: torch.Tensor) -> torch.Tensor:
        return torch.zeros(batch.shape[0], len(self.meta.labels))


def _cpu_s() -> float:
    """CPU seconds this process has used, all threads."""
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def _video_batches(video: Path, clf, batch: int) -> list[torch.Tensor]:
    """Every frame of ``video``, preprocessed as the classifier does, in batches (model-only runs)."""
    import cv2
    cap = cv2.VideoCapture(str(video))
    frames = []
    while True:
        ok, bgr = cap.read()
        if not ok:
            break
        frames.append(bgr)
    cap.release()
    return [clf.preprocess(frames[i:i + batch]) for i in range(0, len(frames), batch)]


def bench_replay(bench: "Bench") -> SectionResult:
    """Naive loop vs `replay` (fp32 and int8, annotated video and event log written), box.mp4:
    every frame through the model (replay's default), and with motion gating (`replay --gating`).

    The same rotation also times the model alone on box.mp4's frames (batched as replay batches them;
    as one stream with all torch threads, and as one-thread streams side by side) and replay without
    the model, each with the CPU time it used. The cheaper model figure plus the rest is what
    every-frame replay must spend per frame; divided into this machine's cores it gives the most
    `replay` could reach if its work packed the cores perfectly (``replay_*_ceiling_vs_naive``), so a
    target above that ceiling shows as out of reach for this machine rather than as slack in the
    pipeline.
    """
    from checkout_cam.config import Config
    from checkout_cam.modes.replay import run_replay
    video, res = _video_section(bench)
    if video is None:
        return res
    runs = {f"replay {prec}{' gated' if gated else ''}": (prec, gated)
            for gated in (False, True) for prec in ("fp32", "int8")}
    models = {"fp32": bench.fp32_artifact(), "int8": bench.int8_artifact()}
    nomodel = bench.work / f"replay{NoModelClassifier.SUFFIX}"
    nomodel.write_text(str(models["fp32"]), encoding="utf-8")
    BACKENDS[NoModelClassifier.SUFFIX] = NoModelClassifier
    batch = Config().pipeline.replay_batch_size
    classifiers = {prec: open_classifier(path, threads=bench.threads) for prec, path in models.items()}
    batches = _video_batches(video, classifiers["fp32"], batch)
    n_frames = sum(b.shape[0] for b in batches)

    def model_only(prec: str, streams: int = 1) -> tuple[int, None]:
        """All frames through the model; with streams > 1, that many threads share the batches,
        one torch thread each (no OpenMP barrier between the cores: a preempted core stalls only
        its own stream)."""
        def run(part: list[torch.Tensor]) -> None:
            with torch.inference_mode():
                for b in part:
                    classifiers[prec].logits(b)
        if streams == 1:
            run(batches)
            return n_frames, None
        with torch_threads(max(1, bench.threads // streams)):   # new threads take torch's global setting
            threads = [threading.Thread(target=run, args=(batches[i::streams],)) for i in range(streams)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
        return n_frames, None

    def replay(path: Path, gated: bool) -> tuple[int, float]:
        """Frames and replay's own processing seconds: from after the model is loaded, like the
        naive loop's (whose eager model is built once, outside its clock)."""
        log = bench.work / "replay.jsonl"
        log.unlink(missing_ok=True)   # each call is a fresh audit: replay refuses to mix runs in one log
        s = run_replay(_cfg(path, video), out=bench.work / "replay.mp4", log=log, progress=False, gating=gated)
        if gated:
            shares.append(s.model_runs / s.frames)
        return s.frames, s.seconds

    # Each call returns (frames, seconds to rate them by; None = its wall time here).
    calls: dict[str, Callable[[], tuple[int, float | None]]] = {
        "naive loop": lambda: (naive_loop(video, bench.eager()), None)}
    calls.update({name: (lambda p=models[prec], g=gated: replay(p, g)) for name, (prec, gated) in runs.items()})
    calls.update({f"model only {prec}": (lambda p=prec: model_only(p)) for prec in models})
    streams = max(2, bench.threads)
    calls.update({f"model only {prec}, {streams} streams": (lambda p=prec: model_only(p, streams))
                  for prec in models})
    calls["replay, no model"] = lambda: replay(nomodel, False)
    names = list(calls)
    fps: dict[str, list[float]] = {k: [] for k in names}
    core_ms: dict[str, list[float]] = {k: [] for k in names}   # CPU time per frame
    busy: dict[str, list[float]] = {k: [] for k in names}      # cores kept busy on average
    shares: list[float] = []
    try:
        for r in range(1 if bench.quick else 3):
            for name in names[r % len(names):] + names[:r % len(names)]:  # rotate the order round by round
                c0, t0 = _cpu_s(), time.perf_counter()
                frames, seconds = calls[name]()
                cpu, wall = _cpu_s() - c0, time.perf_counter() - t0
                fps[name].append(frames / (seconds or wall))
                core_ms[name].append(cpu / frames * 1e3)
                busy[name].append(cpu / wall)
    finally:
        BACKENDS.pop(NoModelClassifier.SUFFIX, None)
    stats = {k: Stats.of(v) for k, v in fps.items()}
    med_core_ms = {k: statistics.median(v) for k, v in core_ms.items()}
    med_busy = {k: statistics.median(v) for k, v in busy.items()}
    for name, st in stats.items():
        if name == "naive loop":
            note = "per frame: PIL + torchvision + eager"
        elif name.startswith("model only"):
            note = f"batch {batch}, preprocessed frames" + (
                f"; {streams} threads, 1 torch thread each" if name.endswith("streams") else "")
        elif name == "replay, no model":
            note = "decode, preprocess, review, draw, encode, log"
        else:
            note = "annotated video + event log written" + (
                f"; model ran on {statistics.median(shares):.0%} of frames" if runs[name][1] else
                "; model on every frame")
        note += f"; {med_core_ms[name]:.1f} core-ms/frame, {med_busy[name]:.2f} cores busy"
        res.rows.append(Row("replay", name, "box.mp4 end to end" if not name.startswith("model only")
                            else "box.mp4 frames", st, "frames/s", note))
    base = stats["naive loop"].median
    for name, (prec, gated) in runs.items():
        res.figures[f"replay_{prec}{'_gated' if gated else ''}_vs_naive"] = round(stats[name].median / base, 3)
    res.figures["replay_gated_model_share"] = round(statistics.median(shares), 3)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    ceilings = {}
    for prec in models:
        # The model's cheaper way to use the cores, so the ceiling is an upper bound.
        model_ms = min(med_core_ms[f"model only {prec}"], med_core_ms[f"model only {prec}, {streams} streams"])
        need_ms = model_ms + med_core_ms["replay, no model"]
        ceilings[prec] = cores * 1e3 / need_ms
        res.figures[f"replay_{prec}_ceiling_vs_naive"] = round(ceilings[prec] / base, 3)
    res.details["cores"] = cores
    res.details["core_ms_per_frame"] = {k: round(v, 2) for k, v in med_core_ms.items()}
    res.details["cores_busy"] = {k: round(v, 2) for k, v in med_busy.items()}
    res.details["ceiling_fps"] = {k: round(v, 1) for k, v in ceilings.items()}
    res.details["share_of_ceiling"] = {prec: round(stats[f"replay {prec}"].median / ceilings[prec], 3)
                                       for prec in models}
    return res


@contextlib.contextmanager
def _display():
    """The live window needs an X display: use $DISPLAY, else a private Xvfb."""
    import shutil
    import subprocess
    if os.environ.get("DISPLAY"):
        yield os.environ["DISPLAY"]
        return
    if not shutil.which("Xvfb"):
        yield None
        return
    proc = subprocess.Popen(["Xvfb", "-displayfd", "1", "-screen", "0", "1024x768x24", "-nolisten", "tcp"],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        os.environ["DISPLAY"] = ":" + proc.stdout.readline().strip()
        yield os.environ["DISPLAY"]
    finally:
        os.environ.pop("DISPLAY", None)
        proc.terminate()
        proc.wait(10)


def _rss_mb() -> float:
    return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


class RssSampler(threading.Thread):
    def __init__(self, every_s: float = 1.0):
        super().__init__(daemon=True)
        # Not `_stop`: threading.Thread has a private method of that name.
        self.every_s, self.samples, self._done = every_s, [], threading.Event()

    def run(self) -> None:
        while not self._done.wait(self.every_s):
            self.samples.append(_rss_mb())

    def stop(self) -> list[float]:
        self._done.set()
        self.join()
        return self.samples


def _still_video(bench: "Bench", source: Path, seconds: float) -> Path:
    """A static scene: the first frame of ``source`` held for ``seconds`` at 30 fps."""
    import cv2
    cap = cv2.VideoCapture(str(source))
    ok, frame = cap.read()
    cap.release()
    out = bench.work / "still.mp4"
    writer = cv2.VideoWriter(str(out), cv2.VideoWriter_fourcc(*"mp4v"), 30.0, (frame.shape[1], frame.shape[0]))
    for _ in range(int(seconds * 30)):
        writer.write(frame)
    writer.release()
    return out


def bench_live(bench: "Bench") -> SectionResult:
    """`live` on box.mp4 looped and paced at 30 fps; then a static scene, with motion gating."""
    from checkout_cam.modes.live import run_live
    video, res = _video_section(bench)
    if video is None:
        return res
    seconds = 15.0 if bench.quick else 60.0
    with _display() as display:
        if display is None:
            res.notes.append("skipped: no $DISPLAY and no Xvfb (apt-get install xvfb)")
            return res
        sampler = RssSampler()
        sampler.start()
        live = run_live(_cfg(bench.fp32_artifact(), video, **{"source.loop": True}), max_seconds=seconds)
        rss = sampler.stop()
        still = run_live(_cfg(bench.fp32_artifact(), _still_video(bench, video, 12.0 if bench.quick else 30.0)),
                         max_seconds=10.0 if bench.quick else 25.0)
    third = max(1, len(rss) // 3)
    rss_first, rss_last = statistics.median(rss[:third]), statistics.median(rss[-third:])
    res.rows += [
        Row("live", "box.mp4 at 30 fps", "display", Stats.of([live.display_fps]), "frames/s", f"{seconds:.0f} s"),
        Row("live", "box.mp4 at 30 fps", "inference", Stats.of([live.inference_fps]), "frames/s",
            f"model ran on {live.model_share:.0%} of frames"),
        Row("live", "box.mp4 at 30 fps", "capture to result p50", Stats.of([live.latency_p50_ms]), "ms"),
        Row("live", "box.mp4 at 30 fps", "capture to result p95", Stats.of([live.latency_p95_ms]), "ms",
            "whole run, every frame"),
        Row("live", "box.mp4 at 30 fps", "capture to result p95, model frames", Stats.of([live.model_latency_p95_ms]),
            "ms", "frames the model ran on (the rest reused a result)"),
        Row("live", "box.mp4 at 30 fps", "dropped frames", Stats.of([float(live.dropped)]), "frames",
            f"of {live.captured} captured"),
        Row("live", "box.mp4 at 30 fps", "RSS", Stats.of(rss), "MB",
            f"first third {rss_first:.0f} MB, last third {rss_last:.0f} MB"),
        Row("live", "static scene", "frames reaching the model", Stats.of([100 * still.model_share]), "%",
            f"{still.inferred} of {still.captured}, motion gating on"),
    ]
    res.figures.update(live_display_fps=round(live.display_fps, 2),
                       live_latency_p95_ms=round(live.latency_p95_ms, 1),
                       live_model_latency_p95_ms=round(live.model_latency_p95_ms, 1),
                       static_scene_model_share=round(still.model_share, 4))
    res.details.update(live=vars(live), static=vars(still), rss_mb=rss,
                       rss_growth_mb=round(rss_last - rss_first, 1))
    return res


def _serve_once(bench: "Bench", args: list[str], log: Path, settle_s: float = 3.0) -> tuple[float | None, float | None]:
    """Launch `serve` fresh; (seconds to its first result, peak RSS MB) after running ``settle_s`` more."""
    import re
    import signal
    import subprocess
    t0 = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-m", "checkout_cam", "serve", *args, "--log", str(log)],
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    first = peak = None
    try:
        for line in proc.stderr:
            if re.search(r"first result [\d.]+ s after start", line):
                first = time.monotonic() - t0
                break
        time.sleep(settle_s)  # run a little, then read the peak before stopping
        with contextlib.suppress(OSError, AttributeError):
            status = Path(f"/proc/{proc.pid}/status").read_text()
            peak = int(re.search(r"VmHWM:\s+(\d+) kB", status).group(1)) / 1024
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=30)
    return first, peak


def _camera_lane_rss(bench: "Bench", model: Path, video: Path, res: SectionResult) -> list[float]:
    """Peak RSS of `serve` reading a network camera: ffmpeg serving ``video`` in a loop as MJPEG over
    HTTP on 127.0.0.1 (one client per ffmpeg, as its -listen server takes one). A file source loads
    PyAV and a file decoder a camera lane never needs."""
    import shutil
    import socket
    import subprocess
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        res.notes.append("serve: no network-camera run (ffmpeg not installed)")
        return []
    peaks = []
    for _ in range(1 if bench.quick else 3):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            url = f"http://127.0.0.1:{s.getsockname()[1]}/cam.mjpg"
        cam = subprocess.Popen([ffmpeg, "-hide_banner", "-nostdin", "-loglevel", "error", "-re", "-stream_loop", "-1",
                                "-i", str(video), "-an", "-c:v", "mjpeg", "-q:v", "5", "-f", "mpjpeg", "-listen", "1",
                                url], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            time.sleep(0.5)   # ffmpeg's listening socket
            first, peak = _serve_once(bench, ["--model", str(model), "--source", url], bench.work / "serve-cam.jsonl")
        finally:
            cam.kill()
            cam.wait(10)
        if first is not None and peak is not None:
            peaks.append(peak)
    if not peaks:
        res.notes.append("serve: the network-camera run gave no result")
    return peaks


def bench_serve(bench: "Bench") -> SectionResult:
    """`serve` as a fresh process, one lane, int8 and fp32: launch to first result, and its peak RSS."""
    video, res = _video_section(bench)
    if video is None:
        return res
    models = {"int8": bench.int8_artifact(), "fp32": bench.fp32_artifact()}
    starts: dict[str, list[float]] = {k: [] for k in models}
    peaks: dict[str, list[float]] = {k: [] for k in models}
    for r in range(1 if bench.quick else 3):
        for prec in (list(models) if r % 2 == 0 else list(models)[::-1]):
            first, peak = _serve_once(bench, ["--model", str(models[prec]), "--source", str(video)],
                                      bench.work / "serve.jsonl")
            if first is not None:
                starts[prec].append(first)
            if peak is not None:
                peaks[prec].append(peak)
    if not starts["int8"] and not starts["fp32"]:
        res.notes.append("serve never reported a first result")
        return res
    camera = _camera_lane_rss(bench, models["int8"], video, res)
    for prec in models:
        if starts[prec]:
            res.rows.append(Row("serve", f"{prec}, box.mp4, one lane", "launch to first result", Stats.of(starts[prec]),
                                "s", "fresh process: imports, model load, first frame, first inference"))
        if peaks[prec]:
            res.rows.append(Row("serve", f"{prec}, box.mp4, one lane", "peak RSS", Stats.of(peaks[prec]), "MB"))
    if starts["int8"]:
        res.figures["first_result_s"] = round(statistics.median(starts["int8"]), 2)
    if peaks["int8"]:
        res.figures["serve_rss_one_lane_mb"] = round(statistics.median(peaks["int8"]), 1)
    if peaks["fp32"]:
        res.figures["peak_rss_mb"] = round(statistics.median(peaks["fp32"]), 1)
    if camera:
        res.rows.append(Row("serve", "int8, network camera (MJPEG over HTTP), one lane", "peak RSS",
                            Stats.of(camera), "MB", "ffmpeg serving box.mp4 on 127.0.0.1: what a camera lane holds"))
        res.figures["serve_rss_camera_lane_mb"] = round(statistics.median(camera), 1)
    res.details["first_result_s"] = {k: [round(v, 2) for v in xs] for k, xs in starts.items()}
    res.details["torch_build"] = torch.__version__
    # A CUDA build of torch maps its CUDA libraries into every process that imports it (about 280 MB
    # of RSS here, unused on a CPU box): the CPU-only wheel is what a lane box should install.
    res.details["cuda_libraries_loaded"] = "libtorch_cuda" in Path("/proc/self/maps").read_text()
    return res
