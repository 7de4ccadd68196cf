"""A lane benchmark with ground truth: composed checkout videos with known item intervals, plus the
hand-labelled real clips, replayed through the product and scored.

    python3 scripts/lane_truth.py --model models/demo-untrained.pt [--short] [--json out.json] [--keep DIR]

What it composes (640x480, 30 fps, H.264; each from real material):
- the empty counter: the lower half of box.mp4's temporal median (the table and its pen, the box
  gone), scaled to the frame;
- products: grocery train/val photos (one class each), moved in from the left in 0.6 s, held with a
  hand's wander (about 15 px), moved out to the right;
- camera noise (sigma 4 levels per pixel) and a slow light drift on every clip.
Scenarios: ``drift`` (three items, light rising 30 levels), ``start_in_view`` (an item already in
view at frame 0), ``back_to_back`` (two items 0.5 s apart), ``swap`` (one item out while the next
comes in, no empty frame), ``outage`` (3 s without frames in the middle of an item). Truth: an item
is in view while at least half of it is inside the frame; across an outage it is two intervals,
because nothing may span a blind gap. box.mp4 and cup.mp4, hand-labelled: the item is in view in
every frame (checked frame by frame in a contact sheet), one interval each.

Score per clip: items found, missed, false, split and merged, interval IoU (time), and with a
model that knows the products (labels that name the grocery classes) the event label accuracy.
``--short`` makes shorter clips for the test (tests/scripts/test_lane_truth.py).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import zlib
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
DATA = REPO.parent / "shared" / "data"

W, H, FPS = 640, 480, 30.0
ITEM = 300          # product photo side in pixels
MOVE_S = 0.6        # moving in / out
NOISE = 4.0
EMPTY_START_S = 4.0  # the lane is empty this long first, so its background is learned


@dataclass
class Item:
    photo: int          # index into the products
    t_in: float         # starts to move in (item fully in at t_in + MOVE_S); < 0: in view at start
    t_out: float        # fully out (starts to leave at t_out - MOVE_S)


@dataclass
class Scenario:
    name: str
    duration: float
    items: list[Item]
    drift: float = 10.0                     # light change over the clip, levels
    outages: list[tuple[float, float]] = field(default_factory=list)


def scenarios(short: bool) -> list[Scenario]:
    hold = 2.0 if short else 4.0
    e = EMPTY_START_S
    a = MOVE_S * 2 + hold
    return [
        Scenario("drift", e + 3 * (a + 1.5) + 1, [Item(0, e, e + a), Item(1, e + a + 1.5, e + 2 * a + 1.5),
                                                    Item(2, e + 2 * a + 3, e + 3 * a + 3)], drift=30.0),
        Scenario("start_in_view", 3.0 + e + a + 1.5, [Item(3, -1.0, 3.0), Item(4, 3.0 + e, 3.0 + e + a)]),
        Scenario("back_to_back", e + 2 * a + 0.5 + 1.5, [Item(5, e, e + a), Item(6, e + a + 0.5, e + 2 * a + 0.5)]),
        Scenario("swap", e + 2 * a + 1.5, [Item(7, e, e + a), Item(8, e + a - MOVE_S, e + 2 * a - MOVE_S)]),
        Scenario("outage", e + a + 3.0 + 1.5, [Item(9, e, e + a + 3.0)],
                 outages=[(e + MOVE_S + hold / 2, e + MOVE_S + hold / 2 + 3.0)]),
    ]


def busy_lane(duration: float = 24.0, hold: float = 1.0, gap: float = 0.5) -> Scenario:
    """A lane where an item comes every ``2 x MOVE_S + hold + gap`` seconds after the empty start: a
    looping stand-in camera for tests that need many items (tests/conftest.py ``lane_video``)."""
    items, t, k = [], EMPTY_START_S, 0
    while t + 2 * MOVE_S + hold < duration - 0.5:
        items.append(Item(k % 10, t, t + 2 * MOVE_S + hold))
        t += 2 * MOVE_S + hold + gap
        k += 1
    return Scenario("busy_lane", duration, items)


# ---------------------------------------------------------------- material


def counter_background(videos: Path) -> np.ndarray:
    """The empty counter: box.mp4's temporal median (the moving box averages out of the lower half)."""
    cap = cv2.VideoCapture(str(videos / "box.mp4"))
    frames, i = [], 0
    while True:
        ok, img = cap.read()
        if not ok:
            break
        if i % 3 == 0:
            frames.append(img)
        i += 1
    cap.release()
    median = np.median(np.stack(frames), axis=0).astype(np.uint8)
    return cv2.resize(median[210:480, 140:500], (W, H), interpolation=cv2.INTER_AREA)


