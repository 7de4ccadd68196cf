#!/usr/bin/env python3
"""One performance run on this machine: prints a table, writes JSON (--json FILE).

    PYTHONPATH=. python3 scripts/bench.py --quick --json bench.json
    PYTHONPATH=. python3 scripts/bench.py --model grocery.pt --int8-model grocery-int8.pt

The run is a list of sections (SECTIONS, in order); each takes the shared
Bench context and returns a SectionResult: headline figures for the top of
the JSON, table rows, details and notes (why something was skipped). The
sections live in scripts/benchkit/ (model.py, pipeline.py, lanes.py,
services.py; core.py holds Bench, SectionResult and the timing): add one by
writing ``bench_<name>(bench) -> SectionResult`` in the module it belongs to
and listing it in SECTIONS here.

Every time is a median with its spread (interquartile range and min/max).
Variants that are compared are timed interleaved, round by round in rotating
order, so load from other processes hits them alike; compare ratios from one
run, not absolute figures across runs. Speed figures use seeded random
weights (weights do not change speed); accuracy figures need a trained model
(--model/--int8-model) and are skipped with the reason otherwise.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import sys
import tempfile
import time
import traceback
import warnings
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import torch

# benchkit.core first: it puts the checkout's own package first on sys.path.
from benchkit.core import (DEFAULT_DATA, DEFINITIONS, FIGURE_KEYS, ROOT, Bench, Row, SectionResult, Stats, cosine,
                           interleaved, model_flops, torch_call, torch_threads)
from benchkit.lanes import LANE_MIN_RESULTS_PER_S, LANE_P95_MS, bench_lanes
from benchkit.model import Bf16, CaptureLoad, bench_fp32_variants, bench_int8_accuracy, bench_model, bench_sgemm, \
    bench_threads
from benchkit.pipeline import NoModelClassifier, RssSampler, bench_live, bench_replay, bench_serve, naive_loop
from benchkit.services import bench_http_section, bench_mqtt_outbox
from checkout_cam.cpu import cpu_info

# What this module offers besides its own functions: the tests and older callers reach the parts
# through it (bench.Stats, bench.interleaved, bench.NoModelClassifier, bench.FIGURE_KEYS, ...).
__all__ = [
    "ROOT", "DEFAULT_DATA", "FIGURE_KEYS", "DEFINITIONS", "Stats", "interleaved", "Row", "SectionResult", "Bench",
    "torch_threads", "torch_call", "model_flops", "cosine",
    "bench_sgemm", "bench_model", "Bf16", "bench_fp32_variants", "CaptureLoad", "bench_threads",
    "bench_int8_accuracy",
    "naive_loop", "NoModelClassifier", "RssSampler", "bench_replay", "bench_live", "bench_serve",
    "LANE_P95_MS", "LANE_MIN_RESULTS_PER_S", "bench_lanes", "bench_http_section", "bench_mqtt_outbox",
    "SECTIONS", "print_table", "machine", "parse_args", "main",
]

logger = logging.getLogger("bench")


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
            "loadavg_start": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
            # oneDNN capped below the CPU (e.g. AVX2 to stand in for a box without VNNI): the kernels run
            # are the cap's, whatever cpu_isa says.
            "onednn_max_cpu_isa": os.environ.get("ONEDNN_MAX_CPU_ISA")}


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
    cap = report["machine"]["onednn_max_cpu_isa"]
    print(f"cpu: {cpu_info().describe()}; torch {torch.__version__}, {torch.get_num_threads()} threads"
          + (f"; oneDNN capped at {cap} (ONEDNN_MAX_CPU_ISA)" if cap else ""), flush=True)
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
