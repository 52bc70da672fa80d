"""The open-loop sender: fire each planned request at its due time, never later because of the server.

One dispatcher coroutine walks the schedule on an absolute timeline (``start + offset``); each
request runs in its own task, so a slow answer never delays the next send. If ``max_in_flight``
requests are already outstanding when one falls due, that one is not sent and is recorded as
``client_dropped``: the schedule stays intact and the generator's memory stays bounded. After the
last send, outstanding requests get up to ``drain_timeout_s`` to finish.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass

import httpx
import numpy as np

from loadtest.plan import PlannedRequest
from loadtest.records import (
    CLIENT_DROPPED,
    CLIENT_TIMEOUT,
    CONNECTION_ERROR,
    RequestRecord,
    fill_from_response,
)
from loadtest.workload import OutputOptions


@dataclass(frozen=True)
class SendOptions:
    """How one phase sends: output options, the in-flight cap and the client-side timeouts."""

    output: OutputOptions
    max_in_flight: int = 64
    timeout_s: float = 60.0
    drain_timeout_s: float = 90.0
    request_id_prefix: str = "loadtest"

    def __post_init__(self) -> None:
        if self.max_in_flight < 1:
            raise ValueError(f"max_in_flight must be at least 1, got {self.max_in_flight}")
        if self.timeout_s <= 0 or self.drain_timeout_s <= 0:
            raise ValueError(f"timeouts must be positive, got {self.timeout_s} and {self.drain_timeout_s}")


def make_client(max_in_flight: int, timeout_s: float) -> httpx.AsyncClient:
    """An HTTP client with one connection per in-flight request (so the pool never queues a request)
    and no proxies from the environment (targets are loopback)."""
    limits = httpx.Limits(max_connections=max_in_flight, max_keepalive_connections=max_in_flight)
    return httpx.AsyncClient(limits=limits, timeout=httpx.Timeout(timeout_s), trust_env=False)


def query_params(request: PlannedRequest, output: OutputOptions) -> dict[str, str]:
    params = {"scale": f"{request.scale:g}", "format": output.format}
    if output.quality is not None:
        params["quality"] = str(output.quality)
    return params


def new_record(request: PlannedRequest, scheduled_s: float, outcome: str) -> RequestRecord:
    return RequestRecord(
        index=request.index,
        scheduled_s=scheduled_s,
        outcome=outcome,
        scale=request.scale,
        input_pixels=request.image.pixels,
        budget=request.budget,
        deadline_ms=request.deadline_ms,
    )


async def send_one(
    client: httpx.AsyncClient,
    url: str,
    request: PlannedRequest,
    record: RequestRecord,
    options: SendOptions,
    start: float,
) -> None:
    """POST one request and fill ``record``; never raises for network trouble (it becomes the outcome)."""
    record.sent_s = time.perf_counter() - start
    try:
        response = await client.post(
            url,
            params=query_params(request, options.output),
            content=request.image.body,
            headers=request.headers(f"{options.request_id_prefix}-{request.index}"),
        )
    except httpx.TimeoutException:
        record.outcome = CLIENT_TIMEOUT
    except httpx.TransportError:
        record.outcome = CONNECTION_ERROR
    else:
        fill_from_response(record, response.status_code, response.headers, response.content)
    finally:
        record.finished_s = time.perf_counter() - start


async def run_open_loop(
    client: httpx.AsyncClient,
    base_url: str,
    requests: Sequence[PlannedRequest],
    offsets: np.ndarray,
    options: SendOptions,
) -> list[RequestRecord]:
    """Send ``requests[k]`` at ``offsets[k]`` seconds after the start; return one record per request, in order."""
    if len(requests) != len(offsets):
        raise ValueError(f"{len(requests)} requests but {len(offsets)} arrival times")
    url = f"{base_url}/upscale"
    records: list[RequestRecord] = []
    tasks: set[asyncio.Task[None]] = set()
    start = time.perf_counter()
    for request, offset in zip(requests, offsets):
        delay = start + float(offset) - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        if len(tasks) >= options.max_in_flight:
            records.append(new_record(request, float(offset), CLIENT_DROPPED))
            continue
        record = new_record(request, float(offset), CLIENT_TIMEOUT)
        records.append(record)
        task = asyncio.create_task(send_one(client, url, request, record, options, start))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    if tasks:
        _, pending = await asyncio.wait(set(tasks), timeout=options.drain_timeout_s)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending)
    for record in records:
        if record.sent_s is not None and record.finished_s is None:
            record.finished_s = time.perf_counter() - start  # cancelled at the drain timeout
    return records
