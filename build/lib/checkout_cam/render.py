"""The overlay: Top-k labels, the review state, the model and the pipeline's health, on a frame.

``OverlayRenderer.annotate`` returns a new image and never touches the frame
(style is fixed in ``__init__``, like supervision's annotators). It runs for
every displayed frame, so it draws with OpenCV only, copies the frame once,
and darkens only the small panels behind text (no full-frame blend).
Sizes scale with the frame, so 320x240 and 1280x720 look alike.
"""

from __future__ import annotations

import logging
import time
import unicodedata
from dataclasses import dataclass

import cv2
import numpy as np

from checkout_cam.frames import Frame
from checkout_cam.preprocess import roi_box
from checkout_cam.review import LOW_CONFIDENCE, LOW_MARGIN, UNTRAINED, Decision

logger = logging.getLogger(__name__)

# BGR
GREEN = (50, 160, 30)
AMBER = (0, 170, 255)
RED = (40, 30, 215)
WHITE = (255, 255, 255)
BLACK = (0, 0, 0)
GREY = (170, 170, 170)
BAR_BACK = (70, 70, 70)

REASON_WORDS = {LOW_CONFIDENCE: "low confidence", LOW_MARGIN: "top two too close",
                UNTRAINED: "untrained model"}

FONT = cv2.FONT_HERSHEY_SIMPLEX
PANEL_DARKEN = 0.35   # what is left of the frame's brightness behind text


@dataclass(frozen=True)
class Status:
    """The status line: how the pipeline is keeping up."""

    camera_fps: float
    inference_fps: float
    latency_ms: float
    dropped: int
    offline: bool = False
    paused: bool = False
    message: str = ""


def reason_words(reasons: tuple[str, ...]) -> str:
    return ", ".join(REASON_WORDS.get(r, r.replace("_", " ")) for r in reasons)


def replay_now(frame: Frame, decision: Decision | None) -> float:
    """The ``now`` to draw ``frame`` with, in recorded video: the decision's capture time moved on by
    the video time between its frame and this one. Staleness is then measured in video time, so a
    replay draws the same overlay however fast it runs. Live frames: the frame's own timestamp."""
    if decision is not None and frame.video_time is not None and decision.result.video_time is not None:
        return decision.result.timestamp + (frame.video_time - decision.result.video_time)
    return frame.timestamp


def _ascii(text: str) -> str:
    # Hershey fonts draw ASCII only: keep accented letters' base letter, drop the rest.
    out = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    return out if out.strip() or not text.strip() else "?"


def _darken(img: np.ndarray, x0: int, y0: int, x1: int, y1: int) -> None:
    h, w = img.shape[:2]
    x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)
    if x1 > x0 and y1 > y0:
        region = img[y0:y1, x0:x1]
        cv2.convertScaleAbs(region, dst=region, alpha=PANEL_DARKEN)


@dataclass(frozen=True)
class _Layout:
    """Pixel sizes for one frame size."""

    unit: float          # 1.0 at 640x480 with font_scale 0.6
    text: float          # font scales
    small: float
    big: float
    huge: float
    thin: int            # line thicknesses
    bold: int
    pad: int
    panel_w: int
    row_h: int
    bar_h: int


