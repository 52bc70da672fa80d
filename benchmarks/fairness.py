"""The suite's ``fairness`` part: latency of small requests while large ones run, against an idle server.

For each queue order (``fair``, the default, and ``fifo``, for comparison) it starts ``anysr serve`` with
the shipped weights and sends, one at a time, ``fairness_requests`` small requests to the idle server;
then it keeps ``fairness_large_concurrency`` large requests in flight (a closed loop: the next is sent
as one returns) and sends the same small requests again, each ``fairness_gap_s`` after the previous
answer, so they land at every phase of the large requests' tiles. Every request forces the same width
(``X-AnySR-Budget: width=W``), so the latencies differ only by how long the small ones queue.

Reported per order: p50 and p99 of the small requests' end-to-end latency, idle and loaded, and the
loaded / idle ratios (the issue aims at ≤ 2× at p50). A small request is one tile; a large one is cut
into many tiles of about the same cost, so with fair queuing a small request waits for at most the
tile on the device and one of each large request, where first-in-first-out makes it wait for all of
them. The server's request timeout and queue cap are raised, so the large requests are admitted.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import httpx
import numpy as np

from benchmarks.bench_server_overhead import bench_image, describe_model, percentile, running_server
from benchmarks.config import SuiteConfig
from benchmarks.server_parts import server_launch

#: The aim for small requests' p50 while large ones run, as a multiple of their idle p50.
FAIRNESS_TARGET = 2.0
ORDERS = ("fair", "fifo")


def _post(client: httpx.Client, base: str, png: bytes, scale: float, width: float) -> float:
    started = time.perf_counter()
    response = client.post(
        f"{base}/upscale?scale={scale}",
        content=png,
        headers={"content-type": "image/png", "x-anysr-budget": f"width={width}"},
    )
    response.raise_for_status()
    return time.perf_counter() - started


def _smalls(base: str, png: bytes, config: SuiteConfig, gap_s: float) -> list[float]:
    with httpx.Client(timeout=3600, trust_env=False) as client:
        _post(client, base, png, config.fairness_scale, config.fairness_width)  # untimed: warm the path
        latencies = []
        for _ in range(config.fairness_requests):
            latencies.append(_post(client, base, png, config.fairness_scale, config.fairness_width))
            time.sleep(gap_s)
    return latencies


def _summary(values: list[float]) -> dict[str, float]:
    return {"p50": percentile(values, 50), "p99": percentile(values, 99), "mean": float(np.mean(values))}


def run_order(config: SuiteConfig, order: str, small: bytes, large: bytes) -> dict[str, Any]:
    """Idle then loaded small-request latencies against one server started with ``--queue-order order``."""
    extra = ["--queue-order", order, "--request-timeout-s", "3600", "--max-queue-s", "none"]
    if config.fairness_tile_size is not None:
        extra += ["--tile-size", str(config.fairness_tile_size)]
    with running_server(server_launch(config, extra)) as server:
        model = describe_model(server.base, (config.fairness_large_size,) * 2, config.fairness_scale)
        idle = _smalls(server.base, small, config, config.fairness_gap_s)
        stop = threading.Event()
        large_latencies: list[float] = []
        failures: list[BaseException] = []

        def keep_large_in_flight() -> None:
            with httpx.Client(timeout=3600, trust_env=False) as client:
                while not stop.is_set():
                    try:
                        large_latencies.append(
                            _post(client, server.base, large, config.fairness_scale, config.fairness_width)
                        )
                    except httpx.HTTPError as error:
                        failures.append(error)
                        return

        workers = [threading.Thread(target=keep_large_in_flight) for _ in range(config.fairness_large_concurrency)]
        for worker in workers:
            worker.start()
        time.sleep(config.fairness_lead_s)  # the large requests' tiles are queued and running
        loaded = _smalls(server.base, small, config, config.fairness_gap_s)
        stop.set()
        for worker in workers:
            worker.join()
        if failures:
            raise RuntimeError(f"a large request failed: {failures[0]}")
    idle_summary, loaded_summary = _summary(idle), _summary(loaded)
    return {
        "order": order,
        "tiles_large": model["flops"]["tiles"],
        "idle_s": idle,
        "loaded_s": loaded,
        "large_s": large_latencies,
        "idle": idle_summary,
        "loaded": loaded_summary,
        "ratio_p50": loaded_summary["p50"] / idle_summary["p50"],
        "ratio_p99": loaded_summary["p99"] / idle_summary["p99"],
    }


def run_fairness(config: SuiteConfig) -> tuple[dict[str, Any], dict[str, Any]]:
    """(config, results) for the suite."""
    small, small_source = bench_image(config.fairness_small_size)
    large, large_source = bench_image(config.fairness_large_size)
    rows = []
    for order in ORDERS:
        print(f"fairness: queue order {order}", flush=True)
        row = run_order(config, order, small, large)
        print(
            f"  small p50 idle {row['idle']['p50']:.2f} s, loaded {row['loaded']['p50']:.2f} s "
            f"({row['ratio_p50']:.2f}x); p99 {row['idle']['p99']:.2f} / {row['loaded']['p99']:.2f} s",
            flush=True,
        )
        rows.append(row)
    settings = {
        "small_size": config.fairness_small_size,
        "large_size": config.fairness_large_size,
        "scale": config.fairness_scale,
        "width": config.fairness_width,
        "requests": config.fairness_requests,
        "large_concurrency": config.fairness_large_concurrency,
        "gap_s": config.fairness_gap_s,
        "lead_s": config.fairness_lead_s,
        "tile_size": config.fairness_tile_size,
        "images": [small_source, large_source],
        "weights": str(config.weights),
        "allow_untrained": config.allow_untrained,
    }
    fair = rows[0]
    results = {"rows": rows, "target_ratio_p50": FAIRNESS_TARGET, "within_target": fair["ratio_p50"] <= FAIRNESS_TARGET}
    return settings, results