def product_photos(grocery: Path, n: int) -> tuple[list[np.ndarray], list[str]]:
    """``n`` photos of ``n`` classes spread over the 81 (every 8th id: apples, melons, juices, milks,
    peppers ...), the first photo of each in val, else train."""
    names = {}
    for line in (grocery / "classes.csv").read_text().splitlines()[1:]:
        parts = [p.strip() for p in line.split(",")]
        names[parts[1]] = parts[0]
    seen, photos = set(), []
    for listing in ("val.txt", "train.txt"):
        for line in (grocery / listing).read_text().splitlines():
            rel, fine = [s.strip() for s in line.split(",")[:2]]
            if fine in seen or int(fine) % 8 != 0:
                continue
            img = cv2.imread(str(grocery / rel))
            if img is None:
                continue
            seen.add(fine)
            photos.append((int(fine), cv2.resize(img, (ITEM, ITEM), interpolation=cv2.INTER_AREA),
                           names.get(fine, fine)))
            if len(photos) == n:
                photos.sort(key=lambda p: p[0])
                return [p[1] for p in photos], [p[2] for p in photos]
    raise SystemExit(f"found only {len(photos)} product photos in {grocery}")


# ---------------------------------------------------------------- composing


def item_x(item: Item, t: float, rng_phase: float) -> float | None:
    """Left edge of the item at time t (None when not in the frame at all)."""
    centre = (W - ITEM) / 2
    if t < item.t_in or t > item.t_out:
        return None
    if t < item.t_in + MOVE_S:
        return -ITEM + (centre + ITEM) * (t - item.t_in) / MOVE_S
    if t > item.t_out - MOVE_S:
        return centre + (W - centre) * (t - (item.t_out - MOVE_S)) / MOVE_S
    return centre + 15 * np.sin(2 * np.pi * 0.7 * t + rng_phase)


def visible(x: float | None) -> bool:
    """At least half of the item inside the frame: the ground truth's 'in view'."""
    if x is None:
        return False
    inside = min(x + ITEM, W) - max(x, 0)
    return inside >= ITEM / 2


def compose(sc: Scenario, bg: np.ndarray, photos: list[np.ndarray], out: Path) -> tuple[list[float], list[dict]]:
    """Write the clip; return its frame times and the truth intervals [{photo, start, end}]."""
    rng = np.random.default_rng(zlib.crc32(sc.name.encode()))
    phases = [float(rng.uniform(0, 6.28)) for _ in sc.items]
    times = [i / FPS for i in range(int(sc.duration * FPS))]
    times = [t for t in times if not any(a <= t < b for a, b in sc.outages)]
    seen: dict[int, list[float]] = {}
    truth_runs: list[dict] = []
    with av.open(str(out), "w") as c:
        s = c.add_stream("libx264", rate=30)
        s.width, s.height, s.pix_fmt = W, H, "yuv420p"
        s.time_base = Fraction(1, 90000)
        s.options = {"crf": "20", "preset": "veryfast"}
        for t in times:
            img = bg.astype(np.float32) + sc.drift * t / sc.duration
            for k, item in enumerate(sc.items):
                x = item_x(item, t, phases[k])
                y = (H - ITEM) / 2 + (8 * np.cos(2 * np.pi * 0.9 * t + phases[k]) if x is not None else 0)
                if x is None:
                    continue
                xi, yi = int(round(x)), int(round(y))
                x0, x1 = max(xi, 0), min(xi + ITEM, W)
                if x1 > x0:
                    img[yi:yi + ITEM, x0:x1] = photos[item.photo][:, x0 - xi:x1 - xi]
                if visible(x):
                    seen.setdefault(k, []).append(t)
            img += rng.normal(0, NOISE, img.shape).astype(np.float32)
            frame = av.VideoFrame.from_ndarray(np.clip(img, 0, 255).astype(np.uint8), format="bgr24")
            frame.pts, frame.time_base = int(round(t * 90000)), Fraction(1, 90000)
            for p in s.encode(frame):
                c.mux(p)
        for p in s.encode(None):
            c.mux(p)
    for k, ts in seen.items():
        # An interval never spans an outage: split where frames are missing.
        start = prev = ts[0]
        for t in ts[1:]:
            if t - prev > 1.0:
                truth_runs.append({"photo": sc.items[k].photo, "start": start, "end": prev})
                start = t
            prev = t
        truth_runs.append({"photo": sc.items[k].photo, "start": start, "end": prev})
    truth_runs.sort(key=lambda r: r["start"])
    return times, truth_runs


# ---------------------------------------------------------------- scoring


def iou(a: tuple[float, float], b: tuple[float, float], dt: float) -> float:
    lo, hi = max(a[0], b[0]), min(a[1], b[1]) + dt
    inter = max(0.0, hi - lo)
    union = (a[1] - a[0] + dt) + (b[1] - b[0] + dt) - inter
    return inter / union if union > 0 else 0.0


