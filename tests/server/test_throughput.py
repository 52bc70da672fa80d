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
