"""A load session against one running server: warm it up, and run open-loop phases with scrapes around them.

A *phase* is one stretch of open-loop load at one rate (a sweep step, or a segment of the overload
run). For each phase the session draws the arrival times and the requests from the workload
(deterministic in the workload seed and the phase key), scrapes ``/metrics``, sends, waits for the
stragglers, scrapes again and summarises both views. Scrapes use their own connection so a full
request pool can never delay them.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

import httpx
import numpy as np

from loadtest.arrivals import arrival_offsets
from loadtest.client import SendOptions, make_client, run_open_loop
from loadtest.images import ImagePool
from loadtest.plan import PlannedRequest, phase_rng, plan_requests
from loadtest.quality import PsnrTable
from loadtest.records import RequestRecord
from loadtest.scrape import Samples, delta, scrape, summarise_delta
from loadtest.stats import DEFAULT_GOODPUT_DEADLINE_S, summarise_records
from loadtest.workload import Workload

#: Phase keys: each kind of phase draws from its own random streams (sweep steps add their index).
WARMUP_KEY, CALIBRATION_KEY, BASELINE_KEY, OVERLOAD_KEY, RECOVERY_KEY, SWEEP_KEY = 1, 2, 3, 4, 5, 100


@dataclass(frozen=True)
class PhaseSpec:
    """One phase: a label for reports, a target rate, a duration, an optional request cap and its key."""

    label: str
    rate_rps: float
    duration_s: float
    phase_key: int
    max_requests: int | None = None

    def __post_init__(self) -> None:
        if not math.isfinite(self.rate_rps) or self.rate_rps <= 0:
            raise ValueError(f"phase {self.label!r}: rate must be positive, got {self.rate_rps}")
        if not math.isfinite(self.duration_s) or self.duration_s <= 0:
            raise ValueError(f"phase {self.label!r}: duration must be positive, got {self.duration_s}")


@dataclass
class PhaseResult:
    spec: PhaseSpec
    summary: dict[str, Any]
    records: list[RequestRecord] = field(repr=False)


class LoadSession:
    """Owns the HTTP clients for one target; use as ``async with LoadSession(...) as session``."""

    def __init__(
        self,
        base_url: str,
        workload: Workload,
        pool: ImagePool,
        send: SendOptions,
        goodput_deadline_s: float = DEFAULT_GOODPUT_DEADLINE_S,
        quality: PsnrTable | None = None,
    ) -> None:
        self.base_url = base_url
        self.workload = workload
        self.pool = pool
        self.send = send
        self.goodput_deadline_s = goodput_deadline_s
        self.quality = quality
        self.client = make_client(send.max_in_flight, send.timeout_s)
        self.admin = httpx.AsyncClient(timeout=httpx.Timeout(30.0), trust_env=False)

    async def __aenter__(self) -> LoadSession:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.client.aclose()
        await self.admin.aclose()

    def schedule(self, spec: PhaseSpec) -> tuple[np.ndarray, list[PlannedRequest]]:
        """The arrival offsets and the requests of a phase."""
        rng = phase_rng(self.workload.seed, spec.phase_key, 1)
        offsets = arrival_offsets(spec.rate_rps, spec.duration_s, self.workload.arrival, rng, spec.max_requests)
        return offsets, plan_requests(self.workload, self.pool, len(offsets), spec.phase_key)

    async def scrape(self) -> Samples | None:
        return await scrape(self.admin, self.base_url)

    async def describe_model(self) -> dict[str, Any] | None:
        """``GET /v1/model`` (None if the server does not answer it)."""
        try:
            response = await self.admin.get(f"{self.base_url}/v1/model")
        except httpx.HTTPError:
            return None
        return response.json() if response.status_code == 200 else None

    async def warm_up(self, count: int) -> list[RequestRecord]:
        """Send ``count`` workload requests one after another (connections, caches, allocator); not reported."""
        if count <= 0:
            return []
        requests = plan_requests(self.workload, self.pool, count, WARMUP_KEY)
        records = []
        for request in requests:
            records += await run_open_loop(self.client, self.base_url, [request], np.zeros(1), self.send)
        return records

    def summarise(
        self, records: list[RequestRecord], duration_s: float, before: Samples | None, after: Samples | None
    ) -> dict[str, Any]:
        cost = self.quality.cost_db if self.quality is not None else None
        summary = summarise_records(records, duration_s, self.goodput_deadline_s, cost)
        summary["server"] = (
            summarise_delta(delta(before, after), summary["span_s"])
            if before is not None and after is not None
            else None
        )
        return summary

    async def run_phase(self, spec: PhaseSpec) -> PhaseResult:
        """Scrape, send the phase open-loop, wait for it to finish, scrape, summarise."""
        offsets, requests = self.schedule(spec)
        before = await self.scrape()
        send = dataclasses.replace(self.send, request_id_prefix=f"{self.send.request_id_prefix}-{spec.label}")
        records = await run_open_loop(self.client, self.base_url, requests, offsets, send)
        after = await self.scrape()
        summary = self.summarise(records, spec.duration_s, before, after)
        summary.update(label=spec.label, target_rps=spec.rate_rps)
        return PhaseResult(spec, summary, records)
