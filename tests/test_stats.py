import math

from checkout_cam.stats import LatencyHistogram, Percentiles


def test_histogram_percentiles_cover_the_whole_run_within_one_bin():
    h = LatencyHistogram(max_ms=1000, bin_ms=0.5)
    values = [float(v) for v in range(1, 1001)] * 3  # 3000 samples: more than any sliding window keeps
    for v in values:
        h.add(v)
    assert h.count == 3000
    for q in (50, 95, 99):
        exact = sorted(values)[int(round(q / 100 * len(values))) - 1]
        assert exact <= h.get(q) <= exact + 0.5 + 1e-9


def test_histogram_clamps_outliers_and_ignores_nan():
    h = LatencyHistogram(max_ms=100, bin_ms=1)
    assert math.isnan(h.get(50))
    h.add(float("nan"))
    assert h.count == 0
    h.add(-3)      # a clock oddity counts as the fastest bin, never an index error
    h.add(10_000)  # beyond max_ms lands in the overflow bin
    assert h.count == 2
    assert h.get(1) == 1
    assert h.get(100) > 100


def test_percentiles_window_keeps_only_recent_samples():
    p = Percentiles(size=10)
    for v in range(100):
        p.add(float(v))
    assert p.get(0) == 90 and p.get(100) == 99
