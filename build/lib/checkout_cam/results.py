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


@dataclass(frozen=True)
class InferenceResult:
    """What the inference worker says about one frame.

    ``timestamp`` is the frame's capture time (``time.monotonic()``), so
    capture-to-result latency is ``done - timestamp``. ``classification`` is
    None when inference failed on this frame (``error`` says why). ``reused``
    means motion gating saw no change and the previous classification was kept
    without running the model.
    """

    frame_id: int
    timestamp: float
    video_time: float | None
    classification: Classification | None
    inference_ms: float
    done: float = 0.0            # time.monotonic() when the result was ready
    reused: bool = False
    error: str | None = None

    def __post_init__(self) -> None:
        if (self.classification is None) == (self.error is None):
            raise ValueError(f"frame {self.frame_id}: a result has either a classification or an error")

    @property
    def latency_ms(self) -> float:
        return (self.done - self.timestamp) * 1e3 if self.done else float("nan")
