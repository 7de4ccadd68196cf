#!/usr/bin/env python3
"""One performance run on this machine: prints a table, writes JSON (--json FILE).

    PYTHONPATH=. python3 scripts/bench.py --quick --json bench.json
    PYTHONPATH=. python3 scripts/bench.py --model grocery.pt --int8-model grocery-int8.pt

The run is a list of sections (SECTIONS, in order); each takes the shared
Bench context and returns a SectionResult: headline figures for the top of
the JSON, table rows, details and notes (why something was skipped). Add a
section by writing ``bench_<name>(bench) -> SectionResult`` and listing it.

Every time is a median with its spread (interquartile range and min/max).
Variants that are compared are timed interleaved, round by round in rotating
order, so load from other processes hits them alike; compare ratios from one
run, not absolute figures across runs. Speed figures use seeded random
weights (weights do not change speed); accuracy figures need a trained model
(--model/--int8-model) and are skipped with the reason otherwise.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import platform
import resource
import statistics
import sys
import tempfile
import threading
import time
import traceback
import warnings
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the checkout's own package, not an older installed one

from checkout_cam.cpu import cpu_info  # noqa: E402
from checkout_cam.images import read_image  # noqa: E402
from checkout_cam.model.artifact import ArtifactMeta, quiet_jit_deprecation, read_meta, save_artifact  # noqa: E402
from checkout_cam.model.classifier import BACKENDS, Classifier, open_classifier  # noqa: E402
from checkout_cam.model.quantize import save_int8_artifact  # noqa: E402
from checkout_cam.model.weights import random_weights  # noqa: E402
from checkout_cam.preprocess import Preprocessor  # noqa: E402

import bench_http  # noqa: E402
import bench_peers as peers  # noqa: E402

logger = logging.getLogger("bench")

DEFAULT_DATA = ROOT.parent / "shared" / "data"

# Headline keys, in print order. Keys no section fills yet stay null in the JSON
# (the pipeline's replay/live/serve sections will add theirs).
FIGURE_KEYS = [
    "cpu_isa", "model_latency_ms", "fp32_vs_eager", "fp32_vs_onnxruntime_fp32", "int8_vs_eager", "int8_vs_best_peer_int8",
    "int8_top1_agreement", "int8_accuracy_drop_pts", "sgemm_gflops",
    "replay_fp32_vs_naive", "replay_int8_vs_naive", "replay_fp32_gated_vs_naive",
    "replay_int8_gated_vs_naive", "replay_gated_model_share", "replay_fp32_ceiling_vs_naive",
    "replay_int8_ceiling_vs_naive", "live_display_fps", "live_latency_p95_ms",
    "live_model_latency_p95_ms",
    "static_scene_model_share", "peak_rss_mb", "first_result_s", "serve_rss_one_lane_mb",
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
    "serve_rss_per_extra_lane_mb": "peak RSS of `serve` with N lanes minus one lane's, per extra lane (int8, "
                                   "the lanes section's largest N), MB",
    "lanes_max_int8_gated": "the most paced 30 fps lanes one `serve` runs on the int8 model with motion gating "
                            "while every lane keeps capture-to-result p95 < 150 ms and >= 10 model results/s "
                            "while its scene moves (of N = 1, 2, 4, 6)",
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


# ---------------------------------------------------------------- sections

def bench_sgemm(bench: Bench) -> SectionResult:
    """The machine's fp32 matrix-multiply ceiling, to put model GFLOP/s in proportion."""
    n = 2048
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(n, n, generator=g), torch.randn(n, n, generator=g)
    out = torch.empty(n, n)
    rounds, per = bench.reps((10, 2), (4, 1))
    ms = interleaved({"sgemm": lambda: torch.mm(a, b, out=out)}, rounds, per, warmup=1)["sgemm"]
    flops = 2.0 * n ** 3
    gflops = ms.scaled(lambda t: flops / (t * 1e-3) / 1e9)
    bench.cache["sgemm_gflops"] = gflops.median
    return SectionResult(
        figures={"sgemm_gflops": round(gflops.median, 1)},
        rows=[Row("sgemm", f"torch.mm {n}x{n} fp32", "time", ms, "ms"),
              Row("sgemm", f"torch.mm {n}x{n} fp32", "rate", gflops, "GFLOP/s")],
        details={"n": n, "flops": flops, "threads": torch.get_num_threads()})


