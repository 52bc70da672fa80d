"""One experiment against one server: optional capacity calibration, a rate sweep, an optional overload run,
and an optional deadline scenario (the overload run without and with a deadline header on every request).

Rates are given as requests per second (``3``) or as multiples of the measured full-width capacity
(``1.5x``); the capacity is measured once (``calibrate.py``) unless given, and shared by every policy
of a comparison so all servers face the same offered loads.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import math
import re
from dataclasses import dataclass
from typing import Any

from loadtest.calibrate import Capacity, measure_capacity
from loadtest.deadline import DeadlineScenario, run_deadline_scenario
from loadtest.overload import OverloadSpec, run_overload
from loadtest.records import RequestRecord
from loadtest.session import SWEEP_KEY, LoadSession, PhaseSpec

logger = logging.getLogger("anysr.loadtest")

_RATE = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*(x?)\s*$", re.IGNORECASE)


@dataclass(frozen=True)
class Rate:
    """A target rate: absolute (requests/s) or ``relative`` (a multiple of the full-width capacity)."""

    value: float
    relative: bool = False

    def resolve(self, capacity_rps: float | None) -> float:
        if not self.relative:
            return self.value
        if capacity_rps is None:
            raise ValueError(f"rate {self} is relative to the capacity, which has not been measured")
        return self.value * capacity_rps

    def __str__(self) -> str:
        return f"{self.value:g}x" if self.relative else f"{self.value:g}/s"


def parse_rate(text: str) -> Rate:
    """``"3"`` → 3 requests/s; ``"1.5x"`` → 1.5 x capacity. Must be positive."""
    match = _RATE.match(text)
    if match is None or float(match[1]) <= 0:
        raise ValueError(f"rate must be a positive number, optionally followed by 'x' (times capacity), got {text!r}")
    return Rate(float(match[1]), relative=bool(match[2]))


def parse_rates(text: str) -> tuple[Rate, ...]:
    """A comma-separated list of rates (at least one)."""
    rates = tuple(parse_rate(part) for part in text.split(",") if part.strip())
    if not rates:
        raise ValueError(f"give at least one rate, got {text!r}")
    return rates


@dataclass(frozen=True)
class OverloadPlan:
    multiple: float = 2.0
    overload_s: float = 60.0
    baseline_s: float = 15.0
    recovery_s: float = 30.0
    low: Rate = Rate(0.25, relative=True)
    recovery_factor: float = 2.0

    def spec(self, capacity_rps: float) -> OverloadSpec:
        return OverloadSpec(
            overload_rps=self.multiple * capacity_rps,
            overload_s=self.overload_s,
            low_rps=self.low.resolve(capacity_rps),
            baseline_s=self.baseline_s,
            recovery_s=self.recovery_s,
            recovery_factor=self.recovery_factor,
        )


@dataclass(frozen=True)
class DeadlinePlan:
    """The deadline scenario: the overload run without and with ``X-AnySR-Deadline-Ms: deadline_ms``."""

    deadline_ms: float = 10_000.0
    overload: OverloadPlan = OverloadPlan()


@dataclass(frozen=True)
class ExperimentPlan:
    """Everything about the offered load, shared by every server of a comparison."""

    rates: tuple[Rate, ...] = ()
    step_s: float = 30.0
    max_requests_per_step: int | None = None
    settle_s: float = 3.0
    warmup_requests: int = 4
    capacity_rps: float | None = None
    calibration_s: float = 20.0
    calibration_warmup_s: float = 3.0
    calibration_concurrency: int = 8
    calibration_max_s: float = 300.0
    overload: OverloadPlan | None = None
    deadline: DeadlinePlan | None = None

    def __post_init__(self) -> None:
        if not math.isfinite(self.step_s) or self.step_s <= 0:
            raise ValueError(f"step duration must be positive, got {self.step_s}")
        if self.capacity_rps is not None and not self.capacity_rps > 0:
            raise ValueError(f"capacity must be a positive rate, got {self.capacity_rps}")

    @property
    def needs_capacity(self) -> bool:
        return self.overload is not None or self.deadline is not None or any(rate.relative for rate in self.rates)

    def describe(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["rates"] = [str(rate) for rate in self.rates]
        if self.overload is not None:
            data["overload"]["low"] = str(self.overload.low)
        if self.deadline is not None:
            data["deadline"]["overload"]["low"] = str(self.deadline.overload.low)
        return data


async def calibrate(session: LoadSession, plan: ExperimentPlan) -> Capacity:
    logger.info(
        "measuring full-width capacity: %d concurrent, at least %.0f s after a %.0f s warm-up (at most %.0f s)",
        plan.calibration_concurrency,
        plan.calibration_s,
        plan.calibration_warmup_s,
        plan.calibration_max_s,
    )
    capacity = await measure_capacity(
        session,
        plan.calibration_concurrency,
        plan.calibration_s,
        plan.calibration_warmup_s,
        max_s=plan.calibration_max_s,
    )
    logger.info(
        "full-width capacity: %.3f requests/s (%d completed over %.1f s)",
        capacity.rps,
        capacity.completed,
        capacity.duration_s,
    )
    return capacity


async def run_experiment(
    session: LoadSession, plan: ExperimentPlan, capacity_rps: float | None
) -> tuple[dict[str, Any], list[tuple[str, list[RequestRecord]]]]:
    """Warm up, sweep, then overload; returns (results for JSON, records per phase for CSV)."""
    await session.warm_up(plan.warmup_requests)
    specs = [
        PhaseSpec(
            f"step{index}", rate.resolve(capacity_rps), plan.step_s, SWEEP_KEY + index, plan.max_requests_per_step
        )
        for index, rate in enumerate(plan.rates)
    ]
    steps = []
    records: list[tuple[str, list[RequestRecord]]] = []
    for position, spec in enumerate(specs):
        result = await session.run_phase(spec)
        result.summary["rate"] = str(plan.rates[position])
        steps.append(result.summary)
        records.append((spec.label, result.records))
        logger.info(
            "%s: offered %.2f/s, achieved %.2f/s, p99 %s s, goodput %.2f/s",
            spec.label,
            result.summary["offered_rps"],
            result.summary["achieved_rps"],
            _fmt(result.summary["latency_p99_s"]),
            result.summary["goodput_rps"],
        )
        if plan.settle_s > 0 and (position + 1 < len(specs) or plan.overload is not None):
            await asyncio.sleep(plan.settle_s)  # let the server's smoothed load readings come back down
    overload = None
    if plan.overload is not None:
        assert capacity_rps is not None
        overload = await run_overload(session, plan.overload.spec(capacity_rps))
        records.append(("overload", overload.pop("records")))
        logger.info(
            "overload: goodput %.2f/s, p99 %s s, rejected %d, recovery %s",
            overload["segments"]["overload"]["goodput_rps"],
            _fmt(overload["segments"]["overload"]["latency_p99_s"]),
            overload["segments"]["overload"]["rejected"],
            overload["recovery_status"],
        )
    deadline = None
    if plan.deadline is not None:
        assert capacity_rps is not None
        if plan.settle_s > 0 and (specs or plan.overload is not None):
            await asyncio.sleep(plan.settle_s)
        scenario = DeadlineScenario(plan.deadline.deadline_ms, plan.deadline.overload.spec(capacity_rps))
        deadline, deadline_records = await run_deadline_scenario(session, scenario, plan.settle_s)
        records += deadline_records
        logger.info(
            "deadline scenario: goodput %.2f/s without, %.2f/s with the header; %s of admitted missed",
            deadline["without"]["segments"]["overload"]["goodput_rps"],
            deadline["with"]["segments"]["overload"]["goodput_rps"],
            _fmt(deadline["with"]["misses"]["miss_ratio"]),
        )
    return {"steps": steps, "overload": overload, "deadline": deadline}, records


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"