def score(truth: list[dict], events: list[dict], dt: float, labels: list[str] | None = None) -> dict:
    """Items found/missed/false/split/merged and IoU. An event belongs to the truth interval it overlaps
    most; a truth interval with two events is split, an event covering two is merged."""
    def overlap(t, e):
        return max(0.0, min(t["end"], e["t_end"]) + dt - max(t["start"], e["t_start"]))

    owner = []
    for e in events:
        best = max(range(len(truth)), key=lambda i: overlap(truth[i], e), default=None)
        owner.append(best if best is not None and overlap(truth[best], e) > 0 else None)
    found = missed = split = merged = 0
    ious, right = [], 0
    for i, t in enumerate(truth):
        mine = [e for e, o in zip(events, owner) if o == i]
        if not mine:
            missed += 1
            continue
        found += 1
        split += len(mine) > 1
        best = max(mine, key=lambda e: iou((t["start"], t["end"]), (e["t_start"], e["t_end"]), dt))
        ious.append(iou((t["start"], t["end"]), (best["t_start"], best["t_end"]), dt))
        if labels is not None and t.get("label") is not None:
            right += best["label"] == t["label"]
    for e in events:
        covered = [t for t in truth if overlap(t, e) > 0.5 * (t["end"] - t["start"] + dt)]
        merged += len(covered) > 1
    false = sum(o is None for o in owner)
    return {"items": len(truth), "events": len(events), "found": found, "missed": missed, "false": false,
            "split": split, "merged": merged, "iou": [round(x, 3) for x in ious],
            "iou_median": round(statistics.median(ious), 3) if ious else 0.0,
            "label_accuracy": round(right / found, 3) if labels is not None and found else None}


def replay_events(model: Path, video: Path, log: Path) -> list[dict]:
    from checkout_cam.config import Config, override
    from checkout_cam.modes.replay import run_replay
    cfg = override(override(Config(), "model.path", str(model)), "source.uri", str(video))
    run_replay(cfg, log=log, progress=False)
    return [e for e in (json.loads(line) for line in log.read_text().splitlines()) if e["type"] == "item"]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, type=Path, help="model artifact to replay with")
    ap.add_argument("--short", action="store_true", help="shorter clips (the test)")
    ap.add_argument("--json", type=Path, help="write every figure here")
    ap.add_argument("--keep", type=Path, help="keep the composed clips and event logs in this folder")
    ap.add_argument("--only", nargs="*", help="scenario names to run (default: all, plus box and cup)")
    args = ap.parse_args(argv)
    from checkout_cam.model import open_classifier
    model_labels = set(open_classifier(args.model).labels)
    work = args.keep or Path(tempfile.mkdtemp(prefix="lane_truth-"))
    work.mkdir(parents=True, exist_ok=True)
    bg = counter_background(DATA / "videos")
    photos, names = product_photos(DATA / "grocery", 10)
    knows = set(names) <= model_labels
    results = {}
    for sc in scenarios(args.short):
        if args.only and sc.name not in args.only:
            continue
        clip = work / f"{sc.name}.mp4"
        _, truth = compose(sc, bg, photos, clip)
        for t in truth:
            t["label"] = names[t["photo"]]
        log = work / f"{sc.name}.jsonl"
        log.unlink(missing_ok=True)
        events = replay_events(args.model, clip, log)
        results[sc.name] = score(truth, events, 1 / FPS, names if knows else None)
        results[sc.name]["truth"] = [(round(t["start"], 3), round(t["end"], 3)) for t in truth]
        results[sc.name]["got"] = [(e["t_start"], e["t_end"], e["closed_by"]) for e in events]
    for name, last in (("box", 15.151), ("cup", 8.067)):   # hand-labelled: the item in every frame
        if args.only and name not in args.only:
            continue
        log = work / f"{name}.jsonl"
        log.unlink(missing_ok=True)
        events = replay_events(args.model, DATA / "videos" / f"{name}.mp4", log)
        results[name] = score([{"start": 0.0, "end": last}], events, 1 / 30, None)
        results[name]["got"] = [(e["t_start"], e["t_end"], e["closed_by"]) for e in events]
    keys = ("items", "events", "found", "missed", "false", "split", "merged", "iou_median", "label_accuracy")
    print(f"{'clip':14s} " + " ".join(f"{k:>9s}" for k in keys))
    for name, r in results.items():
        print(f"{name:14s} " + " ".join(f"{str(r[k]):>9s}" for k in keys))
    composed = [r for n, r in results.items() if n not in ("box", "cup")]
    all_iou = [x for r in composed for x in r["iou"]]
    summary = {"found": sum(r["found"] for r in composed), "items": sum(r["items"] for r in composed),
               "false": sum(r["false"] for r in composed), "split": sum(r["split"] for r in composed),
               "merged": sum(r["merged"] for r in composed),
               "iou_median": round(statistics.median(all_iou), 3) if all_iou else None,
               "model_knows_products": knows}
    print(f"composed: {summary['found']}/{summary['items']} found, {summary['false']} false, {summary['split']} "
          f"split, {summary['merged']} merged, median IoU {summary['iou_median']}"
          + ("" if knows else "; label accuracy n/a (the model does not name these grocery classes)"))
    if args.json:
        args.json.write_text(json.dumps({"clips": results, "composed": summary}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