def _peer_builders(bench: Bench, onnx_path: Path) -> dict[str, Callable[[int], peers.Runner]]:
    """name -> (batch size -> runner), for every peer that builds here; failures become notes."""
    out: dict[str, Callable[[int], peers.Runner]] = {}
    notes: list[str] = bench.cache.setdefault("peer_notes", [])
    t = bench.threads
    try:
        runner = peers.ort_runner(onnx_path, t)
        out["onnxruntime fp32"] = lambda b, r=runner: r
        int8_path = peers.ort_quantize(onnx_path, bench.work / "r18-int8.onnx", bench.calibration_batches())
        runner8 = peers.ort_runner(int8_path, t)
        out["onnxruntime int8"] = lambda b, r=runner8: r
    except peers.PeerUnavailable as exc:
        notes.append(f"onnxruntime: {exc}")
    except Exception as exc:  # a peer failing must not sink the bench; say exactly what failed
        notes.append(f"onnxruntime: failed: {type(exc).__name__}: {str(exc)[:300]}")
    try:
        fp32 = peers.ov_model(onnx_path)
        out["openvino fp32"] = lambda b, m=fp32: peers.ov_runner(m, t, b)
        try:
            int8 = peers.ov_quantize(fp32, bench.calibration_batches())
            out["openvino int8"] = lambda b, m=int8: peers.ov_runner(m, t, b)
        except peers.PeerUnavailable as exc:
            notes.append(f"openvino int8: {exc}")
    except peers.PeerUnavailable as exc:
        notes.append(f"openvino: {exc}")
    except Exception as exc:
        notes.append(f"openvino: failed: {type(exc).__name__}: {str(exc)[:300]}")
    return out


def bench_model(bench: Bench) -> SectionResult:
    """Model only: batch-1 latency and batch-8 throughput, ours against eager and the peers."""
    res = SectionResult()
    eager = bench.eager()
    fp32 = open_classifier(bench.fp32_artifact(), threads=bench.threads)
    int8 = open_classifier(bench.int8_artifact(), threads=bench.threads)
    res.details["int8_export_s"] = round(bench.cache["int8_export_s"], 1)
    res.details["calibration"] = int8.meta.extra.get("calibration")
    ours = {"torchvision eager fp32": eager, "ours fp32 (.pt)": fp32.logits, "ours int8 (.pt)": int8.logits}

    peer_builders: dict = {}
    try:
        onnx_path = peers.export_onnx(eager, bench.work / "r18.onnx")
        t0 = time.monotonic()
        peer_builders = _peer_builders(bench, onnx_path)
        res.details["peer_build_s"] = round(time.monotonic() - t0, 1)
    except peers.PeerUnavailable as exc:
        res.notes.append(f"peers skipped: {exc}")
    except Exception as exc:
        res.notes.append(f"peers skipped: ONNX export failed: {type(exc).__name__}: {str(exc)[:300]}")
    res.notes.extend(bench.cache.get("peer_notes", []))

    flops = model_flops(eager)
    peak = bench.cache.get("sgemm_gflops")
    res.details["model_gflop_per_image"] = round(flops / 1e9, 3)
    res.details["flop_convention"] = "multiply-add = 2 FLOP (conv + linear, torch FlopCounterMode)"

    per_batch: dict[int, dict[str, Stats]] = {}
    agreement: dict[str, float] = {}
    for batch, reps in ((1, bench.reps((20, 5), (6, 3))), (8, bench.reps((12, 2), (4, 1)))):
        x = bench.batch(batch)
        xn = x.numpy()
        calls = {name: torch_call(fn, x) for name, fn in ours.items()}
        with torch.inference_mode():
            reference = eager(x)
        for name, build in peer_builders.items():
            try:
                run = build(batch)
                if batch == 8:
                    agreement[name] = cosine(run(xn), reference)
                calls[name] = lambda r=run: r(xn)
            except Exception as exc:
                res.notes.append(f"{name} batch {batch}: failed: {type(exc).__name__}: {str(exc)[:200]}")
        if batch == 8:
            for name, fn in ours.items():
                with torch.inference_mode():
                    agreement[name] = cosine(fn(x), reference)
        per_batch[batch] = interleaved(calls, *reps)

    for name, st in per_batch[1].items():
        gf = flops / (st.median * 1e-3) / 1e9
        note = f"{gf:.1f} GFLOP/s" + (f", {100 * gf / peak:.0f}% of sgemm" if peak else "")
        res.rows.append(Row("model", name, "batch 1 latency", st, "ms", note))
    for name, st in per_batch.get(8, {}).items():
        res.rows.append(Row("model", name, "batch 8 throughput", st.scaled(lambda t: 8000.0 / t), "img/s",
                            f"logit cosine vs eager {agreement.get(name, float('nan')):.4f}"))

    lat = {name: st.median for name, st in per_batch[1].items()}
    e, f, q = lat["torchvision eager fp32"], lat["ours fp32 (.pt)"], lat["ours int8 (.pt)"]
    res.figures.update(model_latency_ms=round(f, 2), fp32_vs_eager=round(e / f, 3), int8_vs_eager=round(e / q, 3))
    if "onnxruntime fp32" in lat:
        res.figures["fp32_vs_onnxruntime_fp32"] = round(f / lat["onnxruntime fp32"], 3)
    res.details["ours_fp32_runtime"] = getattr(fp32, "runtime", None)
    peer_int8 = {n: v for n, v in lat.items() if n.endswith("int8") and not n.startswith("ours")}
    if peer_int8:
        best = min(peer_int8, key=peer_int8.get)
        res.figures["int8_vs_best_peer_int8"] = round(q / peer_int8[best], 3)
        res.details["best_peer_int8"] = best
    res.details["batch1_ratio_vs_eager"] = {n: round(e / v, 3) for n, v in lat.items()}
    res.details["logit_cosine_vs_eager_min"] = {n: round(v, 5) for n, v in agreement.items()}
    return res


