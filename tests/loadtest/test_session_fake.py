"""End to end against the fake server (same HTTP contract, deterministic answers) in a thread:
a phase's counts, widths, FLOPs, rejections and /metrics split are exactly what the plan implies."""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
import pytest

from loadtest.client import SendOptions, make_client, run_open_loop
from loadtest.images import build_pool
from loadtest.plan import plan_requests
from loadtest.session import LoadSession, PhaseSpec
from loadtest.workload import parse_workload
from tests.loadtest.conftest import ServeApp
from tests.loadtest.fake_server import REJECT_BELOW_MS, make_fake_app, width_for

WORKLOAD = parse_workload(
    {
        "seed": 11,
        "arrival": "constant",
        "images": {"variants": 2, "sizes": [{"size": [8, 8]}, {"size": [8, 12]}]},
        "scales": {"choices": [1.5, 2.5, 3.5]},
        "deadline": {"share": 0.4, "ms": [50, 60000]},
    }
)
POOL = build_pool(WORKLOAD.images, WORKLOAD.seed)


def run(coroutine: Any) -> Any:
    return asyncio.run(coroutine)


def test_phase_summary_matches_the_plan(serve_app: ServeApp) -> None:
    spec = PhaseSpec("step0", rate_rps=40.0, duration_s=0.5, phase_key=100)
    with serve_app(make_fake_app("adaptive")) as url:

        async def go() -> Any:
            async with LoadSession(url, WORKLOAD, POOL, SendOptions(WORKLOAD.output)) as session:
                return session.schedule(spec)[1], await session.run_phase(spec), await session.describe_model()

        planned, result, model = run(go())
    assert len(planned) == 20 and len(result.records) == 20  # constant arrivals: 40/s for 0.5 s
    refused = [r for r in planned if r.deadline_ms is not None and float(r.deadline_ms) < REJECT_BELOW_MS]
    served = [r for r in planned if r not in refused]
    assert 0 < len(refused) < 20
    summary = result.summary
    assert summary["outcomes"] == {"200": len(served), "503": len(refused)}
    assert summary["rejected"] == len(refused) and summary["errors"] == 0 and summary["client_dropped"] == 0
    assert summary["error_codes"] == {"deadline_unreachable": len(refused)}
    widths = [width_for(r.scale, "adaptive")[0] for r in served]
    expected_mix = {f"{w:.1f}": widths.count(w) / len(widths) for w in set(widths)}
    assert summary["width_mix"] == pytest.approx(expected_mix)
    out_sizes = [round(r.image.height * r.scale) * round(r.image.width * r.scale) for r in served]
    flops = [int(size * 1000 * w * w) for size, w in zip(out_sizes, widths)]
    assert summary["mean_flops"] == pytest.approx(np.mean(flops))
    assert sum(r.output_pixels or 0 for r in result.records) == sum(out_sizes)
    server = summary["server"]
    assert server["requests_by_status"] == {"200": len(served), "503": len(refused)}
    assert server["tiles_queued"] == len(served) and server["queue_wait_mean_s"] == pytest.approx(0.001)
    assert summary["server_timing_queue_ms_mean"] == pytest.approx(1.0)
    assert summary["offered_rps"] == 40.0 and summary["label"] == "step0" and summary["target_rps"] == 40.0
    assert model["policy"] == {"mode": "adaptive", "fixed_width": None}


def test_the_in_flight_cap_drops_instead_of_delaying(serve_app: ServeApp) -> None:
    requests = plan_requests(WORKLOAD, POOL, 6, phase_key=3)
    requests = [r for r in requests if r.deadline_ms is None][:4]
    offsets = np.array([0.0, 0.01, 0.02, 0.03])
    with serve_app(make_fake_app("fixed:1.0", delay_s=1.5)) as url:

        async def go() -> Any:
            options = SendOptions(WORKLOAD.output, max_in_flight=2, timeout_s=30.0)
            async with make_client(2, 30.0) as client:
                return await run_open_loop(client, url, requests, offsets, options)

        records = run(go())
    assert [r.outcome for r in records] == ["200", "200", "client_dropped", "client_dropped"]
    assert records[2].sent_s is None and records[3].latency_s is None
    # The dropped ones were decided on time: the dispatcher did not wait 1.5 s for a free slot.
    assert all(r.lag_s is not None and r.lag_s < 1.0 for r in records[:2])


def test_a_client_timeout_is_recorded_not_raised(serve_app: ServeApp) -> None:
    request = [r for r in plan_requests(WORKLOAD, POOL, 6, phase_key=3) if r.deadline_ms is None][:1]
    with serve_app(make_fake_app("fixed:1.0", delay_s=0.8)) as url:

        async def go() -> Any:
            options = SendOptions(WORKLOAD.output, max_in_flight=1, timeout_s=0.2)
            async with make_client(1, 0.2) as client:
                return await run_open_loop(client, url, request, np.zeros(1), options)

        (record,) = run(go())
    assert record.outcome == "client_timeout" and record.finished_s is not None
