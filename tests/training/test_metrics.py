import cv2
import numpy as np
import pytest

from checkout_cam.training.metrics import (
    ReviewRule, confusion_matrix, evaluate_probabilities, risk_coverage, suggest_min_confidence, top_two)
from checkout_cam.training.report import draw_confusion, format_text

LABELS = ["a", "b", "c", "d"]
# Seven photos worked out by hand with min_confidence 0.55, min_margin 0.15:
PROBS = np.array([
    [0.90, 0.04, 0.03, 0.03],   # true a: right, sure                      -> not flagged
    [0.50, 0.40, 0.06, 0.04],   # true a: right, top-1 below 0.55          -> flagged
    [0.56, 0.42, 0.01, 0.01],   # true a: right, margin 0.14 below 0.15    -> flagged
    [0.70, 0.20, 0.06, 0.04],   # true b: wrong (says a), sure             -> not flagged
    [0.10, 0.50, 0.40, 0.00],   # true c: wrong (says b), in top-3         -> flagged
    [0.20, 0.10, 0.05, 0.65],   # true d: right                            -> not flagged
    [0.30, 0.36, 0.05, 0.29],   # true c: wrong (says b), not in top-3     -> flagged
])
TARGETS = np.array([0, 0, 0, 1, 2, 3, 2])
RULE = ReviewRule(min_confidence=0.55, min_margin=0.15)
COARSE = {"a": "X", "b": "X", "c": "Y", "d": "Z"}


def test_hand_made_case():
    r = evaluate_probabilities(PROBS, TARGETS, LABELS, RULE, trained=True, target_accuracy=0.95, coarse=COARSE)
    assert r["n"] == 7
    assert r["top1"] == pytest.approx(4 / 7)
    assert r["top3"] == pytest.approx(6 / 7)
    assert r["flagged_share"] == pytest.approx(4 / 7)
    assert r["unflagged_accuracy"] == pytest.approx(2 / 3)
    assert r["errors_caught"] == pytest.approx(2 / 3)
    assert r["unflagged_errors"] == 1
    assert r["per_class"] == {"a": 1.0, "b": 0.0, "c": 0.0, "d": 1.0}
    assert r["per_class_n"] == {"a": 3, "b": 1, "c": 2, "d": 1}
    # Saying a for b is right at the coarse level (both X); b for c is not.
    assert r["coarse_top1"] == pytest.approx(5 / 7)
    # Unflagged at any threshold up to 0.65 are photos 1, 4, 6 (2 of 3 right); above 0.70 only photo 1.
    assert r["suggested_min_confidence"] == pytest.approx(0.705)
    assert r["suggestion"]["flagged_share"] == pytest.approx(6 / 7)
    assert r["suggestion"]["unflagged_accuracy"] == 1.0


def test_suggestion_is_the_lowest_threshold_that_reaches_the_target():
    pred, p1, p2 = top_two(PROBS)
    correct = pred == TARGETS
    assert suggest_min_confidence(p1, p2, correct, 0.15, target=0.6)["min_confidence"] == 0.0
    assert suggest_min_confidence(p1, p2, correct, 0.15, target=0.95)["min_confidence"] == pytest.approx(0.705)
    wrong_when_sure = np.zeros(7, bool)
    assert suggest_min_confidence(p1, p2, wrong_when_sure, 0.15, target=0.5) is None
    assert suggest_min_confidence(p1, p2, correct, 0.15, target=0.6, trained=False) is None


def test_risk_coverage_rows():
    pred, p1, p2 = top_two(PROBS)
    rows = {row["min_confidence"]: row for row in risk_coverage(p1, p2, pred == TARGETS, 0.15)}
    assert rows[0.0]["coverage"] == pytest.approx(3 / 7) and rows[0.0]["unflagged_accuracy"] == pytest.approx(2 / 3)
    assert rows[0.7]["coverage"] == pytest.approx(2 / 7) and rows[0.7]["unflagged_accuracy"] == pytest.approx(1 / 2)
    assert rows[0.8]["coverage"] == pytest.approx(1 / 7) and rows[0.8]["risk"] == 0.0
    assert rows[0.95]["coverage"] == 0.0 and rows[0.95]["unflagged_accuracy"] is None
    assert rows[0.95]["errors_caught"] == 1.0


def test_untrained_model_flags_everything():
    r = evaluate_probabilities(PROBS, TARGETS, LABELS, RULE, trained=False)
    assert r["flagged_share"] == 1.0 and r["unflagged_accuracy"] is None and r["errors_caught"] == 1.0
    assert r["suggested_min_confidence"] is None
    assert "UNTRAINED" in format_text({**r, "model": "m.pt", "data": "d", "skipped": 0})


def test_rule_edges_match_the_live_policy():
    # As ReviewPolicy.reasons_for: a value at a threshold passes, to within 1e-9, so
    # 0.6 - 0.45 (0.14999999999999997 in floats) is a margin of 0.15.
    rule = ReviewRule(0.6, 0.15)
    top1 = np.array([0.6, 0.5999, 0.6, 0.6])
    top2 = np.array([0.45, 0.1, 0.46, 0.4])
    assert rule.flags(top1, top2).tolist() == [False, True, True, False]


def test_confusion_matrix_and_picture():
    cm = confusion_matrix(TARGETS, PROBS.argmax(1), 4)
    assert cm.tolist() == [[3, 0, 0, 0], [1, 0, 0, 0], [0, 2, 0, 0], [0, 0, 0, 1]]
    img = draw_confusion(cm, LABELS, "hand-made")
    assert img.ndim == 3 and img.dtype == np.uint8
    ok, png = cv2.imencode(".png", img)
    assert ok and cv2.imdecode(png, cv2.IMREAD_COLOR).shape == img.shape