class Bf16(torch.nn.Module):
    """fp32 in and out, bf16 channels_last inside."""

    def __init__(self, m):
        super().__init__()
        self.m = m

    def forward(self, x):
        return self.m(x.to(torch.bfloat16).contiguous(memory_format=torch.channels_last)).float()


def _one_thread_cpu_ms(variants: dict[str, Callable], x: torch.Tensor, bench: Bench) -> dict[str, float]:
    """CPU time (the whole process's) of one batch-1 call on one thread: what the kernels cost,
    without the thread-pool wake-ups and the other processes that make wall time on a shared
    machine noisy."""
    out = {}
    rounds, per = bench.reps((3, 5), (2, 3))
    samples: dict[str, list[float]] = {n: [] for n in variants}
    with torch_threads(1), torch.inference_mode():
        for r in range(rounds):
            for name, fn in variants.items():
                for _ in range(per):
                    c = time.process_time()
                    fn(x)
                    samples[name].append((time.process_time() - c) * 1e3)
    for name, xs in samples.items():
        out[name] = round(statistics.median(xs), 2)
    return out


def bench_fp32_variants(bench: Bench) -> SectionResult:
    """What to bake into the fp32 artifact and what to do after loading it."""
    res = SectionResult()
    eager = bench.eager()
    x1, x8 = bench.batch(1), bench.batch(8)
    with torch.inference_mode():
        ref = eager(x8)

    class ChannelsLast(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, x):
            return self.m(x.contiguous(memory_format=torch.channels_last))

    import copy
    eager_cl = copy.deepcopy(eager).to(memory_format=torch.channels_last)
    variants: dict[str, Callable] = {"eager": eager, "eager channels_last": eager_cl}
    with quiet_jit_deprecation(), torch.no_grad():
        for tag, model in (("", eager), (" channels_last", ChannelsLast(eager_cl).eval())):
            path = bench.work / f"variant{tag.strip()}.pt"
            torch.jit.save(torch.jit.freeze(torch.jit.trace(model, x1)), str(path))
            variants["frozen" + tag] = torch.jit.load(str(path)).eval()
            loaded = torch.jit.load(str(path)).eval()
            variants["frozen" + tag + " + optimize_for_inference after load"] = \
                torch.jit.optimize_for_inference(loaded)
        # The report: a module saved *after* optimize_for_inference does not load back.
        path = bench.work / "optimized-then-saved.pt"
        try:
            torch.jit.save(torch.jit.optimize_for_inference(torch.jit.freeze(torch.jit.trace(eager, x1))),
                           str(path))
            torch.jit.load(str(path))(x1)
            res.details["optimize_then_save_loads"] = True
        except Exception as exc:
            res.details["optimize_then_save_loads"] = False
            res.details["optimize_then_save_error"] = str(exc).strip().splitlines()[0][:200]
    # What the classifier runs now: the artifact compiled with oneDNN Graph (batch-1 plan).
    variants["ours as loaded (oneDNN Graph)"] = open_classifier(bench.fp32_artifact()).logits
    if cpu_info().bf16:
        # bf16 weights and activations (AMX / AVX512_BF16 kernels): a numerics change, so its
        # error against fp32 is printed beside its speed; grocery agreement is in int8_accuracy.
        bf = copy.deepcopy(eager).to(torch.bfloat16).to(memory_format=torch.channels_last)
        with quiet_jit_deprecation(), torch.no_grad():
            variants["bf16 channels_last frozen"] = torch.jit.freeze(torch.jit.trace(Bf16(bf).eval(), x1))
    try:
        onnx_path = peers.export_onnx(eager, bench.work / "variants.onnx")
        ort = peers.ort_runner(onnx_path, bench.threads)
        variants["onnxruntime fp32"] = lambda x: torch.from_numpy(ort(x.numpy()))
        ort1 = peers.ort_runner(onnx_path, 1)   # its thread count is fixed when the session is made
    except Exception as exc:
        res.notes.append(f"onnxruntime not in the rotation: {type(exc).__name__}: {str(exc)[:200]}")
    err = {}
    for name, m in variants.items():
        with torch.inference_mode():
            err[name] = float((m(x8) - ref).abs().max())
    stats = interleaved({n: torch_call(m, x1) for n, m in variants.items()}, *bench.reps((20, 5), (6, 3)))
    if "onnxruntime fp32" in stats:
        ort_ms = stats["onnxruntime fp32"].median
        res.details["ratio_vs_onnxruntime"] = {n: round(s.median / ort_ms, 3) for n, s in stats.items()}
    one_thread = dict(variants)
    if "onnxruntime fp32" in variants:
        one_thread["onnxruntime fp32"] = lambda x: ort1(x.numpy())
    with torch_threads(1):   # a oneDNN Graph plan keeps the thread count it was compiled with
        one_thread["ours as loaded (oneDNN Graph)"] = open_classifier(bench.fp32_artifact()).logits
    cpu_ms = res.details["cpu_ms_1_thread"] = _one_thread_cpu_ms(one_thread, x1, bench)
    base = stats["eager"].median
    for name, st in stats.items():
        res.rows.append(Row("fp32_variants", name, "batch 1 latency", st, "ms",
                            f"{base / st.median:.2f}x eager, max|diff| {err[name]:.1e}, "
                            f"{cpu_ms[name]:.1f} CPU-ms on 1 thread"))
    res.details["ratio_vs_eager"] = {n: round(base / s.median, 3) for n, s in stats.items()}
    res.details["max_abs_diff_vs_eager"] = err
    return res


