"""Arrival schedules for open-loop load: when each request is due, fixed before the first one is sent.

Open loop means the offered load does not depend on the server: request *k* is due at
``start + offsets[k]`` whether or not earlier requests have been answered, so a slow server faces
the same arrivals as a fast one (no coordinated omission). Two processes:

- ``constant``: evenly spaced, ``offsets[k] = k / rate``.
- ``poisson``: independent exponential gaps with mean ``1 / rate`` (memoryless arrivals, the usual
  model of many independent clients). The gaps are drawn at unit rate and divided by the rate, so
  one seed gives the same pattern, stretched, at every rate of a sweep.

Schedules are bounded by a duration and optionally by a request count.
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np

ArrivalProcess = Literal["constant", "poisson"]
ARRIVAL_PROCESSES: tuple[str, ...] = ("constant", "poisson")

#: A hard cap on one schedule, so a typo in a rate (10000 instead of 10) cannot queue millions of requests.
MAX_SCHEDULED_REQUESTS = 1_000_000


def check_process(process: str) -> ArrivalProcess:
    if process not in ARRIVAL_PROCESSES:
        raise ValueError(f"arrival process must be one of {ARRIVAL_PROCESSES}, got {process!r}")
    return process  # type: ignore[return-value]


def arrival_offsets(
    rate_rps: float,
    duration_s: float,
    process: str,
    rng: np.random.Generator,
    max_requests: int | None = None,
) -> np.ndarray:
    """Due times in seconds from the start, sorted, all in ``[0, duration_s)``, at most ``max_requests``.

    ``rng`` is only used for ``poisson``. The first Poisson arrival is one gap after the start (as a
    Poisson process started at 0), the first constant arrival is at 0.
    """
    check_process(process)
    if not math.isfinite(rate_rps) or rate_rps <= 0:
        raise ValueError(f"rate must be a positive number of requests per second, got {rate_rps}")
    if not math.isfinite(duration_s) or duration_s <= 0:
        raise ValueError(f"duration must be a positive number of seconds, got {duration_s}")
    if max_requests is not None and max_requests < 0:
        raise ValueError(f"max_requests must be at least 0, got {max_requests}")
    expected = rate_rps * duration_s
    limit = MAX_SCHEDULED_REQUESTS if max_requests is None else min(max_requests, MAX_SCHEDULED_REQUESTS)
    if max_requests is None and expected > MAX_SCHEDULED_REQUESTS:
        raise ValueError(
            f"rate {rate_rps}/s for {duration_s} s schedules about {expected:.0f} requests; "
            f"at most {MAX_SCHEDULED_REQUESTS} are allowed without max_requests"
        )
    if process == "constant":
        count = min(math.ceil(expected), limit)
        offsets = np.arange(count, dtype=np.float64) / rate_rps
    else:
        offsets = _poisson_offsets(rate_rps, duration_s, rng, limit)
    return offsets[offsets < duration_s][:limit]


def _poisson_offsets(rate_rps: float, duration_s: float, rng: np.random.Generator, limit: int) -> np.ndarray:
    """Cumulative unit-rate exponential gaps / rate, drawn in chunks until the duration or the limit is passed."""
    expected = rate_rps * duration_s
    # Draw a little more than expected (mean + 6 standard deviations) so one chunk almost always suffices.
    chunk = max(16, int(expected + 6 * math.sqrt(expected) + 16))
    total = 0.0
    pieces: list[np.ndarray] = []
    drawn = 0
    while total < duration_s and drawn < limit:
        times = total + np.cumsum(rng.standard_exponential(chunk)) / rate_rps
        pieces.append(times)
        drawn += chunk
        total = float(times[-1])
    return np.concatenate(pieces) if pieces else np.empty(0)


def concat_schedules(*phases: tuple[np.ndarray, float]) -> np.ndarray:
    """Join schedules end to end on one timeline: each ``(offsets, phase_duration_s)`` starts where the last ended."""
    start = 0.0
    parts = []
    for offsets, duration_s in phases:
        parts.append(np.asarray(offsets, dtype=np.float64) + start)
        start += duration_s
    return np.concatenate(parts) if parts else np.empty(0)
