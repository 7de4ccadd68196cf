"""What every bench section shares: the checkout's root (put first on sys.path, so the checkout's own
package is the one measured), the headline figure keys and their definitions, Stats (a median with its
spread) and interleaved timing, the Row and SectionResult a section returns, the Bench context (arguments,
work folder, cached models and images) and small torch helpers (thread count, a timed call, FLOPs,
cosine agreement)."""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))  # the checkout's own package, not an older installed one

from checkout_cam.images import read_image  # noqa: E402
from checkout_cam.model.artifact import ArtifactMeta, save_artifact  # noqa: E402
from checkout_cam.model.quantize import save_int8_artifact  # noqa: E402
from checkout_cam.model.weights import random_weights  # noqa: E402
from checkout_cam.preprocess import Preprocessor  # noqa: E402

import bench_http  # noqa: E402

DEFAULT_DATA = ROOT.parent / "shared" / "data"

# Headline keys, in print order. A key whose section did not run (or was skipped) stays null in the JSON.
FIGURE_KEYS = [
    "cpu_isa", "model_latency_ms", "fp32_vs_eager", "fp32_vs_onnxruntime_fp32", "int8_vs_eager", "int8_vs_best_peer_int8",
    "int8_top1_agreement", "int8_accuracy_drop_pts", "sgemm_gflops",
    "replay_fp32_vs_naive", "replay_int8_vs_naive", "replay_fp32_gated_vs_naive",
    "replay_int8_gated_vs_naive", "replay_gated_model_share", "replay_fp32_ceiling_vs_naive",
    "replay_int8_ceiling_vs_naive", "live_display_fps", "live_latency_p95_ms",
    "live_model_latency_p95_ms",
    "static_scene_model_share", "peak_rss_mb", "first_result_s", "serve_rss_one_lane_mb", "serve_rss_camera_lane_mb",
    "serve_rss_per_extra_lane_mb", "lanes_max_int8_gated", "lanes_max_int8_every_frame", "lanes_max_fp32_gated",
    *bench_http.FIGURE_KEYS,
]

DEFINITIONS = {
    "cpu_isa": "the CPU's speed-relevant instruction sets (/proc/cpuinfo flags: AVX2, AVX-512, VNNI, BF16, "
               "AMX): read every other figure with these in mind",
    "model_latency_ms": "batch-1 latency of our default (fp32) artifact as the classifier runs it, ms",
    "fp32_vs_eager": "torchvision eager fp32 batch-1 latency / our fp32 artifact's (a speed-up)",
    "int8_vs_eager": "torchvision eager fp32 batch-1 latency / our int8 artifact's (a speed-up)",
    "fp32_vs_onnxruntime_fp32": "our fp32 artifact's batch-1 latency / ONNX Runtime fp32's on the same weights "
                                "(1 = as fast)",
    "int8_vs_best_peer_int8": "our int8 batch-1 latency / the fastest peer int8 runtime's (1 = as fast)",
    "int8_top1_agreement": "share of grocery val photos where int8 and fp32 give the same top-1",
    "int8_accuracy_drop_pts": "fp32 minus int8 top-1 accuracy on grocery val, percentage points",
    "sgemm_gflops": "median rate of a 2048x2048 fp32 torch.mm, GFLOP/s",
    "replay_fp32_vs_naive": "frames/s of `replay` (fp32, annotated video + event log) / the naive loop's, box.mp4",
    "replay_int8_vs_naive": "frames/s of `replay` (int8, annotated video + event log) / the naive loop's, box.mp4",
    "replay_fp32_gated_vs_naive": "the same with `replay --gating` (motion gating: unchanged frames reuse "
                                  "the last result; item events identical on box.mp4 and cup.mp4)",
    "replay_int8_gated_vs_naive": "the same with `replay --gating`, int8",
    "replay_gated_model_share": "share of box.mp4 frames that reached the model in `replay --gating`",
    "replay_fp32_ceiling_vs_naive": "the most every-frame `replay` (fp32) could reach here, over the naive "
                                    "loop: cores / (CPU ms per frame of the model alone at replay's batch "
                                    "size, the cheaper of one multi-thread stream and one-thread streams "
                                    "side by side, + of replay without the model), i.e. with its work "
                                    "packing the cores perfectly",
    "replay_int8_ceiling_vs_naive": "the same for int8",
    "live_display_fps": "frames shown per second by `live` on box.mp4 looped and paced at 30 fps",
    "live_latency_p95_ms": "95th percentile of capture-to-result latency in that live run, ms",
    "live_model_latency_p95_ms": "the same over frames that reached the model only (gating reuses results "
                                 "for the rest, which are near-instant), ms",
    "static_scene_model_share": "share of frames of a still scene at 30 fps that reached the model (gating on)",
    "peak_rss_mb": "peak resident memory (VmHWM) of a one-lane `serve` process on the fp32 model, MB",
    "first_result_s": "seconds from launching `serve` (int8 model) to its first result (imports, model, frame, "
                      "inference)",
    "serve_rss_one_lane_mb": "peak resident memory (VmHWM) of a one-lane `serve` process on the int8 model, MB",
    "serve_rss_camera_lane_mb": "the same with a network camera (ffmpeg serving box.mp4 as MJPEG over HTTP on "
                                "127.0.0.1) instead of the file: no PyAV, no file decoder; null without ffmpeg",
    "serve_rss_per_extra_lane_mb": "peak RSS of `serve` with N lanes minus one lane's, per extra lane (int8, "
                                   "the lanes section's largest N), MB",
    "lanes_max_int8_gated": "the most paced 30 fps lanes one `serve` runs on the int8 model with motion gating "
                            "while every lane keeps capture-to-result p95 < 150 ms and >= 10 model results/s "
                            "while its scene moves (of N = 1, 2, 4, 6, 8)",
    "lanes_max_int8_every_frame": "the same with the model on every frame (gating off), int8",
    "lanes_max_fp32_gated": "the same on the fp32 model with motion gating",
    **bench_http.DEFINITIONS,
}