class CaptureLoad:
    """A stand-in capture thread: decodes box.mp4 at its own 30 fps, as the live pipeline's would."""

    def __init__(self, video: Path):
        self.video = video
        self.stop = threading.Event()
        self.frames = 0
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        import cv2
        cap = cv2.VideoCapture(str(self.video))
        period = 1.0 / (cap.get(cv2.CAP_PROP_FPS) or 30.0)
        next_t = time.monotonic()
        while not self.stop.is_set():
            ok, frame = cap.read()
            if not ok:
                cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
                continue
            cv2.resize(frame, (320, 240))   # the display's overlay-sized copy
            self.frames += 1
            next_t += period
            time.sleep(max(0.0, next_t - time.monotonic()))
        cap.release()

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join(5)


def bench_threads(bench: Bench) -> SectionResult:
    """torch intra-op threads 1 vs all cores, idle and beside a 30 fps capture thread."""
    res = SectionResult()
    cores = os.cpu_count() or 1
    counts = sorted({1, cores})
    models = {"eager": bench.eager(),
              "ours fp32": open_classifier(bench.fp32_artifact()).logits,
              "ours int8": open_classifier(bench.int8_artifact()).logits}
    x = bench.batch(1)
    video = Path(bench.args.data).parent / "videos" / "box.mp4"
    loads = [("idle", contextlib.nullcontext)]
    if video.exists():
        loads.append(("with 30 fps capture", lambda: CaptureLoad(video)))
    else:
        res.notes.append(f"capture-load runs skipped: {video} not found")
    rounds, per = bench.reps((10, 5), (4, 3))
    # One thread count at a time (switching the pool per call would be measured too), alternated per round.
    for load_name, make_load in loads:
        samples: dict[tuple[str, int], list[float]] = {}
        with make_load():
            for r in range(rounds):
                for n in (counts if r % 2 == 0 else counts[::-1]):
                    with torch_threads(n):
                        st = interleaved({m: torch_call(fn, x) for m, fn in models.items()}, 1, per, warmup=1)
                    for m, s in st.items():
                        samples.setdefault((m, n), []).append(s.median)
        for (m, n), xs in sorted(samples.items()):
            res.rows.append(Row("threads", f"{m}, {n} thread(s)", f"batch 1 latency, {load_name}",
                                Stats.of(xs), "ms", "medians of rounds"))
            res.details.setdefault(load_name, {})[f"{m} threads={n}"] = round(statistics.median(xs), 2)
    res.details["interop_threads"] = (f"{torch.get_num_interop_threads()} (unused: a traced ResNet has no "
                                      f"fork/wait parallelism)")
    return res


