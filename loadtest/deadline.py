"""The deadline scenario: the overload run twice, without and with ``X-AnySR-Deadline-Ms`` on every request.

Both runs send the same requests at the same times (the same phase keys and workload seed; the header
does not change which image or scale a request draws), so the only difference is the header. The
question they answer: does a deadline on every request keep the overload protection? The targets:

- goodput with the header at least that of the run without it;
- at most 1% of *admitted* requests (200 or 504; a 503 or 422 refusal is not admitted) miss their
  deadline with a 504.

A 200 that arrives after its deadline at the client (upload and download included) is counted too,
as ``late``. Speaks HTTP only, like the rest of ``loadtest/``.
"""

from __future__ import annotations

import asyncio
import dataclasses
from dataclasses import dataclass
from typing import Any

from loadtest.overload import OverloadSpec, run_overload
from loadtest.records import RequestRecord
from loadtest.session import LoadSession
from loadtest.workload import HeaderMix

#: The scenario's targets (docs/loadtest.md).
MAX_MISS_RATIO = 0.01


@dataclass(frozen=True)
class DeadlineScenario:
    """The header's value and the overload run both halves share."""

    deadline_ms: float
    overload: OverloadSpec


def miss_counts(records: list[RequestRecord], deadline_ms: float | None) -> dict[str, Any]:
    """Admitted requests (answered 200 or 504), how many missed with a 504, how many 200s came late."""
    succeeded = [record for record in records if record.outcome == "200"]
    timed_out = [record for record in records if record.outcome == "504"]
    admitted = len(succeeded) + len(timed_out)
    late = 0
    if deadline_ms is not None:
        late = sum(1 for record in succeeded if record.latency_s is not None and record.latency_s > deadline_ms / 1e3)
    return {
        "admitted": admitted,
        "missed_504": len(timed_out),
        "late_200": late,
        "miss_ratio": len(timed_out) / admitted if admitted else None,
    }


async def run_deadline_scenario(
    session: LoadSession, scenario: DeadlineScenario, settle_s: float
) -> tuple[dict[str, Any], list[tuple[str, list[RequestRecord]]]]:
    """Run the overload run without then with the header; summaries per half, and the records."""
    plain = session.workload
    halves: dict[str, Any] = {}
    records: list[tuple[str, list[RequestRecord]]] = []
    for label, header in (("without", None), ("with", scenario.deadline_ms)):
        if header is None:
            session.workload = dataclasses.replace(plain, deadline=HeaderMix())
        else:
            session.workload = dataclasses.replace(plain, deadline=HeaderMix(share=1.0, values=(f"{header:g}",)))
        try:
            result = await run_overload(session, scenario.overload)
        finally:
            session.workload = plain
        run_records = result.pop("records")
        begin = scenario.overload.baseline_s
        end = begin + scenario.overload.overload_s
        overload_records = [record for record in run_records if begin <= record.scheduled_s < end]
        result["misses"] = miss_counts(overload_records, header)
        halves[label] = result
        records.append((f"deadline-{label}", run_records))
        if label == "without" and settle_s > 0:
            await asyncio.sleep(settle_s)
    without = halves["without"]["segments"]["overload"]
    with_header = halves["with"]["segments"]["overload"]
    misses = halves["with"]["misses"]
    summary = {
        "deadline_ms": scenario.deadline_ms,
        "spec": dataclasses.asdict(scenario.overload),
        "without": halves["without"],
        "with": halves["with"],
        "goodput_ratio": with_header["goodput_rps"] / without["goodput_rps"] if without["goodput_rps"] else None,
        "goodput_target_met": with_header["goodput_rps"] >= without["goodput_rps"],
        "miss_target_met": misses["miss_ratio"] is not None and misses["miss_ratio"] <= MAX_MISS_RATIO,
    }
    return summary, records
