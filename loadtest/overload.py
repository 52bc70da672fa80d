"""The overload run: low load, then a burst past capacity, then low load again, on one open-loop timeline.

Segments (back to back, no pause, so the backlog of the burst carries into the recovery):

1. *baseline* at ``low_rps`` for ``baseline_s``: the latency the server gives when it is not stressed;
2. *overload* at ``overload_rps`` (e.g. 2x the full-width capacity) for ``overload_s``;
3. *recovery* at ``low_rps`` for ``recovery_s``.

Each segment is summarised like a sweep step (its requests are those *scheduled* in it). The
recovery time is how long after the load drops until every later request succeeds within
``recovery_factor`` x the baseline p99 latency (``stats.recovery_time_s``). ``/metrics`` is scraped at
every segment boundary, so the server's queue/compute split is reported per segment too.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from loadtest.arrivals import concat_schedules
from loadtest.client import run_open_loop
from loadtest.records import RequestRecord
from loadtest.scrape import Samples
from loadtest.session import BASELINE_KEY, OVERLOAD_KEY, RECOVERY_KEY, LoadSession, PhaseSpec
from loadtest.stats import recovery_time_s

SEGMENTS: tuple[str, ...] = ("baseline", "overload", "recovery")


@dataclass(frozen=True)
class OverloadSpec:
    overload_rps: float
    overload_s: float
    low_rps: float
    baseline_s: float
    recovery_s: float
    recovery_factor: float = 2.0

    def phases(self) -> list[PhaseSpec]:
        return [
            PhaseSpec("baseline", self.low_rps, self.baseline_s, BASELINE_KEY),
            PhaseSpec("overload", self.overload_rps, self.overload_s, OVERLOAD_KEY),
            PhaseSpec("recovery", self.low_rps, self.recovery_s, RECOVERY_KEY),
        ]


def shift_records(records: list[RequestRecord], by_s: float) -> list[RequestRecord]:
    """Copies with every time moved ``by_s`` earlier (a segment's records relative to its own start)."""

    def moved(value: float | None) -> float | None:
        return None if value is None else value - by_s

    return [
        dataclasses.replace(r, scheduled_s=r.scheduled_s - by_s, sent_s=moved(r.sent_s), finished_s=moved(r.finished_s))
        for r in records
    ]


async def _scrape_at(session: LoadSession, start: float, at_s: float) -> Samples | None:
    await asyncio.sleep(max(0.0, start + at_s - time.perf_counter()))
    return await session.scrape()


async def run_overload(session: LoadSession, spec: OverloadSpec) -> dict[str, Any]:
    """Run the three segments; return per-segment summaries, the recovery time and every record."""
    phases = spec.phases()
    schedules = [session.schedule(phase) for phase in phases]
    offsets = concat_schedules(*((offs, phase.duration_s) for (offs, _), phase in zip(schedules, phases)))
    requests = []
    for _, planned in schedules:
        requests += [dataclasses.replace(r, index=len(requests) + i) for i, r in enumerate(planned)]
    boundaries = np.cumsum([0.0] + [phase.duration_s for phase in phases])  # segment starts, then the end

    before = await session.scrape()
    start = time.perf_counter()
    mid_scrapes = [asyncio.create_task(_scrape_at(session, start, float(at))) for at in boundaries[1:-1]]
    send = dataclasses.replace(session.send, request_id_prefix=f"{session.send.request_id_prefix}-overload")
    records = await run_open_loop(session.client, session.base_url, requests, offsets, send)
    scrapes = [before, *[await task for task in mid_scrapes], await session.scrape()]

    segments = {}
    for position, phase in enumerate(phases):
        begin, end = float(boundaries[position]), float(boundaries[position + 1])
        inside = shift_records([r for r in records if begin <= r.scheduled_s < end], begin)
        summary = session.summarise(inside, phase.duration_s, scrapes[position], scrapes[position + 1])
        summary.update(label=phase.label, target_rps=phase.rate_rps)
        segments[phase.label] = summary
    baseline_p99 = segments["baseline"]["latency_p99_s"]
    threshold = None if baseline_p99 is None else spec.recovery_factor * baseline_p99
    recovery = None
    if threshold is not None:
        recovery = recovery_time_s(records, float(boundaries[2]), threshold)
    return {
        "spec": dataclasses.asdict(spec),
        "segments": segments,
        "recovery_latency_threshold_s": threshold,
        "recovery_time_s": recovery,
        "recovered": recovery is not None,
        "recovery_status": recovery_status(threshold, recovery),
        "records": records,
    }


def recovery_status(threshold_s: float | None, recovery_s: float | None) -> str:
    """Recovery in words: a time, ``not recovered`` or ``no baseline`` (no successful baseline request)."""
    if threshold_s is None:
        return "no baseline"
    return "not recovered" if recovery_s is None else f"{recovery_s:.1f} s"
