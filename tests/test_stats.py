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


def test_camera_fps_is_not_inflated_by_a_burst_of_buffered_frames():
    from checkout_cam.stats import FrameRateMeter, RateMeter
    burst = [10.0 + i * 0.001 for i in range(20)]            # what a stream buffered while being probed
    steady = [10.1 + i / 25 for i in range(1, 31)]           # then 25 fps for 1.2 s
    plain, robust = RateMeter(), FrameRateMeter()
    for t in burst + steady:
        plain.tick(t)
        robust.tick(t)
    now = steady[-1] + 0.01
    assert plain.rate(now) > 35  # the old reading
    assert abs(robust.rate(now) - 25) < 0.5


def test_frame_rate_of_a_steady_or_paired_camera():
    from checkout_cam.stats import FrameRateMeter
    m = FrameRateMeter()
    for i in range(50):
        m.tick(100 + i / 25)
    assert abs(m.rate(100 + 49 / 25) - 25) < 0.01
    pairs = FrameRateMeter()  # two frames handed over together every 80 ms: still 25 fps
    for i in range(50):
        pairs.tick(200 + (i // 2) * 0.08 + (i % 2) * 0.0005)
    assert abs(pairs.rate(200 + 24 * 0.08 + 0.001) - 25) < 0.5
    assert FrameRateMeter().rate(5.0) == 0.0
