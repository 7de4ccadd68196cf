"""Draw example overlays on a real video frame and time OverlayRenderer.annotate.

    python scripts/render_overlay.py [--video ../shared/data/videos/box.mp4] [--out /tmp/render_examples]

Writes one PNG per state (confident, REVIEW, UNTRAINED, offline/paused) at
640x480 and 1280x720 and prints the median/p95 milliseconds per annotate call.
The decisions are hand-made: the labels show what the overlay looks like, not
what any model said about the frame.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import cv2

from checkout_cam.frames import Frame
from checkout_cam.render import OverlayRenderer, Status
from checkout_cam.results import Classification, InferenceResult, Prediction
from checkout_cam.review import Decision

REPO = Path(__file__).resolve().parents[1]


def decision(frame: Frame, top: list[tuple[int, str, float]], reasons: tuple[str, ...]) -> Decision:
    c = Classification(tuple(Prediction(i, label, p) for i, label, p in top))
    result = InferenceResult(frame.frame_id, frame.timestamp, frame.video_time, c, 20.0, done=frame.timestamp + 0.04)
    return Decision(frame_id=frame.frame_id, result=result, smoothed=c, review=bool(reasons), reasons=reasons,
                    empty=False, item=top[0][1], opened=None, closed=None)


def read_frame(video: Path, index: int):
    cap = cv2.VideoCapture(str(video))
    cap.set(cv2.CAP_PROP_POS_FRAMES, index)
    ok, image = cap.read()
    cap.release()
    if not ok:
        raise SystemExit(f"could not read frame {index} of {video}")
    return image


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--video", type=Path, default=REPO.parent / "shared/data/videos/box.mp4")
    ap.add_argument("--frame", type=int, default=200)
    ap.add_argument("--out", type=Path, default=Path("/tmp/render_examples"))
    ap.add_argument("--repeat", type=int, default=500)
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    image = read_frame(args.video, args.frame)
    roi = [0.2, 0.15, 0.6, 0.7]
    status = Status(camera_fps=29.9, inference_fps=14.2, latency_ms=63.0, dropped=12)
    sure = [(948, "Granny Smith", 0.87), (952, "fig", 0.06), (950, "orange", 0.02)]
    unsure = [(454, "bookcase", 0.41), (549, "envelope", 0.33), (692, "packet", 0.12)]
    cases = {
        "confident": (True, sure, ()),
        "review": (True, unsure, ("low_confidence", "low_margin")),
        "untrained": (False, unsure, ("low_confidence", "low_margin", "untrained")),
    }
    timings = {}
    for size in [(640, 480), (1280, 720)]:
        img = cv2.resize(image, size, interpolation=cv2.INTER_AREA) if size != image.shape[1::-1] else image
        frame = Frame(img, frame_id=args.frame, timestamp=time.monotonic(), source=str(args.video))
        for name, (trained, top, reasons) in cases.items():
            r = OverlayRenderer(model_name="resnet18-grocery" if trained else "demo-untrained",
                                trained=trained, roi=roi)
            d = decision(frame, top, reasons)
            out = r.annotate(frame, d, status, now=frame.timestamp)
            path = args.out / f"{name}_{size[0]}x{size[1]}.png"
            cv2.imwrite(str(path), out)
            print("wrote", path)
            ms = []
            for _ in range(args.repeat):
                t = time.perf_counter()
                r.annotate(frame, d, status, now=frame.timestamp)
                ms.append((time.perf_counter() - t) * 1e3)
            ms.sort()
            timings[(name, size)] = (statistics.median(ms), ms[int(0.95 * len(ms)) - 1])
        r = OverlayRenderer(model_name="resnet18-grocery", trained=True, roi=roi)
        off = Status(camera_fps=0.0, inference_fps=0.0, latency_ms=float("nan"), dropped=40, offline=True,
                     paused=True, message="reconnecting to camera 0 in 4 s")
        path = args.out / f"offline_paused_{size[0]}x{size[1]}.png"
        cv2.imwrite(str(path), r.annotate(frame, None, off))
        print("wrote", path)
    copy_ms = []
    for _ in range(args.repeat):
        t = time.perf_counter()
        image.copy()
        copy_ms.append((time.perf_counter() - t) * 1e3)
    print(f"\nannotate, ms per frame over {args.repeat} calls (median / p95); frame copy alone: "
          f"{statistics.median(copy_ms):.3f} ms at {image.shape[1]}x{image.shape[0]}")
    for (name, size), (med, p95) in timings.items():
        print(f"  {size[0]}x{size[1]} {name:10s} {med:.3f} / {p95:.3f}")


if __name__ == "__main__":
    main()
