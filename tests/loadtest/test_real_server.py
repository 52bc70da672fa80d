"""Against the real server (``server.app.create_app`` with a tiny injected model, under uvicorn in a
thread): the generator reads its real headers and metrics. Only loose facts are asserted (all
succeed, widths from the served set, FLOPs and the /metrics split present), never timings."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from loadtest.calibrate import measure_capacity
from loadtest.client import SendOptions
from loadtest.images import build_pool
from loadtest.session import LoadSession, PhaseSpec
from loadtest.workload import parse_workload
from tests.loadtest.conftest import ServeApp

app_module = pytest.importorskip("server.app", reason="the server package is not importable")
settings_module = pytest.importorskip("server.settings")

WIDTHS = {"0.5", "0.7", "0.9", "1.0"}


def test_a_phase_against_the_real_server(serve_app: ServeApp, tiny_model: Any) -> None:
    settings = settings_module.Settings(warmup_size=8, load_sample_interval_s=0.2, max_batch_wait_ms=1.0)
    app = app_module.create_app(settings, model=tiny_model)
    workload = parse_workload(
        {
            "seed": 4,
            "arrival": "constant",
            "images": {"variants": 2, "sizes": [{"size": [12, 12]}]},
            "scales": {"uniform": [1.1, 4.0]},
            "budget": {"share": 0.25, "values": ["width=0.5"]},
        }
    )
    spec = PhaseSpec("step0", rate_rps=8.0, duration_s=0.75, phase_key=100)
    with serve_app(app, lifespan="on") as url:

        async def go() -> Any:
            session = LoadSession(
                url, workload, build_pool(workload.images, workload.seed), SendOptions(workload.output)
            )
            async with session:
                capacity = await measure_capacity(session, concurrency=2, duration_s=0.5)
                return await session.run_phase(spec), await session.describe_model(), capacity

        result, model, capacity = asyncio.run(go())
    summary = result.summary
    assert summary["scheduled"] == 6 and summary["succeeded"] == 6, summary["outcomes"]
    assert set(summary["width_mix"]) <= WIDTHS and summary["mean_flops"] > 0
    forced = [r for r in result.records if r.budget == "width=0.5"]
    assert forced and all(r.width == 0.5 and r.reason == "forced" for r in forced)
    assert all(r.output_pixels and r.server_compute_ms is not None for r in result.records)
    server = summary["server"]
    assert server["requests_by_status"].get("200") == 6
    assert server["tiles_queued"] >= 6 and server["compute_mean_s"] > 0 and server["batches"] >= 1
    assert sum(server["width_selected"].values()) == 6
    assert model["policy"]["mode"] == "adaptive"
    assert capacity.completed > 0 and capacity.rps > 0 and capacity.failed == 0
