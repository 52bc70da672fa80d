"""Full-width capacity: how many workload requests per second the server completes at width 1.0.

This is the yardstick for the sweep (rates such as ``2x``) and the overload run. It is measured
closed-loop on purpose: ``concurrency`` workers each send their next request as soon as the previous
answer arrives, which keeps the server saturated without building an unbounded queue. Every request
carries ``X-AnySR-Budget: width=1.0`` (the workload's own budget and deadline headers are dropped),
so the figure is the same whatever policy the server runs.

The estimate ignores the first wave (the first ``concurrency`` completions, and anything before
``warmup_s``), then counts completions until both ``duration_s`` has passed and ``min_completions``
have been seen, so a slow server is measured over enough requests rather than over an empty window;
``max_s`` bounds the whole measurement. Requests still running at the end get a grace period of
three median latencies (at most ``MAX_GRACE_S``) to finish, and are cancelled after it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import time
from dataclasses import dataclass
from typing import Any

from loadtest.client import new_record, send_one
from loadtest.plan import plan_requests
from loadtest.records import CLIENT_TIMEOUT
from loadtest.session import CALIBRATION_KEY, LoadSession
from loadtest.stats import percentile

FULL_WIDTH_BUDGET = "width=1.0"
#: Distinct requests planned for calibration; the workers cycle through them if they finish them all.
PLANNED_REQUESTS = 4096
#: How often the coordinator checks whether enough has been measured.
POLL_S = 0.05
#: Longest wait for the last requests to finish after the measurement (then they are cancelled).
MAX_GRACE_S = 30.0


class CalibrationError(RuntimeError):
    """Too few successful requests to estimate the capacity."""


@dataclass(frozen=True)
class Capacity:
    """The measured full-width capacity and how it was measured (``concurrency`` 0: given, not measured)."""

    rps: float
    concurrency: int
    duration_s: float
    completed: int
    failed: int
    latency_p50_s: float | None

    def describe(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class _Progress:
    finished_s: list[float] = dataclasses.field(default_factory=list)
    latencies_s: list[float] = dataclasses.field(default_factory=list)
    failed: int = 0


def window_start_s(finished_s: list[float], concurrency: int, warmup_s: float) -> float | None:
    """Start of the measured window: after the first wave of completions and after ``warmup_s``."""
    if len(finished_s) < concurrency:
        return None
    return max(warmup_s, sorted(finished_s)[concurrency - 1])


def capacity_from(finished_s: list[float], start_s: float) -> tuple[float, int, float]:
    """(rate, completions, window) for the completions after ``start_s``: count / (last - start)."""
    inside = sorted(t for t in finished_s if t > start_s)
    if len(inside) < 2:
        return 0.0, len(inside), 0.0
    window = inside[-1] - start_s
    return len(inside) / window, len(inside), window


async def measure_capacity(
    session: LoadSession,
    concurrency: int,
    duration_s: float,
    warmup_s: float = 0.0,
    min_completions: int | None = None,
    max_s: float = 300.0,
) -> Capacity:
    """Closed loop at ``concurrency``; see the module docstring for the window. Raises if fewer than two
    requests completed inside it by ``max_s``."""
    if concurrency < 1 or duration_s <= 0 or warmup_s < 0 or max_s <= 0:
        raise ValueError(
            f"calibration needs concurrency >= 1, duration > 0, warm-up >= 0 and max > 0, got {concurrency}, "
            f"{duration_s}, {warmup_s}, {max_s}"
        )
    wanted = min_completions if min_completions is not None else 2 * concurrency
    planned = plan_requests(session.workload, session.pool, PLANNED_REQUESTS, CALIBRATION_KEY)
    cursor = itertools.cycle([dataclasses.replace(r, budget=FULL_WIDTH_BUDGET, deadline_ms=None) for r in planned])
    url = f"{session.base_url}/upscale"
    options = dataclasses.replace(session.send, request_id_prefix=f"{session.send.request_id_prefix}-calibrate")
    progress = _Progress()
    start = time.perf_counter()

    stop = asyncio.Event()

    async def worker() -> None:
        while not stop.is_set():
            request = next(cursor)
            record = new_record(request, time.perf_counter() - start, CLIENT_TIMEOUT)
            await send_one(session.client, url, request, record, options, start)
            if record.ok and record.finished_s is not None and record.latency_s is not None:
                progress.finished_s.append(record.finished_s)
                progress.latencies_s.append(record.latency_s)
            else:
                progress.failed += 1

    workers = [asyncio.create_task(worker()) for _ in range(concurrency)]
    try:
        while (elapsed := time.perf_counter() - start) < max_s:
            begin = window_start_s(progress.finished_s, concurrency, warmup_s)
            if begin is not None and elapsed >= begin + duration_s:
                if capacity_from(progress.finished_s, begin)[1] >= wanted:
                    break
            await asyncio.sleep(POLL_S)
    finally:
        # Let the requests in flight finish (so the next phase starts on an idle server), but not forever.
        stop.set()
        median = percentile(progress.latencies_s, 50)
        await asyncio.wait(workers, timeout=min(MAX_GRACE_S, 3 * median) if median is not None else 0.0)
        for task in workers:
            task.cancel()
        await asyncio.gather(*workers, return_exceptions=True)
    begin = window_start_s(progress.finished_s, concurrency, warmup_s)
    rate, completed, window = capacity_from(progress.finished_s, begin) if begin is not None else (0.0, 0, 0.0)
    if completed < 2:
        raise CalibrationError(
            f"capacity calibration saw {len(progress.finished_s)} successful and {progress.failed} failed requests "
            f"in {max_s:g} s, too few to measure; is the server up, and is the workload small enough?"
        )
    return Capacity(
        rps=rate,
        concurrency=concurrency,
        duration_s=window,
        completed=completed,
        failed=progress.failed,
        latency_p50_s=percentile(progress.latencies_s, 50),
    )
