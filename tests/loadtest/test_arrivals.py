"""Arrival schedules: exact constant spacing, Poisson statistics, bounds and determinism."""

from __future__ import annotations

import numpy as np
import pytest

from loadtest.arrivals import arrival_offsets, concat_schedules


def rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def test_constant_is_evenly_spaced_from_zero() -> None:
    offsets = arrival_offsets(4.0, 2.5, "constant", rng())
    np.testing.assert_allclose(offsets, np.arange(10) * 0.25)


def test_constant_never_reaches_the_duration() -> None:
    offsets = arrival_offsets(2.0, 3.0, "constant", rng())
    assert offsets.tolist() == [0.0, 0.5, 1.0, 1.5, 2.0, 2.5]


def test_max_requests_caps_the_schedule() -> None:
    assert len(arrival_offsets(100.0, 10.0, "constant", rng(), max_requests=7)) == 7
    assert len(arrival_offsets(100.0, 10.0, "poisson", rng(), max_requests=7)) == 7


def test_poisson_has_the_rate_and_exponential_gaps() -> None:
    rate, duration = 50.0, 200.0
    offsets = arrival_offsets(rate, duration, "poisson", rng(3))
    assert np.all(np.diff(offsets) > 0) and offsets[0] > 0 and offsets[-1] < duration
    # 10000 expected arrivals, standard deviation 100: 5 sigma is far outside a fixed seed's luck.
    assert abs(len(offsets) - rate * duration) < 500
    gaps = np.diff(offsets)
    assert gaps.mean() == pytest.approx(1 / rate, rel=0.03)
    assert gaps.std() / gaps.mean() == pytest.approx(1.0, abs=0.05)  # exponential: coefficient of variation 1


def test_poisson_is_deterministic_in_the_seed() -> None:
    first = arrival_offsets(5.0, 20.0, "poisson", rng(7))
    np.testing.assert_array_equal(first, arrival_offsets(5.0, 20.0, "poisson", rng(7)))
    assert not np.array_equal(first[:10], arrival_offsets(5.0, 20.0, "poisson", rng(8))[:10])


def test_poisson_pattern_stretches_with_the_rate() -> None:
    slow = arrival_offsets(1.0, 50.0, "poisson", rng(1))
    fast = arrival_offsets(2.0, 50.0, "poisson", rng(1))
    count = min(len(slow), len(fast))
    np.testing.assert_allclose(fast[: count // 2], slow[: count // 2] / 2)


@pytest.mark.parametrize(
    ("rate", "duration", "process", "message"),
    [
        (0.0, 1.0, "constant", "rate must be a positive"),
        (-1.0, 1.0, "poisson", "rate must be a positive"),
        (float("nan"), 1.0, "poisson", "rate must be a positive"),
        (1.0, 0.0, "constant", "duration must be a positive"),
        (1.0, 1.0, "burst", "arrival process must be one of"),
        (1e6, 1e4, "constant", "at most 1000000"),
    ],
)
def test_invalid_schedules_are_refused(rate: float, duration: float, process: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        arrival_offsets(rate, duration, process, rng())


def test_concat_schedules_puts_phases_end_to_end() -> None:
    joined = concat_schedules((np.array([0.0, 0.5]), 1.0), (np.array([0.25]), 2.0), (np.array([0.0]), 1.0))
    assert joined.tolist() == [0.0, 0.5, 1.25, 3.0]
