import pytest

from checkout_cam.results import Classification, Prediction


def test_classification_is_sorted_and_validated():
    c = Classification((Prediction(3, "a", 0.7), Prediction(1, "b", 0.2), Prediction(0, "c", 0.1)))
    assert c.best.label == "a"
    assert c.margin == pytest.approx(0.5)
    assert [p.index for p in c.top_k(2)] == [3, 1]
    assert c.to_list()[0] == {"index": 3, "label": "a", "prob": 0.7}
    with pytest.raises(ValueError, match="sorted"):
        Classification((Prediction(0, "a", 0.1), Prediction(1, "b", 0.5)))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        Prediction(0, "a", 1.5)
    with pytest.raises(ValueError):
        Classification(())


def test_inference_result_has_a_classification_or_an_error():
    from checkout_cam.results import InferenceResult
    c = Classification((Prediction(0, "a", 0.9),))
    r = InferenceResult(frame_id=1, timestamp=10.0, video_time=None, classification=c, inference_ms=5.0, done=10.02)
    assert r.latency_ms == pytest.approx(20.0)
    assert InferenceResult(2, 0.0, None, None, 0.0, error="boom").error == "boom"
    with pytest.raises(ValueError):
        InferenceResult(3, 0.0, None, None, 0.0)
    with pytest.raises(ValueError):
        InferenceResult(3, 0.0, None, c, 0.0, error="both")
