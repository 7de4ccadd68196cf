"""Test clips made with ffmpeg from the real videos: variable frame rate, a lying AVI header,
damage, truncation, a mid-stream resolution change. Each is made once per test session."""

from __future__ import annotations

import random
import shutil
import subprocess
from pathlib import Path

import pytest


def ffmpeg(*args: str) -> None:
    if shutil.which("ffmpeg") is None:
        pytest.skip("ffmpeg not installed (apt-get install ffmpeg; CI has it)")
    subprocess.run(["ffmpeg", "-v", "error", "-y", *args], check=True, timeout=120)


def probe_times(path: Path) -> list[float]:
    """Presentation times of every packet, as ffprobe reads them, sorted, from the first (the truth
    we compare with; AVI has no pts, so its dts)."""
    out = subprocess.run(["ffprobe", "-v", "error", "-select_streams", "v:0", "-show_entries",
                          "packet=pts_time,dts_time,size", "-of", "csv=p=0", str(path)],
                         capture_output=True, text=True, check=True).stdout
    times = []
    for line in out.split():
        pts, dts, size = (line.split(",") + ["", "", ""])[:3]
        if size and int(size) > 0:
            t = pts if pts not in ("", "N/A") else dts
            times.append(float(t))
    times.sort()
    return [t - times[0] for t in times]


def make_vfr(src: Path, out: Path) -> Path:
    """3 of every 10 frames, except frames 60-120 all kept: gaps of 0.3 s and runs at the full rate."""
    ffmpeg("-i", str(src), "-an", "-vf", r"select='lt(mod(n\,10)\,3)+between(n\,60\,120)'", "-fps_mode", "vfr",
           "-c:v", "libx264", "-preset", "veryfast", str(out))
    return out


def make_lying_avi(src: Path, out: Path) -> Path:
    """An H.264 AVI whose header says 50 fps and twice the frames it holds (25 fps, 40 ms apart)."""
    ffmpeg("-i", str(src), "-an", "-vf", "fps=25", "-fps_mode", "vfr", "-enc_time_base", "1/50", "-c:v", "libx264",
           "-preset", "veryfast", "-bf", "0", str(out))
    return out


def make_damaged(src: Path, out: Path, kib: int = 100) -> Path:
    data = bytearray(src.read_bytes())
    r = random.Random(0)
    mid = len(data) // 2
    for i in range(mid, mid + kib * 1024):
        data[i] = r.randrange(256)
    out.write_bytes(bytes(data))
    return out


def make_truncated(src: Path, out: Path, share: float = 0.3) -> Path:
    data = src.read_bytes()
    out.write_bytes(data[: int(len(data) * share)])
    return out


def make_resized(src: Path, out: Path, tmp: Path) -> Path:
    """2 s at 640x480, then 2 s at 320x240, in one MPEG-TS stream (which allows a size change)."""
    a, b = tmp / "part_a.ts", tmp / "part_b.ts"
    ffmpeg("-i", str(src), "-an", "-t", "2", "-c:v", "libx264", "-preset", "veryfast", str(a))
    ffmpeg("-ss", "2", "-i", str(src), "-an", "-t", "2", "-vf", "scale=320:240", "-c:v", "libx264",
           "-preset", "veryfast", "-output_ts_offset", "2", str(b))
    out.write_bytes(a.read_bytes() + b.read_bytes())
    return out
