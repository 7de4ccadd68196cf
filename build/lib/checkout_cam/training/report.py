"""The evaluation report: readable text, a confusion-matrix PNG drawn with OpenCV, CSV and JSON files."""

from __future__ import annotations

import csv
import json
import logging
import os
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

logger = logging.getLogger(__name__)

FONT = cv2.FONT_HERSHEY_SIMPLEX
PER_IMAGE_NOTE = ("per photo, without the temporal smoothing live mode applies "
                  "(review.smoothing_window), so live flags are fewer and steadier")


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{x * 100:.1f}%"


def format_text(r: dict, worst: int = 5) -> str:
    """The readable summary: accuracy, then what the review flag means for the cashier."""
    lines = [f"model {r['model']}" + ("" if r["trained"] else "  [UNTRAINED: labels are meaningless]"),
             f"data  {r['data']}: {r['n']} images"
             + (f" ({r['skipped']} unreadable skipped)" if r.get("skipped") else ""),
             "",
             f"top-1 accuracy  {_pct(r['top1'])}",
             f"top-3 accuracy  {_pct(r['top3'])}"]
    if "coarse_top1" in r:
        lines.append(f"coarse top-1    {_pct(r['coarse_top1'])}")
    lines += ["",
              f"cashier review at min_confidence {r['min_confidence']:g}, min_margin {r['min_margin']:g} "
              f"({PER_IMAGE_NOTE}):"]
    if not r["trained"]:
        lines.append("  the model is UNTRAINED: the review policy flags every item")
    lines += [f"  asked to look at       {_pct(r['flagged_share'])} of items ({r['flagged']} of {r['n']})",
              f"  unflagged items right  {_pct(r['unflagged_accuracy'])}"
              f"  (wrong and not flagged: {r['unflagged_errors']} of {r['n']})",
              f"  errors caught by flag  {_pct(r['errors_caught'])}",
              "",
              f"risk-coverage (min_margin {r['min_margin']:g} kept):",
              "  min_confidence  not flagged  accuracy unflagged  errors caught"]
    for row in r["risk_coverage"]:
        lines.append(f"  {row['min_confidence']:>14.2f}  {_pct(row['coverage']):>11}  "
                     f"{_pct(row['unflagged_accuracy']):>18}  {_pct(row['errors_caught']):>13}")
    s = r.get("suggestion")
    target = _pct(r["target_accuracy"])
    if s is not None:
        lines += ["", f"suggested review.min_confidence for {target} accuracy on unflagged items: "
                      f"{s['min_confidence']:g} (flags {_pct(s['flagged_share'])}, unflagged accuracy "
                      f"{_pct(s['unflagged_accuracy'])}, {r['n']} images: a rough estimate)"]
    elif r["trained"]:
        lines += ["", f"no min_confidence reaches {target} accuracy on unflagged items: more photos per "
                      f"class or longer training are needed before items can pass unchecked"]
    if r["per_class"]:
        ranked = sorted(r["per_class"].items(), key=lambda kv: (kv[1], kv[0]))[:worst]
        lines += ["", f"weakest classes (of {len(r['per_class'])}):"]
        lines += [f"  {name:<32} {_pct(acc):>6} of {r['per_class_n'][name]}" for name, acc in ranked]
    return "\n".join(lines)