def _accuracy_data(bench: Bench, labels: list[str]) -> tuple[list[Path], list[int]] | str:
    g = bench.grocery
    if g is None:
        return f"no grocery data at {bench.args.data} (give --data)"
    import csv
    with open(g / "classes.csv", newline="") as f:
        id_to_name = {int(r[1]): r[0].strip() for r in list(csv.reader(f))[1:] if len(r) > 1}
    index = {name: i for i, name in enumerate(labels)}
    paths, targets = [], []
    for line in (g / "val.txt").read_text().splitlines():
        if not line.strip():
            continue
        rel, cid = [s.strip() for s in line.split(",")[:2]]
        name = id_to_name.get(int(cid))
        if name not in index:
            return f"the model's labels do not include grocery class {name!r}: not a grocery model"
        paths.append(g / rel)
        targets.append(index[name])
    return paths, targets


def bench_int8_accuracy(bench: Bench) -> SectionResult:
    """int8 against fp32 on grocery val with a fine-tuned model: top-1 agreement and accuracy."""
    res = SectionResult()
    if not (bench.args.model and bench.args.int8_model):
        res.notes.append("skipped: needs a fine-tuned grocery model as --model FP32.pt and --int8-model "
                         "INT8.pt (the same weights quantized); a random-weight model says nothing about "
                         "accuracy")
        return res
    fp32, int8 = open_classifier(bench.args.model), open_classifier(bench.args.int8_model)
    if int8.meta.precision != "int8" or fp32.meta.precision != "fp32":
        res.notes.append(f"skipped: --model is {fp32.meta.precision} and --int8-model is {int8.meta.precision}")
        return res
    if fp32.labels != int8.labels or not fp32.trained:
        res.notes.append("skipped: the two models must be the same trained model (same labels, trained=true)")
        return res
    data = _accuracy_data(bench, fp32.labels)
    if isinstance(data, str):
        res.notes.append(f"skipped: {data}")
        return res
    paths, targets = data
    probs = {"fp32": [], "int8": []}
    for i in range(0, len(paths), 16):
        images = [read_image(p) for p in paths[i:i + 16]]
        for name, clf in (("fp32", fp32), ("int8", int8)):
            probs[name].append(clf.probabilities(images))
    p32, p8 = torch.cat(probs["fp32"]), torch.cat(probs["int8"])
    t = np.array(targets)
    a, b = p32.argmax(1).numpy(), p8.argmax(1).numpy()
    acc32, acc8, agree = float((a == t).mean()), float((b == t).mean()), float((a == b).mean())
    # How close to a tie fp32 was where the two disagree: flips of near-ties are what
    # quantization noise does; flips of confident answers would mean a broken calibration.
    top2 = p32.topk(2, dim=1).values
    margin = (top2[:, 0] - top2[:, 1]).numpy()
    flips = a != b
    res.figures.update(int8_top1_agreement=round(agree, 4), int8_accuracy_drop_pts=round(100 * (acc32 - acc8), 2))
    res.details.update(n_images=len(paths), fp32_top1=acc32, int8_top1=acc8, fp32_model=str(bench.args.model),
                       int8_model=str(bench.args.int8_model),
                       fp32_margin_median=round(float(np.median(margin)), 4),
                       flipped_fp32_margin_max=round(float(margin[flips].max()), 4) if flips.any() else None,
                       # The noise floor: int8 moves each photo's probabilities by about this much, so
                       # photos whose fp32 margin is below it are coin flips whatever the recipe.
                       int8_prob_shift_mean=round(float((p8 - p32).abs().max(1).values.mean()), 4),
                       fp32_margin_below={str(m): int((margin < m).sum()) for m in (0.005, 0.01, 0.03)},
                       calibration=int8.meta.extra.get("calibration"))
    res.rows.append(Row("int8_accuracy", "fp32", "val top-1", Stats.of([100 * acc32]), "%", f"{len(paths)} images"))
    res.rows.append(Row("int8_accuracy", "int8", "val top-1", Stats.of([100 * acc8]), "%",
                        f"agreement with fp32 {100 * agree:.1f}%; flips at fp32 margin <= "
                        f"{res.details['flipped_fp32_margin_max']} (median margin {res.details['fp32_margin_median']})"))
    return res


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
        s = run_replay(_cfg(path, video), out=bench.work / "replay.mp4", log=bench.work / "replay.jsonl",
                       progress=False, gating=gated)
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
    res.details["first_result_s"] = {k: [round(v, 2) for v in xs] for k, xs in starts.items()}
    res.details["torch_build"] = torch.__version__
    # A CUDA build of torch maps its CUDA libraries into every process that imports it (about 280 MB
    # of RSS here, unused on a CPU box): the CPU-only wheel is what a lane box should install.
    res.details["cuda_libraries_loaded"] = "libtorch_cuda" in Path("/proc/self/maps").read_text()
    return res


