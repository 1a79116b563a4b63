from runctl.agent.deadline import DEFAULT_THROUGHPUT, SAFETY_MARGIN_S, UPLOAD_OVERHEAD_S, ThroughputMeter, kill_time


def test_without_deadline_the_grace_period_stands():
    assert kill_time(100.0, 90.0, None, 10**9, 1.0) == 190.0


def test_deadline_far_away_keeps_the_grace_period():
    assert kill_time(100.0, 30.0, 100.0 + 120, 0, DEFAULT_THROUGHPUT) == 130.0


def test_grace_is_cut_to_leave_time_for_the_upload():
    # 1 GB at 100 MB/s takes 10 s (+ overhead + margin) before a deadline 120 s away.
    at = kill_time(0.0, 115.0, 120.0, 10**9, 100e6)
    assert at == 120.0 - 10.0 - UPLOAD_OVERHEAD_S - SAFETY_MARGIN_S


def test_never_before_now_even_when_the_upload_cannot_make_it():
    assert kill_time(50.0, 90.0, 60.0, 10**12, 1e6) == 50.0


def test_meter_ignores_small_samples_and_smooths_large_ones():
    meter = ThroughputMeter()
    meter.record(1000, 0.001)
    assert not meter.measured and meter.estimate == DEFAULT_THROUGHPUT
    meter.record(100 << 20, 1.0)
    assert meter.measured and meter.estimate == 100 << 20
    meter.record(100 << 20, 2.0)
    assert meter.estimate == 0.5 * (50 << 20) + 0.5 * (100 << 20)