def draw_confusion(cm: np.ndarray, labels: Sequence[str], title: str) -> np.ndarray:
    """Row-normalized confusion matrix as a BGR image, with class names on both axes."""
    c = len(labels)
    cell = int(np.clip(1000 // max(c, 1), 12, 48))
    scale = min(cell * 0.7 / 22.0, 0.5)   # HERSHEY_SIMPLEX is ~22 px tall at scale 1
    thick = 1
    text_w = max(cv2.getTextSize(str(name), FONT, scale, thick)[0][0] for name in labels) + 8
    rows = cm.sum(axis=1, keepdims=True)
    share = np.divide(cm, rows, out=np.zeros(cm.shape, dtype=np.float64), where=rows > 0)

    # Cells: white at 0, through the colour map as the share of the true class grows.
    colours = cv2.applyColorMap((255 - share * 255).astype(np.uint8), cv2.COLORMAP_BONE)
    colours[cm == 0] = 255
    grid = cv2.resize(colours, (c * cell, c * cell), interpolation=cv2.INTER_NEAREST)
    for i in range(c + 1):
        cv2.line(grid, (i * cell, 0), (i * cell, c * cell), (220, 220, 220), 1)
        cv2.line(grid, (0, i * cell), (c * cell, i * cell), (220, 220, 220), 1)

    if cell >= 24:   # room for the counts themselves
        for (i, j), count in np.ndenumerate(cm):
            if count:
                text = str(int(count))
                (tw, th), _ = cv2.getTextSize(text, FONT, scale, thick)
                ink = (255, 255, 255) if share[i, j] > 0.5 else (0, 0, 0)
                cv2.putText(grid, text, (j * cell + (cell - tw) // 2, i * cell + (cell + th) // 2),
                            FONT, scale, ink, thick, cv2.LINE_AA)

    def names_strip() -> np.ndarray:
        strip = np.full((c * cell, text_w, 3), 255, np.uint8)
        for i, name in enumerate(labels):
            (w, h), _ = cv2.getTextSize(str(name), FONT, scale, thick)
            y = i * cell + (cell + h) // 2
            cv2.putText(strip, str(name), (4, y), FONT, scale, (0, 0, 0), thick, cv2.LINE_AA)
        return strip

    left = names_strip()
    # Rotated counter-clockwise: each name starts just above its column and reads upwards.
    top = cv2.rotate(names_strip(), cv2.ROTATE_90_COUNTERCLOCKWISE)
    title_h = 40
    pad = 10
    h = title_h + text_w + c * cell + pad
    w = max(text_w + c * cell + pad, 640)
    img = np.full((h, w, 3), 255, np.uint8)
    img[title_h:title_h + text_w, text_w:text_w + c * cell] = top
    img[title_h + text_w:title_h + text_w + c * cell, :text_w] = left
    img[title_h + text_w:title_h + text_w + c * cell, text_w:text_w + c * cell] = grid
    cv2.putText(img, title, (8, 18), FONT, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
    cv2.putText(img, "rows: true class, columns: predicted; darker = larger share of the row",
                (8, 34), FONT, 0.4, (60, 60, 60), 1, cv2.LINE_AA)
    return img


def write_report(directory: str | Path, result: dict, cm: np.ndarray, labels: Sequence[str],
                 images: Sequence[dict]) -> list[Path]:
    """metrics.json, report.txt, confusion.png, per_class.csv, risk_coverage.csv, predictions.csv."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    written = []

    def text_file(name: str, text: str) -> None:
        path = d / name
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
        written.append(path)

    text_file("metrics.json", json.dumps(result, indent=1) + "\n")
    text_file("report.txt", format_text(result, worst=len(labels)) + "\n")

    png = d / "confusion.png"
    title = f"{result['model']} on {result['data']}: top-1 {_pct(result['top1'])}, n={result['n']}"
    # Only classes that occur (as truth or prediction): a 1000-class model on 80 products
    # would otherwise draw a 12000-pixel square of empty rows.
    present = np.flatnonzero(cm.sum(axis=0) + cm.sum(axis=1))
    picture = draw_confusion(cm[np.ix_(present, present)], [labels[i] for i in present], title)
    if not cv2.imwrite(str(png), picture):
        logger.warning("could not write %s", png)
    else:
        written.append(png)

    def csv_file(name: str, header: list[str], rows: list[list]) -> None:
        path = d / name
        with open(path, "w", newline="", encoding="utf-8") as f:
            w = csv.writer(f)
            w.writerow(header)
            w.writerows(rows)
        written.append(path)

    rows = []
    for i, name in enumerate(labels):
        n = int(cm[i].sum())
        if n == 0:
            continue
        off = cm[i].copy()
        off[i] = 0
        confused = labels[int(off.argmax())] if off.any() else ""
        rows.append([name, n, f"{cm[i, i] / n:.4f}", confused, int(off.max()) if off.any() else 0])
    csv_file("per_class.csv", ["class", "images", "accuracy", "most_confused_with", "times"], rows)
    csv_file("risk_coverage.csv", ["min_confidence", "coverage", "unflagged_accuracy", "errors_caught"],
             [[r["min_confidence"], r["coverage"], r["unflagged_accuracy"], r["errors_caught"]]
              for r in result["risk_coverage"]])
    csv_file("predictions.csv", ["image", "true", "predicted", "prob", "margin", "flagged", "correct"],
             [[im["image"], labels[im["target"]], labels[im["pred"]], f"{im['prob']:.4f}",
               f"{im['margin']:.4f}", int(im["flagged"]), int(im["correct"])] for im in images])
    return written