def bench_http_section(bench: "Bench") -> SectionResult:
    """/predict under 1/4/16 clients vs the source material's Flask loop; the lane under HTTP load
    (scripts/bench_http.py)."""
    return bench_http.run(bench, sys.modules[__name__])


def bench_mqtt_outbox(bench: "Bench") -> SectionResult:
    """What the MQTT sink adds to closing an item event: the `end` envelope's JSON and its SQLite commit
    (scripts/mqtt_load.py measures the same with 50 lanes and a live broker)."""
    from checkout_cam.fleet.connection import BrokerSettings
    from checkout_cam.fleet.publisher import MqttPublisher
    from checkout_cam.schema import ItemRecord, RunIdentity
    res = SectionResult()
    identity = RunIdentity("bench")
    top = [{"index": i, "label": f"product {i}", "prob": p} for i, p in ((12, 0.71), (40, 0.2), (3, 0.05))]
    # Not started: no broker, no network; the commit is all the inference thread pays.
    pub = MqttPublisher(BrokerSettings(host="127.0.0.1"), lane_id="bench", state_dir=str(bench.work / "mqtt"),
                        record_of=lambda e: e, review_images=False)
    n = 300 if bench.quick else 2000
    for seq in range(1, n + 1):
        record = ItemRecord(id=identity.event_id(seq), seq=seq, lane_id="bench", run_id=identity.run_id,
                            label="product 12", index=12, confidence=0.71, top=top, review=True,
                            review_reasons=["low_margin"], frame_start=seq, frame_end=seq + 40,
                            t_start="2026-12-01T15:00:00.000+00:00", t_end="2026-12-01T15:00:01.300+00:00",
                            results=40, source="rtsp://camera", model={"name": "m", "sha256": "ab" * 32,
                                                                      "trained": True},
                            policy={"min_confidence": 0.6}, closed_by="empty")
        pub.publish_envelope("end", record, timed=True)
        if seq % 100 == 0:   # the drain thread acknowledges as the broker would
            pub.outbox.ack([m.row for m in pub.outbox.pending(limit=100)])
    samples = list(pub.write_ms._values)
    pub.outbox.close()
    res.rows.append(Row("mqtt outbox", "SQLite WAL, synchronous=NORMAL", "write on closing an event",
                        Stats.of(samples), "ms", f"last {len(samples)} of {n} closes; target p95 <= 2 ms"))
    res.figures.update(outbox_write_p50_ms=round(statistics.median(samples), 3),
                       outbox_write_p95_ms=round(sorted(samples)[int(0.95 * (len(samples) - 1))], 3))
    return res


LANE_P95_MS = 150.0          # the rule a lane count must meet, every lane
LANE_MIN_RESULTS_PER_S = 10.0


def _lanes_run(bench: "Bench", model: Path, n: int, gated: bool, seconds: float) -> dict:
    """One `serve` with ``n`` paced lanes (box.mp4 / cup.mp4 looped, alternating) for ``seconds``;
    its per-lane summaries and engine summary (the JSON lines `serve` logs when it stops)."""
    import signal
    import subprocess
    import yaml
    videos = Path(bench.args.data).parent / "videos"
    work = bench.work / f"lanes-{n}-{model.stem}-{'gated' if gated else 'every'}"
    work.mkdir(exist_ok=True)
    lanes = [{"lane_id": f"lane{i + 1}", "source": str(videos / ("box.mp4", "cup.mp4")[i % 2])} for i in range(n)]
    cfg = {"source": {"loop": True}, "pipeline": {"motion_gating": gated},
           "serve": {"log_path": str(work / "events.jsonl"), "stats_interval_s": 3600, "lanes": lanes}}
    (work / "config.yaml").write_text(yaml.safe_dump(cfg))
    proc = subprocess.Popen([sys.executable, "-m", "checkout_cam", "serve", "--config", str(work / "config.yaml"),
                             "--model", str(model)], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stderr), daemon=True)
    reader.start()
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None and not any("ready (" in ln for ln in lines):
        time.sleep(0.1)
    time.sleep(seconds)
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)
    reader.join(10)
    out = {"lanes": [json.loads(ln.split("lane summary ", 1)[1]) for ln in lines if "lane summary " in ln],
           "engine": next((json.loads(ln.split("engine summary ", 1)[1]) for ln in lines if "engine summary " in ln),
                          None), "returncode": proc.returncode}
    if not out["lanes"]:
        out["error"] = "".join(lines[-5:])[-500:]
    return out


