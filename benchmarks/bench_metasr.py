"""Time the Meta-SR decoder three ways on the same features, and its grid path per width against its FLOPs.

After one encode (not timed), full width:

- ``plain``: the order of work of LIIF's ``MetaSR.query_rgb`` (3×3 unfold, nearest pick, the whole
  3 → 256 → C·9·3 MLP per query, the predicted filter applied with bmm), 16,384 queries at a time;
- ``query``: our :meth:`MetaSRDecoder.prepare` (the per-LR-pixel table) + :meth:`~MetaSRDecoder.query`
  on the same chunks, i.e. what a caller with arbitrary points gets (one table row gathered per query);
- ``grid``: ``prepare`` + :class:`MetaSRGridDecoding` over the whole grid in ``AnySR.upscale``'s blocks,
  what the product runs.

Each with its median wall and process CPU time (on a shared machine, with ``--threads 1``, CPU time is
close to the uncontended wall time), its matrix-product FLOPs and the largest difference of its output
from ``plain``'s. Then the grid path per width (slim mode): decoder time ratio beside decoder FLOPs ratio.
Weights are random and seeded; the prepared table's size is printed too (it is 3·hidden + 3 channels per
LR pixel). Results go to ``benchmarks/results/metasr.json`` with the host record.

    python benchmarks/bench_metasr.py --lr-size 64x64 --scales 2,2.5,4 --repeats 5 --threads 1
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.host import host_info, make_record, write_record  # noqa: E402
from models.anysr import DEFAULT_BLOCK_QUERIES, AnySR, build_model  # noqa: E402
from models.coords import make_cell, make_coord  # noqa: E402
from models.decoders.metasr import MetaSRDecoder  # noqa: E402
from models.geometry import output_size  # noqa: E402
from models.spec import ModelSpec  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
CHUNK = 16384


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lr-size", default="64x64", help="LR input HxW (64x64)")
    parser.add_argument("--scales", default="2,2.5,4", help="comma-separated square scales (2,2.5,4)")
    parser.add_argument("--repeats", type=int, default=3, help="timed rounds; the median is reported (3)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--out-dir", type=Path, default=RESULTS, help=f"where metasr.json goes ({RESULTS})")
    args = parser.parse_args(argv)
    if args.repeats < 1 or (args.threads is not None and args.threads < 1):
        parser.error("--repeats and --threads must be >= 1")
    return args


def plain_rgb(decoder: MetaSRDecoder, features: torch.Tensor, coord: torch.Tensor, cell: torch.Tensor) -> torch.Tensor:
    """LIIF's MetaSR.query_rgb order of work at full width, in [0, 1] units: (B, Q, 3)."""
    batch, channels, height, width = features.shape
    unfolded = F.unfold(features, 3, padding=1).view(batch, channels * 9, height, width)
    corner = coord - cell / 2
    nudged = (corner + 1e-6).clamp(-1 + 1e-6, 1 - 1e-6)
    grid = nudged.flip(-1).unsqueeze(1)
    picked = F.grid_sample(unfolded, grid, mode="nearest", align_corners=False)[:, :, 0, :].permute(0, 2, 1)
    index_y = ((nudged[..., 0] + 1) * height / 2).floor().clamp(0, height - 1)
    index_x = ((nudged[..., 1] + 1) * width / 2).floor().clamp(0, width - 1)
    rel_y = (corner[..., 0] + 1 - 2 * index_y / height) * height / 2
    rel_x = (corner[..., 1] + 1 - 2 * index_x / width) * width / 2
    position = torch.stack([rel_y, rel_x, cell[..., 0] * height / 2], dim=-1)
    first, last = decoder.mlp.layers
    filters = last(F.relu(first(position))).view(-1, channels * 9, 3)
    rgb = torch.bmm(picked.reshape(-1, 1, channels * 9), filters)
    return rgb.view(batch, -1, 3) * 0.5 + 0.5