class OverlayRenderer:
    """Draws a Decision and a Status on frames. Style is fixed at construction."""

    def __init__(self, *, model_name: str, trained: bool, top_k: int = 3, stale_after_ms: float = 500.0,
                 font_scale: float = 0.6, roi: list[float] | None = None):
        self.model_name = _ascii(model_name)
        self.trained = trained
        self.top_k = top_k
        self.stale_after_ms = stale_after_ms
        self.font_scale = font_scale
        self.roi = list(roi) if roi is not None else None
        self._layouts: dict[tuple[int, int], _Layout] = {}
        self._fitted: dict[tuple, str] = {}

    # ------------------------------------------------------------ helpers

    def _layout(self, w: int, h: int) -> _Layout:
        layout = self._layouts.get((w, h))
        if layout is None:
            # Below 640x480 text shrinks less than the frame, or it stops being legible.
            u = max(min(w / 640, h / 480), 0.7) * self.font_scale / 0.6
            layout = _Layout(unit=u, text=0.6 * u, small=0.48 * u, big=0.8 * u, huge=1.5 * u,
                             thin=max(1, round(u)), bold=max(2, round(2 * u)), pad=max(3, round(8 * u)),
                             panel_w=min(max(round(0.42 * w), round(250 * u)), w - 2 * max(3, round(8 * u))),
                             row_h=round(30 * u), bar_h=max(3, round(6 * u)))
            self._layouts[(w, h)] = layout
        return layout

    def _fit(self, text: str, scale: float, thick: int, max_w: int) -> str:
        """``text`` cut with '..' so it is at most max_w pixels wide."""
        key = (text, scale, thick, max_w)
        out = self._fitted.get(key)
        if out is None:
            out = text
            while out and cv2.getTextSize(out + (".." if out != text else ""), FONT, scale, thick)[0][0] > max_w:
                out = out[:-1]
            out = out if out == text else out.rstrip() + ".."
            if len(self._fitted) > 4096:  # labels are a closed set; this only bounds odd input
                self._fitted.clear()
            self._fitted[key] = out
        return out

    def _wrap(self, text: str, scale: float, thick: int, max_w: int, max_lines: int = 3) -> list[str]:
        """``text`` broken at spaces into lines at most max_w wide (the last one cut if need be)."""
        lines: list[str] = []
        for word in text.split():
            if lines and cv2.getTextSize(lines[-1] + " " + word, FONT, scale, thick)[0][0] <= max_w:
                lines[-1] += " " + word
            else:
                lines.append(word)
        if len(lines) > max_lines:
            lines = lines[:max_lines - 1] + [" ".join(lines[max_lines - 1:])]
        return [self._fit(line, scale, thick, max_w) for line in lines]

    @staticmethod
    def _text(img, text, org, scale, color, thick) -> None:
        cv2.putText(img, text, org, FONT, scale, color, thick, cv2.LINE_AA)

    def is_current(self, decision: Decision | None, now: float) -> bool:
        """A decision is shown only while its result is at most stale_after_ms old."""
        return decision is not None and (now - decision.result.timestamp) * 1e3 <= self.stale_after_ms

    # ------------------------------------------------------------ drawing

    def annotate(self, frame: Frame, decision: Decision | None, status: Status | None = None,
                 now: float | None = None) -> np.ndarray:
        """A new image: ``frame`` with the overlay. ``now`` (monotonic) defaults to the current time;
        replay passes ``replay_now(frame, decision)``."""
        out = frame.image.copy()
        h, w = out.shape[:2]
        L = self._layout(w, h)
        if now is None:
            now = time.monotonic()
        offline = status is not None and status.offline
        shown = decision if not offline and self.is_current(decision, now) else None
        state = None
        if shown is not None and shown.smoothed is not None:
            state = AMBER if shown.review else GREEN
        if self.roi is not None:
            x, y, rw, rh = roi_box(out.shape, self.roi)
            cv2.rectangle(out, (x, y), (x + rw - 1, y + rh - 1), state or GREY, L.thin)
        if shown is not None:
            if shown.smoothed is not None:
                self._labels(out, L, shown)
            elif shown.result.error is not None and not shown.empty:
                self._note(out, L, "no result: inference error", AMBER)
        self._model(out, L)
        if status is not None:
            self._status(out, L, status)
            if offline:
                self._banner(out, L, "CAMERA OFFLINE", RED, h // 2, status.message)
            if status.paused:
                self._banner(out, L, "PAUSED", AMBER, int(h * (0.72 if offline else 0.5)), "")
        return out

    def _labels(self, img: np.ndarray, L: _Layout, d: Decision) -> None:
        x0 = y0 = L.pad
        pw = L.panel_w
        inner = pw - 2 * L.pad
        big_h = cv2.getTextSize("Ag", FONT, L.big, L.bold)[0][1]
        small_h = cv2.getTextSize("Ag", FONT, L.small, L.thin)[0][1]
        inner_gap = max(2, L.pad // 2)
        why = self._wrap(reason_words(d.reasons), L.small, L.thin, inner) if d.review else []
        head_h = big_h + 2 * L.pad + len(why) * (small_h + inner_gap) + (L.pad // 2 if why else 0)
        top = d.smoothed.top_k(self.top_k)
        rows_h = len(top) * L.row_h + L.pad
        _darken(img, x0, y0 + head_h, x0 + pw, y0 + head_h + rows_h)
        # The state band: a solid colour readable at a glance from the till.
        colour = AMBER if d.review else GREEN
        ink = BLACK if d.review else WHITE
        cv2.rectangle(img, (x0, y0), (x0 + pw - 1, y0 + head_h - 1), colour, -1)
        head = "REVIEW" if d.review else "OK"
        self._text(img, head, (x0 + L.pad, y0 + L.pad + big_h), L.big, ink, L.bold)
        if not d.review:
            label = self._fit(_ascii(d.smoothed.best.label), L.text, L.thin,
                              inner - cv2.getTextSize("OK  ", FONT, L.big, L.bold)[0][0])
            lx = x0 + L.pad + cv2.getTextSize("OK  ", FONT, L.big, L.bold)[0][0]
            self._text(img, label, (lx, y0 + L.pad + big_h), L.text, ink, L.thin)
        else:
            y = y0 + 2 * L.pad + big_h
            for line in why:
                y += small_h
                self._text(img, line, (x0 + L.pad, y), L.small, ink, L.thin)
                y += inner_gap
        # Top-k rows: label and percentage, and a bar under them.
        text_h = cv2.getTextSize("Ag", FONT, L.text, L.thin)[0][1]
        y = y0 + head_h + L.pad
        for rank, p in enumerate(top):
            pct = "<1%" if p.prob < 0.005 else f"{p.prob * 100:.0f}%"
            pw_pct = cv2.getTextSize(pct, FONT, L.text, L.thin)[0][0]
            label = self._fit(_ascii(p.label), L.text, L.thin, inner - pw_pct - L.pad)
            base = y + text_h
            self._text(img, label, (x0 + L.pad, base), L.text, WHITE, L.thin)
            self._text(img, pct, (x0 + pw - L.pad - pw_pct, base), L.text, WHITE, L.thin)
            by = base + max(2, L.pad // 2)
            cv2.rectangle(img, (x0 + L.pad, by), (x0 + L.pad + inner - 1, by + L.bar_h - 1), BAR_BACK, -1)
            filled = int(round(inner * min(max(p.prob, 0.0), 1.0)))
            if filled > 0:
                cv2.rectangle(img, (x0 + L.pad, by), (x0 + L.pad + filled - 1, by + L.bar_h - 1),
                              colour if rank == 0 else GREY, -1)
            y += L.row_h

    def _note(self, img: np.ndarray, L: _Layout, text: str, colour) -> None:
        th = cv2.getTextSize("Ag", FONT, L.small, L.thin)[0][1]
        text = self._fit(text, L.small, L.thin, L.panel_w - 2 * L.pad)
        _darken(img, L.pad, L.pad, L.pad + L.panel_w, L.pad + th + 2 * L.pad)
        self._text(img, text, (2 * L.pad, L.pad + L.pad + th), L.small, colour, L.thin)

    def _model(self, img: np.ndarray, L: _Layout) -> None:
        w = img.shape[1]
        max_w = max(w // 3, 1)
        name = self._fit(self.model_name, L.small, L.thin, max_w)
        (nw, nh), _ = cv2.getTextSize(name, FONT, L.small, L.thin)
        y = L.pad
        if not self.trained:
            # Conspicuous on purpose: an untrained model's labels are noise.
            badge = "UNTRAINED"
            (bw, bh), _ = cv2.getTextSize(badge, FONT, L.big, L.bold)
            bx1 = w - L.pad
            bx0 = bx1 - bw - 2 * L.pad
            cv2.rectangle(img, (bx0, y), (bx1 - 1, y + bh + 2 * L.pad - 1), RED, -1)
            cv2.rectangle(img, (bx0, y), (bx1 - 1, y + bh + 2 * L.pad - 1), WHITE, L.thin)
            self._text(img, badge, (bx0 + L.pad, y + L.pad + bh), L.big, WHITE, L.bold)
            y += bh + 2 * L.pad
        x1 = w - L.pad
        x0 = x1 - nw - 2 * L.pad
        _darken(img, x0, y, x1, y + nh + 2 * L.pad)
        self._text(img, name, (x0 + L.pad, y + L.pad + nh), L.small, WHITE, L.thin)

    def _status(self, img: np.ndarray, L: _Layout, s: Status) -> None:
        h, w = img.shape[:2]
        lat = "-" if s.latency_ms != s.latency_ms else f"{s.latency_ms:.0f} ms"  # NaN: no result yet
        text = (f"camera {s.camera_fps:.1f} fps | inference {s.inference_fps:.1f} fps | "
                f"latency {lat} | dropped {s.dropped}")
        if s.message and not s.offline:
            text += f" | {_ascii(s.message)}"
        text = self._fit(text, L.small, L.thin, w - 4 * L.pad)
        (tw, th), base = cv2.getTextSize(text, FONT, L.small, L.thin)
        y1 = h - L.pad
        y0 = y1 - th - base - L.pad
        _darken(img, L.pad, y0, L.pad + tw + 2 * L.pad, y1)
        self._text(img, text, (2 * L.pad, y1 - base - L.pad // 2), L.small, WHITE, L.thin)

    def _banner(self, img: np.ndarray, L: _Layout, text: str, colour, cy: int, sub: str) -> None:
        h, w = img.shape[:2]
        thick = max(2, round(3 * L.unit))
        scale = L.huge
        (tw, th), _ = cv2.getTextSize(text, FONT, scale, thick)
        if tw > w - 4 * L.pad:  # a narrow frame: shrink to fit
            scale *= (w - 4 * L.pad) / tw
            (tw, th), _ = cv2.getTextSize(text, FONT, scale, thick)
        sub = self._fit(_ascii(sub), L.text, L.thin, w - 4 * L.pad) if sub else ""
        sh = cv2.getTextSize("Ag", FONT, L.text, L.thin)[0][1] + L.pad if sub else 0
        y0 = cy - th // 2 - 2 * L.pad
        y1 = cy + th // 2 + 2 * L.pad + sh
        _darken(img, 0, y0, w, y1)
        self._text(img, text, ((w - tw) // 2, cy + th // 2), scale, colour, thick)
        if sub:
            sw = cv2.getTextSize(sub, FONT, L.text, L.thin)[0][0]
            self._text(img, sub, ((w - sw) // 2, cy + th // 2 + sh + L.pad // 2), L.text, WHITE, L.thin)