def _lane_ok(lane: dict) -> bool:
    moving = lane.get("results_per_s_moving_median")
    p95 = lane.get("model_latency_p95_ms")
    return (moving is not None and moving >= LANE_MIN_RESULTS_PER_S and p95 is not None and p95 < LANE_P95_MS)


def bench_lanes(bench: "Bench") -> SectionResult:
    """N paced lanes in one `serve` (N = 1, 2, 4, 6; box.mp4 / cup.mp4 looped at their own fps, alternating),
    motion gating on and off, int8 and fp32: per lane capture fps, model results/s, capture-to-result
    p50/p95, dropped frames, and the process's peak RSS; and the largest N at which every lane keeps
    p95 capture-to-result (over the frames the model ran on) under 150 ms and at least 10 current
    results per second in the seconds its scene moves (seconds in which the model ran more than the
    gate's once-a-second refresh; without gating, every second). A current result is the model's, or
    with gating the last one because the scanning area had not changed: on box.mp4 the gate asks the
    model for about 7 frames a second while the box moves, so model results alone cannot reach 10
    there however fast the model is; both are printed. A lane the engine cannot keep up with gets
    fewer frames through, and falls below 10. A larger N is not tried once one fails."""
    video, res = _video_section(bench)
    if video is None:
        return res
    seconds = 12.0 if bench.quick else 25.0
    variants = [("int8", True), ("int8", False), ("fp32", True)] + ([] if bench.quick else [("fp32", False)])
    models = {"int8": bench.int8_artifact(), "fp32": bench.fp32_artifact()}
    counts = (1, 2, 4, 6)
    runs: dict[str, dict[int, dict]] = {}
    best: dict[str, int] = {}
    for prec, gated in variants:
        name = f"{prec} {'gated' if gated else 'every frame'}"
        runs[name] = {}
        best[name] = 0
        for n in counts:
            run = _lanes_run(bench, models[prec], n, gated, seconds)
            runs[name][n] = run
            lanes = run["lanes"]
            ok = len(lanes) == n and all(_lane_ok(lane) for lane in lanes)
            if lanes:
                worst_p95 = max((ln["model_latency_p95_ms"] or float("inf")) for ln in lanes)
                worst_rate = min((ln["results_per_s_moving_median"] or 0.0) for ln in lanes)
                worst_model = min((ln["model_results_per_s_moving_median"] or 0.0) for ln in lanes)
                fps = min((ln["capture_fps"] or 0.0) for ln in lanes)
                dropped = sum(ln["dropped"] for ln in lanes)
                rss = lanes[0].get("peak_rss_mb")
                res.rows.append(Row("lanes", f"{name}, {n} lane(s)", "worst lane", Stats.of([worst_p95]), "ms",
                                    f"p95 capture-to-result (model frames); worst lane {worst_rate:.1f} results/s "
                                    f"({worst_model:.1f} from the model) while moving; capture >= {fps:.1f} fps; "
                                    f"{dropped} dropped in all; "
                                    f"RSS {rss:.0f} MB; {'meets' if ok else 'MISSES'} the rule"))
            else:
                res.notes.append(f"{name}, {n} lanes: serve gave no lane summary: {run.get('error')}")
            if not ok:
                break
            best[name] = n
    res.figures["lanes_max_int8_gated"] = best.get("int8 gated")
    res.figures["lanes_max_int8_every_frame"] = best.get("int8 every frame")
    res.figures["lanes_max_fp32_gated"] = best.get("fp32 gated")
    if "fp32 every frame" in best:
        res.details["lanes_max_fp32_every_frame"] = best["fp32 every frame"]
    # Memory per extra lane: the int8 gated runs, largest N against one lane.
    rss = {n: r["lanes"][0]["peak_rss_mb"] for n, r in runs.get("int8 gated", {}).items()
           if r["lanes"] and r["lanes"][0].get("peak_rss_mb")}
    if 1 in rss and len(rss) > 1:
        top = max(rss)
        res.figures["serve_rss_per_extra_lane_mb"] = round((rss[top] - rss[1]) / (top - 1), 1)
        res.details["rss_mb_by_lanes"] = rss
    res.details["runs"] = runs
    res.details["rule"] = (f"every lane: p95 capture-to-result over model frames < {LANE_P95_MS:.0f} ms and median "
                           f"current results/s over its moving seconds >= {LANE_MIN_RESULTS_PER_S:.0f}")
    res.details["seconds_per_run"] = seconds
    return res


SECTIONS: list[tuple[str, Callable[[Bench], SectionResult]]] = [
    ("sgemm", bench_sgemm),
    ("model", bench_model),
    ("fp32_variants", bench_fp32_variants),
    ("threads", bench_threads),
    ("int8_accuracy", bench_int8_accuracy),
    ("replay", bench_replay),
    ("live", bench_live),
    ("serve", bench_serve),
    ("lanes", bench_lanes),
    ("http", bench_http_section),
    ("mqtt_outbox", bench_mqtt_outbox),
]


