"""What the classifier says about one image: the top-k labels with probabilities."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Prediction:
    index: int
    label: str
    prob: float

    def __post_init__(self) -> None:
        if not 0.0 <= self.prob <= 1.0 + 1e-6:
            raise ValueError(f"probability must be in [0, 1], got {self.prob} for {self.label!r}")

    def to_dict(self) -> dict:
        return {"index": self.index, "label": self.label, "prob": round(float(self.prob), 6)}


@dataclass(frozen=True)
class Classification:
    """Top predictions for one image, most probable first."""

    top: tuple[Prediction, ...]

    def __post_init__(self) -> None:
        if not self.top:
            raise ValueError("a classification needs at least one prediction")
        probs = [p.prob for p in self.top]
        if any(a < b - 1e-9 for a, b in zip(probs, probs[1:])):
            raise ValueError(f"predictions must be sorted by probability, got {probs}")

    @property
    def best(self) -> Prediction:
        return self.top[0]

    @property
    def margin(self) -> float:
        """Top-1 minus top-2 probability (top-1 alone when only one is kept)."""
        return self.top[0].prob - (self.top[1].prob if len(self.top) > 1 else 0.0)

    def top_k(self, k: int) -> tuple[Prediction, ...]:
        return self.top[:k]

    def to_list(self) -> list[dict]:
        return [p.to_dict() for p in self.top]