# ---------------------------------------------------------------- statistics and timing

@dataclass(frozen=True)
class Stats:
    median: float
    q1: float
    q3: float
    lo: float
    hi: float
    n: int

    @classmethod
    def of(cls, samples: list[float]) -> "Stats":
        xs = sorted(samples)
        if len(xs) >= 2:
            q1, _, q3 = statistics.quantiles(xs, n=4, method="inclusive")
        else:
            q1 = q3 = xs[0]
        return cls(statistics.median(xs), q1, q3, xs[0], xs[-1], len(xs))

    def scaled(self, f: Callable[[float], float]) -> "Stats":
        """The same distribution through a monotonic map (ms -> images/s flips the order)."""
        vals = [f(v) for v in (self.median, self.q1, self.q3, self.lo, self.hi)]
        lo_q, hi_q = sorted(vals[1:3])
        lo, hi = sorted(vals[3:5])
        return Stats(vals[0], lo_q, hi_q, lo, hi, self.n)

    def to_dict(self) -> dict:
        return {"median": round(self.median, 4), "iqr": [round(self.q1, 4), round(self.q3, 4)],
                "min": round(self.lo, 4), "max": round(self.hi, 4), "n": self.n}


def interleaved(calls: dict[str, Callable[[], object]], rounds: int, per_round: int,
                warmup: int = 2) -> dict[str, Stats]:
    """Milliseconds per call for each variant, timed round-robin in rotating order."""
    for fn in calls.values():
        for _ in range(warmup):
            fn()
    samples: dict[str, list[float]] = {name: [] for name in calls}
    names = list(calls)
    for r in range(rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:
            fn = calls[name]
            for _ in range(per_round):
                t0 = time.perf_counter()
                fn()
                samples[name].append((time.perf_counter() - t0) * 1e3)
    return {name: Stats.of(xs) for name, xs in samples.items()}


# ---------------------------------------------------------------- the run's context and results

@dataclass
class Row:
    section: str
    variant: str
    metric: str
    stats: Stats | None
    unit: str
    note: str = ""

    def to_dict(self) -> dict:
        return {"variant": self.variant, "metric": self.metric, "unit": self.unit, "note": self.note,
                **(self.stats.to_dict() if self.stats else {})}


@dataclass
class SectionResult:
    figures: dict = field(default_factory=dict)
    rows: list[Row] = field(default_factory=list)
    details: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


@dataclass
class Bench:
    args: argparse.Namespace
    work: Path
    threads: int
    cache: dict = field(default_factory=dict)   # things several sections use (models, images)

    @property
    def quick(self) -> bool:
        return self.args.quick

    def reps(self, full: tuple[int, int], quick: tuple[int, int]) -> tuple[int, int]:
        """(rounds, calls per round)."""
        return quick if self.quick else full

    @property
    def grocery(self) -> Path | None:
        g = Path(self.args.data)
        return g if (g / "train.txt").exists() else None

    def images(self, n: int) -> list[np.ndarray]:
        """Real val photos when the data is there, else seeded noise of the same size."""
        key = ("images", n)
        if key not in self.cache:
            if self.grocery:
                lines = (self.grocery / "val.txt").read_text().splitlines()[::7][:n]
                self.cache[key] = [read_image(self.grocery / ln.split(",")[0].strip()) for ln in lines]
            else:
                rng = np.random.default_rng(0)
                self.cache[key] = [rng.integers(0, 256, (348, 348, 3), dtype=np.uint8) for _ in range(n)]
        return self.cache[key]

    def batch(self, n: int) -> torch.Tensor:
        return Preprocessor()(self.images(n))

    def eager(self) -> torch.nn.Module:
        if "eager" not in self.cache:
            self.cache["eager"] = random_weights(seed=0).model.eval()
        return self.cache["eager"]

    def fp32_artifact(self) -> Path:
        if "fp32" not in self.cache:
            w = random_weights(seed=0)
            meta = ArtifactMeta(name="bench-random", arch="resnet18", labels=w.labels,
                                weights_source=w.source, weights_sha256=None, trained=False)
            self.cache["fp32"] = save_artifact(w.model, meta, self.work / "fp32.pt")
        return self.cache["fp32"]

    def calibration_source(self) -> Path:
        """grocery/train.txt (never val: val judges accuracy), else a folder of noise images."""
        if self.grocery:
            return self.grocery / "train.txt"
        folder = self.work / "noise-calibration"
        if not folder.exists():
            import cv2
            folder.mkdir()
            for i, img in enumerate(self.images(16)):
                cv2.imwrite(str(folder / f"{i}.png"), img)
        return folder

    def calibration_count(self) -> int:
        return 32 if self.quick else 200

    def int8_artifact(self) -> Path:
        if "int8" not in self.cache:
            w = random_weights(seed=0)
            meta = ArtifactMeta(name="bench-random-int8", arch="resnet18", labels=w.labels,
                                weights_source=w.source, weights_sha256=None, trained=False)
            t0 = time.monotonic()
            self.cache["int8"] = save_int8_artifact(w.model, meta, self.work / "int8.pt",
                                                    self.calibration_source(),
                                                    max_images=self.calibration_count(), progress=False)
            self.cache["int8_export_s"] = time.monotonic() - t0
        return self.cache["int8"]

    def calibration_batches(self) -> list[np.ndarray]:
        """The same images our int8 calibrates on, for the peers' quantizers."""
        if "cal_np" not in self.cache:
            from checkout_cam.model.quantize import CalibrationBatches, find_calibration_images
            cal = find_calibration_images(self.calibration_source(), self.calibration_count())
            self.cache["cal_np"] = [b.numpy() for b in CalibrationBatches(cal, Preprocessor(), 8, False)]
        return self.cache["cal_np"]


@contextlib.contextmanager
def torch_threads(n: int):
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def torch_call(module, x: torch.Tensor) -> Callable[[], object]:
    def call():
        with torch.inference_mode():
            return module(x)
    return call


def model_flops(model: torch.nn.Module, size: int = 224) -> float:
    """Floating-point operations of one image, a multiply-add counted as 2 (torch's FlopCounterMode)."""
    from torch.utils.flop_counter import FlopCounterMode
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(torch.zeros(1, 3, size, size))
    return float(counter.get_total_flops())


def cosine(a, b) -> float:
    a = torch.as_tensor(np.asarray(a)).float().flatten(1)
    b = torch.as_tensor(np.asarray(b)).float().flatten(1)
    return float(torch.nn.functional.cosine_similarity(a, b).min())