# ---------------------------------------------------------------- output

def print_table(rows: list[Row]) -> None:
    header = ("section", "variant", "metric", "median", "IQR", "min-max", "unit", "n", "note")
    lines = [header]
    for r in rows:
        s = r.stats
        if s is None:
            lines.append((r.section, r.variant, r.metric, "-", "-", "-", r.unit, "-", r.note))
            continue
        lines.append((r.section, r.variant, r.metric, f"{s.median:.2f}", f"{s.q1:.2f}-{s.q3:.2f}",
                      f"{s.lo:.2f}-{s.hi:.2f}", r.unit, str(s.n), r.note))
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    for i, line in enumerate(lines):
        print("  ".join(c.ljust(w) for c, w in zip(line, widths)).rstrip())
        if i == 0:
            print("  ".join("-" * w for w in widths))


def machine() -> dict:
    info = cpu_info()
    return {"cpu": info.model, "cpu_isa": info.isa, "cores": info.cores, "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(), "python": platform.python_version(),
            "loadavg_start": list(os.getloadavg()) if hasattr(os, "getloadavg") else None}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="fewer repetitions (about 5 minutes in all)")
    p.add_argument("--json", metavar="FILE", help="also write every figure as JSON here")
    p.add_argument("--data", default=str(DEFAULT_DATA / "grocery"),
                   help="grocery data folder (train.txt calibrates, val.txt judges; default %(default)s)")
    p.add_argument("--model", metavar="FP32.pt", help="fine-tuned grocery fp32 artifact, for int8 accuracy")
    p.add_argument("--int8-model", metavar="INT8.pt", help="the same model exported with --precision int8")
    p.add_argument("--threads", type=int, default=0, help="torch/peer threads (default: torch's choice)")
    p.add_argument("--sections", default=",".join(n for n, _ in SECTIONS),
                   help="comma-separated sections to run (default: all, in order)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    warnings.filterwarnings("ignore", category=FutureWarning)
    wanted = [s.strip() for s in args.sections.split(",") if s.strip()]
    unknown = sorted(set(wanted) - {n for n, _ in SECTIONS})
    if unknown:
        print(f"bench: unknown section(s) {', '.join(unknown)}; known: {', '.join(n for n, _ in SECTIONS)}",
              file=sys.stderr)
        return 2
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    report = {"bench": "checkout_cam", "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
              "quick": args.quick, "machine": machine(), "figures": dict.fromkeys(FIGURE_KEYS),
              "definitions": DEFINITIONS, "sections": {}}
    report["figures"]["cpu_isa"] = report["machine"]["cpu_isa"]
    print(f"cpu: {cpu_info().describe()}; torch {torch.__version__}, {torch.get_num_threads()} threads",
          flush=True)
    rows: list[Row] = []
    t_start = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="checkout-cam-bench-") as tmp:
        bench = Bench(args, Path(tmp), torch.get_num_threads())
        for name, fn in SECTIONS:
            if name not in wanted:
                continue
            t0 = time.monotonic()
            print(f"[{time.monotonic() - t_start:6.1f}s] {name} ...", file=sys.stderr, flush=True)
            try:
                result = fn(bench)
            except Exception as exc:
                traceback.print_exc()
                result = SectionResult(notes=[f"failed: {type(exc).__name__}: {exc}"])
            report["figures"].update(result.figures)
            report["sections"][name] = {"seconds": round(time.monotonic() - t0, 1),
                                        "rows": [r.to_dict() for r in result.rows],
                                        "details": result.details, "notes": result.notes}
            rows.extend(result.rows)
    report["machine"]["loadavg_end"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    report["seconds"] = round(time.monotonic() - t_start, 1)

    print()
    print_table(rows)
    print()
    for name, sec in report["sections"].items():
        for note in sec["notes"]:
            print(f"note: {name}: {note}")
    print("figures: " + ", ".join(f"{k}={v}" for k, v in report["figures"].items() if v is not None))
    print(f"machine: {report['machine']['cpu']}, {report['machine']['cores']} cores "
          f"({' '.join(report['machine']['cpu_isa']) or 'no AVX2'}), torch "
          f"{report['machine']['torch']} with {bench.threads} threads; load average "
          f"{report['machine']['loadavg_start'][0]:.1f} at start, {report['machine']['loadavg_end'][0]:.1f} at end; "
          f"{report['seconds']:.0f} s")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(report, indent=1) + "\n")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
