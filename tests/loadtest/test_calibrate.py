"""Capacity estimate: the measured window skips the first wave, and rate = completions / window."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from loadtest.calibrate import CalibrationError, capacity_from, measure_capacity, window_start_s
from loadtest.client import SendOptions
from loadtest.images import build_pool
from loadtest.session import LoadSession
from loadtest.workload import parse_workload
from tests.loadtest.conftest import ServeApp
from tests.loadtest.fake_server import make_fake_app

WORKLOAD = parse_workload({"images": {"variants": 1, "sizes": [{"size": [8, 8]}]}, "scales": {"choices": [2]}})


def test_window_starts_after_the_first_wave_and_the_warmup() -> None:
    finished = [0.9, 0.5, 1.4, 2.0, 2.2]
    assert window_start_s(finished, concurrency=2, warmup_s=0.0) == 0.9
    assert window_start_s(finished, concurrency=2, warmup_s=1.0) == 1.0
    assert window_start_s(finished[:1], concurrency=2, warmup_s=0.0) is None


def test_rate_is_completions_over_the_window() -> None:
    assert capacity_from([0.5, 0.9, 1.4, 2.0, 2.9], start_s=0.9) == (pytest.approx(1.5), 3, pytest.approx(2.0))
    assert capacity_from([0.5, 0.9, 1.4], start_s=0.9) == (0.0, 1, 0.0)


def session_for(url: str) -> LoadSession:
    return LoadSession(url, WORKLOAD, build_pool(WORKLOAD.images, 0), SendOptions(WORKLOAD.output))


def test_capacity_against_the_fake_server(serve_app: ServeApp) -> None:
    with serve_app(make_fake_app("adaptive", delay_s=0.1)) as url:

        async def go() -> Any:
            async with session_for(url) as session:
                return await measure_capacity(session, concurrency=2, duration_s=0.3)

        capacity = asyncio.run(go())
    # Two workers, each answer taking at least 0.1 s: at most about 20 per second.
    assert capacity.failed == 0 and capacity.completed >= 4 and 0 < capacity.rps <= 30
    assert capacity.latency_p50_s is not None and capacity.latency_p50_s >= 0.1


def test_a_server_that_only_fails_cannot_be_calibrated(serve_app: ServeApp) -> None:
    with serve_app(make_fake_app("adaptive")) as url:

        async def go() -> Any:
            async with session_for(url) as session:
                session.base_url = url + "/missing"  # every request 404s
                return await measure_capacity(session, concurrency=1, duration_s=0.1, max_s=0.5)

        with pytest.raises(CalibrationError, match="too few to measure"):
            asyncio.run(go())