def paths(model: AnySR, features: torch.Tensor, out_size: tuple[int, int]) -> dict[str, Callable[[], torch.Tensor]]:
    """The three full-width decodes of ``features``, each returning (B, 3, H·W) in [0, 1] units (unclamped)."""
    decoder = model.decoder
    assert isinstance(decoder, MetaSRDecoder)
    batch = features.shape[0]
    coord = make_coord(*out_size)[None].expand(batch, -1, -1)
    cell = make_cell(*out_size, coord.shape[1])[None].expand(batch, -1, -1)
    lr = torch.empty(batch, 3, *features.shape[2:])
    scale = torch.ones(batch, 2)

    def chunked(function: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> torch.Tensor:
        pieces = [
            function(coord[:, start : start + CHUNK], cell[:, start : start + CHUNK])
            for start in range(0, coord.shape[1], CHUNK)
        ]
        return torch.cat(pieces, dim=1).transpose(1, 2)

    def query() -> torch.Tensor:
        prepared = decoder.prepare(features, lr, 1.0, scale)
        return chunked(lambda points, cells: decoder.query(prepared, points, cells, 1.0))

    def grid() -> torch.Tensor:
        prepared = decoder.prepare(features, lr, 1.0, scale)
        ys, xs = make_coord(out_size[0], 1)[:, 0], make_coord(1, out_size[1])[:, 1]
        decoding = decoder.grid_decoder(prepared, ys, xs, cell[0, 0], 1.0)
        out = torch.empty(batch, 3, decoding.queries)
        block = DEFAULT_BLOCK_QUERIES // batch
        for start in range(0, decoding.queries, block):
            decoding.decode(start, min(start + block, decoding.queries), out=out[:, :, start : start + block])
        return out

    return {
        "plain": lambda: chunked(lambda points, cells: plain_rgb(decoder, features, points, cells)),
        "query": query,
        "grid": grid,
    }


def timed(function: Callable[[], torch.Tensor], repeats: int) -> tuple[torch.Tensor, float, float]:
    """(output of the first run, median wall s, median CPU s) over ``repeats`` runs after one untimed run."""
    output = function()
    walls, cpus = [], []
    for _ in range(repeats):
        wall, cpu = time.perf_counter(), time.process_time()
        function()
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    return output, statistics.median(walls), statistics.median(cpus)


def time_widths(
    model: AnySR, features: torch.Tensor, lr_size: tuple[int, int], out_size: tuple[int, int], repeats: int
) -> list[dict[str, Any]]:
    """The grid path (table convolution + whole-grid decode) at every width, with time and FLOPs ratios."""
    decoder = model.decoder
    assert isinstance(decoder, MetaSRDecoder)
    lr, scale = torch.empty(1, 3, *lr_size), torch.ones(1, 2)
    ys, xs = make_coord(out_size[0], 1)[:, 0], make_coord(1, out_size[1])[:, 1]
    cell = make_cell(*out_size, 1)[0]

    def prepare_and_decode(width: float) -> torch.Tensor:
        prepared = decoder.prepare(features, lr, width, scale)
        grid = decoder.grid_decoder(prepared, ys, xs, cell, width)
        for start in range(0, grid.queries, DEFAULT_BLOCK_QUERIES):
            grid.decode(start, min(start + DEFAULT_BLOCK_QUERIES, grid.queries))
        return prepared

    rows = []
    for width in reversed(model.widths):
        _, wall, cpu = timed(lambda width=width: prepare_and_decode(width), repeats)
        rows.append({"width": width, "time_s": wall, "cpu_s": cpu, "flops": 2 * decoder.macs(lr_size, out_size, width)})
    full = rows[0]
    for row in rows:
        row |= {"scale": out_size[0] / lr_size[0], "time_ratio": row["time_s"] / full["time_s"]}
        row["cpu_time_ratio"] = row["cpu_s"] / full["cpu_s"]
        row["flops_ratio"] = row["flops"] / full["flops"]
        print(
            f"  grid path width {row['width']}: {row['time_s'] * 1e3:8.1f} ms ({row['cpu_s'] * 1e3:8.1f} cpu ms), "
            f"time ratio {row['time_ratio']:.3f} ({row['cpu_time_ratio']:.3f} by cpu), FLOPs ratio {row['flops_ratio']:.3f}",
            flush=True,
        )
    return rows


def path_macs(decoder: MetaSRDecoder, name: str, lr_size: tuple[int, int], out_size: tuple[int, int]) -> int:
    """Matrix-product MACs of one path at full width (the grid path's are the FLOPs model's)."""
    hidden = decoder.hidden_size(1.0)
    queries = out_size[0] * out_size[1]
    table = decoder.feat_dim * 3 * (hidden + 1) * lr_size[0] * lr_size[1]
    if name == "plain":
        return queries * (3 * hidden + hidden * decoder.feat_dim * 3 + decoder.feat_dim * 3)
    if name == "query":
        return table + queries * 6 * hidden
    return decoder.macs(lr_size, out_size, 1.0)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    started, load_before = time.monotonic(), os.getloadavg()
    height, _, width = args.lr_size.lower().partition("x")
    lr_size = (int(height), int(width or height))
    torch.manual_seed(0)
    model = build_model(ModelSpec.of("edsr-baseline", "metasr")).eval()
    decoder = model.decoder
    assert isinstance(decoder, MetaSRDecoder)
    lr = torch.rand(1, 3, *lr_size, generator=torch.Generator().manual_seed(1))
    results: dict[str, Any] = {"full_width": [], "widths": []}
    with torch.inference_mode():
        features = model.encoder(lr, 1.0, torch.full((1, 2), 2.0))
        table_mb = (3 * decoder.hidden_size(1.0) + 3) * lr_size[0] * lr_size[1] * 4 / 2**20
        print(f"prepared table at full width: {table_mb:.1f} MiB for {lr_size[0]}x{lr_size[1]} LR pixels (fp32)")
        for scale in (float(text) for text in args.scales.split(",")):
            out_size = output_size(lr_size, (scale, scale))
            outputs, rows = {}, {}
            for name, function in paths(model, features, out_size).items():
                outputs[name], wall, cpu = timed(function, args.repeats)
                macs = path_macs(decoder, name, lr_size, out_size)
                rows[name] = {"time_s": wall, "cpu_s": cpu, "gflops": 2 * macs / 1e9}
            for name, row in rows.items():
                row["max_abs_diff_vs_plain"] = float((outputs[name] - outputs["plain"]).abs().max())
                row["speedup_vs_plain"] = rows["plain"]["time_s"] / row["time_s"]
                row["cpu_speedup_vs_plain"] = rows["plain"]["cpu_s"] / row["cpu_s"]
                print(
                    f"x{scale:g} {out_size[0]}x{out_size[1]} {name:>6}: {row['time_s'] * 1e3:8.1f} ms "
                    f"({row['cpu_s'] * 1e3:8.1f} cpu ms) {row['gflops']:8.2f} GFLOPs  "
                    f"{row['speedup_vs_plain']:5.1f}x plain ({row['cpu_speedup_vs_plain']:5.1f}x by cpu)  "
                    f"max |diff| {row['max_abs_diff_vs_plain']:.1e}",
                    flush=True,
                )
            results["full_width"].append({"scale": scale, "out_size": list(out_size), "paths": rows})
            results["widths"] += time_widths(model, features, lr_size, out_size, args.repeats)
    config = {"lr_size": list(lr_size), "scales": args.scales, "repeats": args.repeats, "chunk": CHUNK}
    command = "python benchmarks/bench_metasr.py " + " ".join(sys.argv[1:] if argv is None else argv)
    record = make_record("metasr", command, config, results, host_info("cpu", args.threads), load_before, started)
    print(f"wrote {write_record(args.out_dir, record)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
