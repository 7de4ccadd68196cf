"""How good a model is on labelled photos, and how safe the cashier-review flag makes it.

Pure numbers from a probability matrix and true class indices, so they can be
checked on hand-made cases. The review flag is the live review policy's rule,
applied to each photo on its own: flagged when the top-1 probability is below
``review.min_confidence`` or top-1 minus top-2 is below ``review.min_margin``,
and always for an untrained model. Live mode averages several frames first
(``review.smoothing_window``), which per-photo evaluation cannot do.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from checkout_cam.review import below

logger = logging.getLogger(__name__)

RISK_COVERAGE_THRESHOLDS = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99)
SUGGESTION_STEP = 0.005


@dataclass(frozen=True)
class ReviewRule:
    min_confidence: float
    min_margin: float

    def flags(self, top1: np.ndarray, top2: np.ndarray, trained: bool = True) -> np.ndarray:
        """True where the cashier is asked to look (the live policy's rule, per image)."""
        top1 = np.asarray(top1, dtype=np.float64)
        if not trained:
            return np.ones(top1.shape, dtype=bool)
        margin = top1 - np.asarray(top2, dtype=np.float64)
        return below(top1, self.min_confidence) | below(margin, self.min_margin)


def _ratio(num: float, den: float) -> float | None:
    return None if den == 0 else float(num) / float(den)


def review_stats(correct: np.ndarray, flagged: np.ndarray) -> dict:
    """Share flagged, accuracy of what is not flagged, and share of the errors the flag catches."""
    correct = np.asarray(correct, dtype=bool)
    flagged = np.asarray(flagged, dtype=bool)
    n = len(correct)
    unflagged = ~flagged
    errors = ~correct
    return {
        "flagged_share": _ratio(flagged.sum(), n),
        "unflagged_accuracy": _ratio((correct & unflagged).sum(), unflagged.sum()),
        "errors_caught": _ratio((errors & flagged).sum(), errors.sum()),
        "flagged": int(flagged.sum()),
        "unflagged_errors": int((errors & unflagged).sum()),
    }


def top_two(probs: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(predicted index, top-1 probability, top-2 probability) per row."""
    probs = np.asarray(probs, dtype=np.float64)
    pred = probs.argmax(axis=1)
    if probs.shape[1] == 1:
        return pred, probs[:, 0], np.zeros(len(probs))
    part = np.partition(probs, -2, axis=1)
    return pred, part[:, -1], part[:, -2]


def risk_coverage(top1: np.ndarray, top2: np.ndarray, correct: np.ndarray, min_margin: float,
                  trained: bool = True,
                  thresholds: Sequence[float] = RISK_COVERAGE_THRESHOLDS) -> list[dict]:
    """For each min_confidence (min_margin fixed): coverage (share not flagged) and its accuracy."""
    rows = []
    for t in thresholds:
        flagged = ReviewRule(t, min_margin).flags(top1, top2, trained)
        s = review_stats(correct, flagged)
        acc = s["unflagged_accuracy"]
        rows.append({"min_confidence": float(t), "coverage": 1.0 - s["flagged_share"],
                     "unflagged_accuracy": acc, "risk": None if acc is None else 1.0 - acc,
                     "errors_caught": s["errors_caught"]})
    return rows


def suggest_min_confidence(top1: np.ndarray, top2: np.ndarray, correct: np.ndarray, min_margin: float,
                           target: float, trained: bool = True,
                           step: float = SUGGESTION_STEP) -> dict | None:
    """The lowest min_confidence (on a 0.005 grid) whose unflagged items reach ``target`` accuracy.

    Lowest, because every step up asks the cashier about more items. None when
    no threshold gets there (or the model is untrained: everything is flagged).
    """
    if not trained:
        return None
    for i in range(int(round(1 / step)) + 1):
        t = round(i * step, 6)
        s = review_stats(correct, ReviewRule(t, min_margin).flags(top1, top2))
        if s["unflagged_accuracy"] is not None and s["unflagged_accuracy"] >= target - 1e-12:
            return {"min_confidence": t, "flagged_share": s["flagged_share"],
                    "unflagged_accuracy": s["unflagged_accuracy"], "errors_caught": s["errors_caught"]}
    return None


def confusion_matrix(targets: np.ndarray, preds: np.ndarray, num_classes: int) -> np.ndarray:
    """Counts: rows are true classes, columns predicted ones."""
    cm = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(cm, (np.asarray(targets), np.asarray(preds)), 1)
    return cm


def evaluate_probabilities(probs: np.ndarray, targets: np.ndarray, labels: Sequence[str], rule: ReviewRule,
                           trained: bool = True, target_accuracy: float = 0.95,
                           coarse: dict[str, str] | None = None) -> dict:
    """Every figure the evaluate command reports, from (N, C) probabilities and true indices."""
    probs = np.asarray(probs, dtype=np.float64)
    targets = np.asarray(targets, dtype=np.int64)
    n, c = probs.shape
    if n == 0:
        raise ValueError("no predictions to evaluate")
    if len(labels) != c:
        raise ValueError(f"{c} probability columns but {len(labels)} labels")
    pred, p1, p2 = top_two(probs)
    correct = pred == targets
    k = min(3, c)
    topk = np.argsort(-probs, axis=1, kind="stable")[:, :k]
    top3 = (topk == targets[:, None]).any(axis=1)
    flagged = rule.flags(p1, p2, trained)
    review = review_stats(correct, flagged)
    suggestion = suggest_min_confidence(p1, p2, correct, rule.min_margin, target_accuracy, trained)

    per_class, per_class_n = {}, {}
    for i, name in enumerate(labels):
        mask = targets == i
        if mask.any():
            per_class[name] = float(correct[mask].mean())
            per_class_n[name] = int(mask.sum())

    result = {
        "n": int(n),
        "top1": float(correct.mean()),
        "top3": float(top3.mean()),
        "trained": bool(trained),
        "min_confidence": rule.min_confidence,
        "min_margin": rule.min_margin,
        "flagged_share": review["flagged_share"],
        "unflagged_accuracy": review["unflagged_accuracy"],
        "errors_caught": review["errors_caught"],
        "flagged": review["flagged"],
        "unflagged_errors": review["unflagged_errors"],
        "target_accuracy": target_accuracy,
        "suggested_min_confidence": None if suggestion is None else suggestion["min_confidence"],
        "suggestion": suggestion,
        "risk_coverage": risk_coverage(p1, p2, correct, rule.min_margin, trained),
        "per_class": per_class,
        "per_class_n": per_class_n,
        "classes_without_images": [name for i, name in enumerate(labels) if name not in per_class],
        "mean_top1_prob": float(p1.mean()),
    }
    if coarse is not None:
        missing = [name for name in labels if name not in coarse]
        if missing:
            raise ValueError(f"the coarse mapping lacks {len(missing)} class(es), e.g. {missing[0]!r}")
        coarse_of = np.array([coarse[name] for name in labels], dtype=object)
        result["coarse_top1"] = float((coarse_of[pred] == coarse_of[targets]).mean())
    return result


def per_image(probs: np.ndarray, targets: np.ndarray, rule: ReviewRule, trained: bool = True) -> list[dict]:
    """One row per image: prediction, its probability and margin, flagged, correct."""
    pred, p1, p2 = top_two(probs)
    flagged = rule.flags(p1, p2, trained)
    return [{"target": int(t), "pred": int(p), "prob": float(a), "margin": float(a - b),
             "flagged": bool(f), "correct": bool(p == t)}
            for t, p, a, b, f in zip(np.asarray(targets), pred, p1, p2, flagged)]
