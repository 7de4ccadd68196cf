"""How far each way of timing a video's frames is from the truth, and how many frames each reads.

    python3 scripts/frame_times.py [--json out.json]

Clips: box.mp4 and cup.mp4, and, made from them with ffmpeg (tests/helpers/clips.py, the same ones
the tests use), a variable-frame-rate clip, an H.264 AVI whose header says 50 fps and twice its
frames, box.mp4 with 100 KiB damaged, and box.mp4 cut at 30%. Truth: ffprobe's packet timestamps,
sorted. For each frame a method delivers, the error is the distance to the nearest true time.

Methods: a frame counter over the stated fps (what replay did), OpenCV ``CAP_PROP_POS_MSEC``,
PyAV's raw ``frame.pts``, and ``VideoFileSource`` (PyAV, timestamps put in order). Also the annotated
video: ``VideoWriterSink`` output read back, against the frames it was given.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import av
import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from checkout_cam.render import OverlayRenderer  # noqa: E402
from checkout_cam.sinks import VideoWriterSink  # noqa: E402
from checkout_cam.sources import VideoFileSource  # noqa: E402
from tests.helpers import clips  # noqa: E402

VIDEOS = REPO.parent / "shared" / "data" / "videos"


def errors_ms(times, truth) -> tuple[float, float]:
    """(max, median) error in ms: the i-th frame against the i-th true time when every frame decoded,
    else (frames lost to damage) against the nearest true time."""
    truth = np.asarray(truth)
    if len(times) == len(truth):
        err = [float(x) for x in np.abs(np.asarray(times) - truth) * 1e3]
    else:
        err = [float(np.min(np.abs(truth - t))) * 1e3 for t in times]
    return (round(max(err), 1), round(float(np.median(err)), 1)) if err else (float("nan"), float("nan"))


def opencv_times(path: Path) -> tuple[list[float], float]:
    cap = cv2.VideoCapture(str(path))
    fps = cap.get(cv2.CAP_PROP_FPS)
    out = []
    while cap.read()[0]:
        out.append(cap.get(cv2.CAP_PROP_POS_MSEC) / 1e3)
    cap.release()
    return [t - out[0] for t in out] if out else [], fps


def pyav_raw(path: Path) -> list[float]:
    out = []
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        try:
            for f in c.decode(s):
                if f.pts is not None:
                    out.append(float(f.pts * s.time_base))
        except av.error.FFmpegError:
            pass   # stops at the first bad packet, as a plain decode loop does
    return [t - out[0] for t in out] if out else []


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="frame_times-"))
    paths = {"box.mp4": VIDEOS / "box.mp4", "cup.mp4": VIDEOS / "cup.mp4",
             "vfr.mp4": clips.make_vfr(VIDEOS / "cup.mp4", tmp / "vfr.mp4"),
             "lying.avi": clips.make_lying_avi(VIDEOS / "cup.mp4", tmp / "lie.avi"),
             "damaged.mp4": clips.make_damaged(VIDEOS / "box.mp4", tmp / "damaged.mp4"),
             "truncated.mp4": clips.make_truncated(VIDEOS / "box.mp4", tmp / "truncated.mp4")}
    rows = {}
    renderer = OverlayRenderer(model_name="m", trained=True)
    for name, path in paths.items():
        truth = clips.probe_times(path)
        cv_t, fps = opencv_times(path)
        raw = pyav_raw(path)
        src = VideoFileSource(path)
        out = tmp / f"annotated-{name}.mp4"
        ours = []
        with VideoWriterSink(out, fps=src.fps, size=(src.width, src.height), renderer=renderer) as w:
            for f in src:
                ours.append(f.video_time)
                w(f, None)
        with av.open(str(out)) as c:
            s = c.streams.video[0]
            written = [float(f.pts * s.time_base) for f in c.decode(s)]
        rows[name] = {
            "packets": len(truth), "stated_fps": round(fps, 3),
            "counter": {"frames": len(cv_t), "err_ms": errors_ms([i / fps for i in range(len(cv_t))], truth)},
            "opencv_pos_msec": {"frames": len(cv_t), "err_ms": errors_ms(cv_t, truth),
                                "in_order": bool(np.all(np.diff(cv_t) > 0))},
            "pyav_raw": {"frames": len(raw), "in_order": bool(np.all(np.diff(raw) > 0))},
            "ours": {"frames": len(ours), "err_ms": errors_ms(ours, truth), "in_order": bool(np.all(np.diff(ours) > 0)),
                     "decode": src.report.describe(), "partial": src.report.partial},
            "annotated": {"frames": len(written),
                          "err_ms_vs_frames": round(max(abs(a - b) for a, b in zip(written, ours)) * 1e3, 3)},
        }
    print(f"{'clip':14s} {'packets':>7s} | {'counter/fps max,med ms':>22s} | {'OpenCV POS_MSEC frames, max,med ms, in order':>44s}"
          f" | {'ours frames, max,med ms':>24s} | annotated max ms | decode")
    for name, r in rows.items():
        c, o, u, a = r["counter"], r["opencv_pos_msec"], r["ours"], r["annotated"]
        print(f"{name:14s} {r['packets']:7d} | {str(c['err_ms']):>22s} | "
              f"{o['frames']:6d} {str(o['err_ms']):>18s} {str(o['in_order']):>6s}            | "
              f"{u['frames']:5d} {str(u['err_ms']):>18s} | {a['err_ms_vs_frames']:16.3f} | {u['decode']}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
