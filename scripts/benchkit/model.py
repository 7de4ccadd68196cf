"""The model-only sections: the machine's sgemm ceiling (sgemm), batch-1 latency and batch-8
throughput of ours against torchvision eager and the peer runtimes (model), fp32 artifact variants
(fp32_variants), torch thread counts idle and beside a capture thread (threads), and int8 against
fp32 accuracy on grocery val with a fine-tuned model (int8_accuracy)."""

from __future__ import annotations

import contextlib
import os
import statistics
import threading
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from checkout_cam.cpu import cpu_info
from checkout_cam.images import read_image
from checkout_cam.model.artifact import quiet_jit_deprecation
from checkout_cam.model.classifier import open_classifier

import bench_peers as peers

from .core import Bench, Row, SectionResult, Stats, cosine, interleaved, model_flops, torch_call, torch_threads

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

