"""server/throughput.py: EWMA of FLOP/s per width and of request overhead."""

from __future__ import annotations

import pytest

from server.throughput import ThroughputTracker


def test_seed_then_ewma():
    tracker = ThroughputTracker(smoothing=0.5)
    tracker.seed(1.0, 100.0)
    tracker.observe(1.0, flops=300, seconds=1.0)
    assert tracker.flops_per_s() == {1.0: 200.0}
    tracker.observe(0.5, flops=50, seconds=1.0)  # first observation of a width is taken as is
    assert tracker.flops_per_s()[0.5] == 50.0
    tracker.observe(0.5, flops=0, seconds=1.0)  # empty batches are ignored
    assert tracker.flops_per_s()[0.5] == 50.0


def test_overhead():
    tracker = ThroughputTracker(smoothing=0.25)
    assert tracker.overhead_s == 0.0
    tracker.observe_overhead(0.1)
    tracker.observe_overhead(0.5)
    assert tracker.overhead_s == pytest.approx(0.2)


def test_validation():
    with pytest.raises(ValueError, match="smoothing"):
        ThroughputTracker(0.0)
    with pytest.raises(ValueError, match="positive"):
        ThroughputTracker(0.5).seed(1.0, 0.0)


def test_calibration_starts_at_one_learns_the_ratio_and_adds_its_spread():
    tracker = ThroughputTracker(0.5)
    assert tracker.calibration == 1.0
    tracker.observe_prediction(predicted_s=1.0, measured_s=2.0)
    assert tracker.calibration == 2.0  # the first sample is taken as is
    tracker.observe_prediction(predicted_s=1.0, measured_s=2.0)
    assert tracker.calibration == 2.0  # no spread yet
    tracker.observe_prediction(predicted_s=1.0, measured_s=1.0)
    # ratio 2 + 0.5 * (1 - 2) = 1.5; deviation 0 + 0.5 * (1 - 0) = 0.5; factor 1.5 + 2 * 0.5
    assert tracker.calibration == 2.5


def test_calibration_is_bounded_and_ignores_sub_millisecond_predictions():
    tracker = ThroughputTracker(1.0)
    tracker.observe_prediction(predicted_s=0.0005, measured_s=5.0)
    assert tracker.calibration == 1.0
    tracker.observe_prediction(predicted_s=0.01, measured_s=100.0)
    assert tracker.calibration == 4.0
    tracker.observe_prediction(predicted_s=10.0, measured_s=0.001)
    assert tracker.calibration == 4.0  # ratio 0.25 plus its (large) deviation, capped
