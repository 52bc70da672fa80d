"""server/service.py: waiting for tiles (done, timeout, disconnect), stitching and timing."""

from __future__ import annotations

import asyncio

import pytest
import torch

from server.batcher import BatcherClosed
from server.errors import ClientClosedRequest, GatewayTimeout, Unavailable
from server.jobs import TileResult
from server.service import UpscaleService, wait_for_tiles


def result(batch_id: int, compute_s: float, value: int = 0, shape=(4, 4)) -> TileResult:
    return TileResult(torch.full((*shape, 3), value, dtype=torch.uint8), batch_id, 0.0, compute_s)


async def never() -> None:
    await asyncio.Event().wait()


async def soon(delay_s: float) -> None:
    await asyncio.sleep(delay_s)


def test_all_tiles_done():
    async def scenario():
        loop = asyncio.get_running_loop()
        futures = [loop.create_future() for _ in range(2)]
        loop.call_later(0.01, futures[0].set_result, result(0, 0.1))
        loop.call_later(0.02, futures[1].set_result, result(1, 0.1))
        return await wait_for_tiles(futures, 5.0, never())

    assert [item.batch_id for item in asyncio.run(scenario())] == [0, 1]


def test_timeout_cancels_the_tiles():
    async def scenario():
        futures = [asyncio.get_running_loop().create_future() for _ in range(3)]
        with pytest.raises(GatewayTimeout, match="within 0.020 s"):
            await wait_for_tiles(futures, 0.02, never())
        await asyncio.sleep(0)
        return futures

    assert all(future.cancelled() for future in asyncio.run(scenario()))


def test_disconnect_is_499_and_cancels_the_tiles():
    async def scenario():
        futures = [asyncio.get_running_loop().create_future() for _ in range(2)]
        with pytest.raises(ClientClosedRequest) as caught:
            await wait_for_tiles(futures, 5.0, soon(0.01))
        await asyncio.sleep(0)
        return futures, caught.value

    futures, error = asyncio.run(scenario())
    assert error.status == 499 and error.code == "client_closed"
    assert all(future.cancelled() for future in futures)


def test_a_failed_tile_fails_the_request_and_drops_its_siblings():
    async def scenario():
        loop = asyncio.get_running_loop()
        futures = [loop.create_future() for _ in range(2)]
        futures[0].set_exception(BatcherClosed("shut down"))
        with pytest.raises(Unavailable, match="shut down"):
            await wait_for_tiles(futures, 5.0, never())
        return futures

    assert asyncio.run(scenario())[1].cancelled()


def test_collect_counts_each_shared_batch_once_and_returns_the_canvas():
    canvas = torch.zeros(80, 80, 3, dtype=torch.uint8)
    results = [result(index // 8, 0.5) for index in range(16)]
    outcome = UpscaleService.collect(canvas, results, submitted_s=10.0, finished_s=11.5)
    assert outcome.compute_s == pytest.approx(1.0)  # two batches of 0.5 s
    assert outcome.queue_s == pytest.approx(0.5)
    assert outcome.pixels is canvas
