"""The suite's batching part: throughput of the server's own batch call at batch 1 vs larger batches.

It times :meth:`server.runner.ModelRunner.run_batch`, the call the batcher's inference thread makes,
on :class:`server.jobs.TileJob` tiles built the way the server builds them (``plan_tiles`` with the
model's exact halo, ``tile_query``, ``crop_window``), so the numbers include the runner's real work:
stacking, channels-last conversion, host-to-device copies on CUDA, the grid decoder in query chunks,
quantisation to uint8 and the copy back. Tiles come from an LR image three tiles wide (a whole-image
tile when the halo covers it, as the server does for small images), reused in turn to fill a batch.

For every batch size: one untimed call, then ``repeats`` timed rounds interleaved over the batch
sizes; throughput = tiles / median time. The gain is the best batch's throughput over batch 1's. On a
CPU a single tile already keeps the cores busy, so the gain may be near 1×; on a GPU batching fills it.
"""

from __future__ import annotations

import statistics
import time
from typing import Any

import torch

from benchmarks.bench_widths import lr_image, make_model
from benchmarks.config import SuiteConfig
from models.anysr import AnySR
from models.devices import resolve_device
from models.geometry import output_side
from server.jobs import BatchKey, TileJob
from server.runner import ModelRunner, RunnerConfig
from server.settings import Settings
from server.tiling import TilePlan, crop_window, plan_for_model, tile_query

#: Full width: the batching gain is a property of the runner, measured where the compute is largest.
BATCH_WIDTH = 1.0


def tile_jobs(plan: TilePlan, lr: torch.Tensor, model: AnySR, count: int) -> list[TileJob]:
    """``count`` jobs over the plan's tiles in turn, exactly as ``UpscaleService.make_jobs`` builds them."""
    tiles = plan.tiles()
    key = BatchKey(BATCH_WIDTH, plan.lr_tile_shape, plan.out_tile_shape)
    scale = (plan.out_size[0] / plan.lr_size[0], plan.out_size[1] / plan.lr_size[1])
    flops = plan.tile_flops(model, BATCH_WIDTH)
    jobs = []
    for index in range(count):
        tile = tiles[index % len(tiles)]
        coord_y, coord_x, cell = tile_query(plan, tile)
        jobs.append(TileJob(key, crop_window(lr, plan, tile), coord_y, coord_x, cell, scale, flops))
    return jobs


def run_batching(config: SuiteConfig) -> tuple[dict[str, Any], dict[str, Any]]:
    """Runner throughput per batch size at full width: (config, results)."""
    device = resolve_device(config.device)
    precision = config.dtype
    tile = config.resolved_batch_tile()
    model = make_model("slim", torch.device("cpu"), config.spec)
    side = 3 * tile
    out_side = output_side(side, config.batch_scale)
    plan = plan_for_model(model, (side, side), (out_side, out_side), tile)
    lr = lr_image((side, side), torch.device("cpu"))[0]
    query_chunk = Settings.model_fields["query_chunk"].default
    runner = ModelRunner(
        model,
        RunnerConfig(device=str(device), precision=precision, query_chunk=query_chunk, torch_threads=config.threads),
    )
    precision = runner.precision
    sizes = sorted(set(config.batch_sizes))
    jobs = tile_jobs(plan, lr, model, max(sizes))
    for size in sizes:
        runner.run_batch(jobs[:size])
    seconds: dict[int, list[float]] = {size: [] for size in sizes}
    for _ in range(config.repeats):
        for size in sizes:
            started = time.perf_counter()
            outputs = runner.run_batch(jobs[:size])  # returns CPU tensors: includes the device sync
            seconds[size].append(time.perf_counter() - started)
            if len(outputs) != size:
                raise RuntimeError(f"run_batch returned {len(outputs)} tiles for a batch of {size}")
    out_pixels = plan.out_tile_shape[0] * plan.out_tile_shape[1]
    tile_flops = jobs[0].flops
    rows = []
    for size in sizes:
        median = statistics.median(seconds[size])
        rows.append(
            {
                "batch": size,
                "time_s": median,
                "runs": seconds[size],
                "tiles_per_s": size / median,
                "output_mpx_per_s": size * out_pixels / median / 1e6,
                "gflops_per_s": size * tile_flops / median / 1e9,
            }
        )
    base = rows[0]["tiles_per_s"]
    for row in rows:
        row["gain_vs_batch_1"] = row["tiles_per_s"] / base
    best = max(rows, key=lambda row: row["tiles_per_s"])
    print("batch  time s  tiles/s  out Mpx/s  gain", flush=True)
    for row in rows:
        print(
            f"{row['batch']:>5} {row['time_s']:>7.3f} {row['tiles_per_s']:>8.2f} {row['output_mpx_per_s']:>10.3f}"
            f" {row['gain_vs_batch_1']:>5.2f}",
            flush=True,
        )
    settings = {
        "device": str(device),
        "precision": precision,
        "width": BATCH_WIDTH,
        "scale": config.batch_scale,
        "tile_size": tile,
        "server_default_tile_size": Settings.model_fields["tile_size"].default,
        "halo": model.receptive_radius,
        "lr_image": [side, side],
        "plan_tiles": plan.count,
        "lr_tile_shape": list(plan.lr_tile_shape),
        "out_tile_shape": list(plan.out_tile_shape),
        "tile_flops": tile_flops,
        "query_chunk": query_chunk,
        "batch_sizes": sizes,
        "repeats": config.repeats,
        "spec": config.model_spec,
        "weights": "random (seeded)",
        "call": "server.runner.ModelRunner.run_batch",
    }
    results = {"rows": rows, "best_batch": best["batch"], "best_gain": best["gain_vs_batch_1"]}
    return settings, results
