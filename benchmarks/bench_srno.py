"""Time the SRNO decoder's inference choices: chunked passes with folded attention against SRNO's own order.

SRNO's Galerkin attention sums over the whole output grid, so ``models/decoders/srno.py`` decodes in
chunks after one accumulation pass per attention layer (recomputing the layers before it from the
gathered lift) and folds each layer's query projection, attention and first MLP layer into one matrix.
This script measures what that costs and saves, on random weights (the FLOPs of trained ones):

- ``chunked`` per width: ``AnySR.upscale`` as the product runs it, with its FLOPs and the time split
  into encode + prepare, the accumulation passes, and the decode of every chunk;
- ``lift``: the lift alone over every chunk, i.e. what each recomputation of the cheapest stage costs;
- ``whole grid``: SRNO's own order (``prepare`` + ``render`` under inference mode: every pixel's tokens
  held at once, the attention unfolded), at full width;
- the accumulation pass block size (queries per pass step);
- peak RSS of one upscale, chunked and whole-grid, each in a fresh subprocess.

``--table3`` instead prints FLOPs beside the paper's Table 3 (no timing): every width's encoder and
decoder FLOPs (slim and paper modes) for a fixed output size with LR = output / scale, the paper's
"consistent pixel size" (480x480 by default), and the FLOPs of SRNO's own order of the decoder's work.

    python benchmarks/bench_srno.py --lr-size 64x64 --scales 2,4 --threads 1 --clock cpu --repeats 3
    python benchmarks/bench_srno.py --table3 [--table3-size 480]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks.host import host_info  # noqa: E402
from models.anysr import AnySR, build_model  # noqa: E402
from models.coords import make_cell, make_coord  # noqa: E402
from models.decoders import srno  # noqa: E402
from models.flops import count_flops  # noqa: E402
from models.geometry import output_size  # noqa: E402
from models.spec import ModelSpec  # noqa: E402

DEFAULT_OUTPUT = REPO / "benchmarks" / "results" / "bench_srno.json"
PASS_BLOCKS = (1024, 4096, 16384)
#: Table 3 of the AnySR paper (GFLOPs at x2, x3, x4): SRNO, its AnySR subnets (†), AnySR at full width (‡).
PAPER_TABLE3 = {"SRNO": (141.28, 62.50, 35.28), "SRNO†": (97.93, 55.54, 35.06), "SRNO‡": (140.40, 62.12, 35.06)}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lr-size", default="64x64", help="LR input HxW (64x64)")
    parser.add_argument("--scales", default="2,4", help="comma-separated square scales (2,4)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per case; the median is reported (3)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--clock", choices=("wall", "cpu"), default="wall", help="wall or process CPU time (wall)")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help=f"JSON path ({DEFAULT_OUTPUT})")
    parser.add_argument("--table3", action="store_true", help="print FLOPs beside the paper's Table 3 instead")
    parser.add_argument("--table3-size", type=int, default=480, help="output side for --table3 (480)")
    parser.add_argument("--rss-case", default=None, help=argparse.SUPPRESS)  # internal: one peak-RSS run
    return parser.parse_args(argv)


def make_model() -> AnySR:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return build_model(ModelSpec.of("edsr-baseline", "srno")).eval()


def grid(out_size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return make_coord(out_size[0], 1)[:, 0][None], make_coord(1, out_size[1])[:, 1][None], make_cell(*out_size, 1)


#: The clock every timing reads: wall time, or this process's CPU time (``--clock cpu``), which on a
#: shared machine with ``--threads 1`` stays close to the uncontended wall time when other jobs take cores.
CLOCK: Callable[[], float] = time.perf_counter


def median_time(function: Callable[[], object], repeats: int) -> float:
    function()  # warm-up
    runs = []
    for _ in range(repeats):
        started = CLOCK()
        function()
        runs.append(CLOCK() - started)
    return statistics.median(runs)


@torch.inference_mode()
def whole_grid(model: AnySR, lr: torch.Tensor, out_size: tuple[int, int]) -> torch.Tensor:
    """SRNO's order: every output pixel's tokens at once, attention as q · (kᵀv / N)."""
    ys, xs, cell = grid(out_size)
    scale = (out_size[0] / lr.shape[2], out_size[1] / lr.shape[3])
    return model.decoder.render(model.prepare(lr, 1.0, scale), ys, xs, cell, 1.0).clamp_(0, 1)


@torch.inference_mode()
def split_times(model: AnySR, lr: torch.Tensor, out_size: tuple[int, int], width: float, repeats: int) -> dict:
    """Median seconds of encode + prepare, the accumulation passes, the decode, and the lift alone."""
    ys, xs, cell = grid(out_size)
    scale = (out_size[0] / lr.shape[2], out_size[1] / lr.shape[3])
    prepared = model.prepare(lr, width, scale)
    decoding = srno.SRNOGridDecoding(model.decoder, prepared, ys, xs, cell, width)
    lift = decoding.lift
    chunk = 65536

    def decode() -> None:
        for start in range(0, decoding.queries, chunk):
            decoding.decode(start, min(start + chunk, decoding.queries))

    def lift_all() -> None:
        for start in range(0, lift.queries, srno.PASS_BLOCK_QUERIES):
            lift(start, min(start + srno.PASS_BLOCK_QUERIES, lift.queries))

    return {
        "prepare_s": median_time(lambda: model.prepare(lr, width, scale), repeats),
        "passes_s": median_time(lambda: srno.SRNOGridDecoding(model.decoder, prepared, ys, xs, cell, width), repeats),
        "decode_s": median_time(decode, repeats),
        "lift_once_s": median_time(lift_all, repeats),
    }


def peak_rss(case: str, lr_size: tuple[int, int], scale: float, threads: int | None) -> int:
    """Peak RSS in bytes of a fresh process that runs one upscale ``case`` (``chunked`` or ``whole``), or
    only builds the model and the input (``none``, the baseline)."""
    command = [sys.executable, __file__, "--rss-case", f"{case}:{lr_size[0]}x{lr_size[1]}:{scale}"]
    if threads is not None:
        command += ["--threads", str(threads)]
    done = subprocess.run(command, capture_output=True, text=True, check=True, timeout=1800)
    return int(done.stdout.strip().splitlines()[-1])


def run_rss_case(spec: str) -> None:
    """The child side of :func:`peak_rss`: prints the process's peak RSS after the upscale."""
    case, size, scale_text = spec.split(":")
    height, width = (int(side) for side in size.split("x"))
    model = make_model()
    lr = torch.rand(1, 3, height, width, generator=torch.Generator().manual_seed(0))
    out_size = output_size((height, width), (float(scale_text), float(scale_text)))
    if case == "chunked":
        model.upscale(lr, out_size, 1.0)
    elif case == "whole":
        whole_grid(model, lr, out_size)
    print(high_water_rss())  # noqa: T201 - read by the parent


def high_water_rss() -> int:
    """This process's peak RSS in bytes: Linux's VmHWM (``ru_maxrss`` would include the forking parent's)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc/self/status (peak RSS is read the Linux way)")


def srno_order_macs(model: AnySR, out_size: tuple[int, int]) -> int:
    """MACs of the decoder as the SRNO authors' ``query_rgb`` runs it (full width): per output pixel the
    whole lift ((4(C + 2) + 2)·w), per layer q, k, v (3w²), kᵀv and q·K (2·w·d) and the MLP (2w²), then
    the head. Equal to ``FlopCounterMode`` on their code (see docs: 2,139,313,664 FLOPs, both ways, for
    EDSR-baseline + SRNO from 12x14 to 29x37)."""
    config = model.decoder.config
    width, head_dim = config.width, config.width // config.heads
    per_pixel = (4 * (model.encoder.out_dim + 2) + 2) * width
    per_pixel += config.layers * (5 * width**2 + 2 * width * head_dim) + width * config.hidden + 3 * config.hidden
    return per_pixel * out_size[0] * out_size[1]


def table3(side: int, output: Path) -> int:
    """FLOPs per width at x2, x3, x4 for a ``side`` x ``side`` output (LR = side / scale), beside Table 3."""
    with torch.device("meta"):
        slim = build_model(ModelSpec.of("edsr-baseline", "srno"))
        paper = build_model(ModelSpec.of("edsr-baseline", "srno", decoder_args={"slim": False}))
    rows, lines = [], []
    lines.append(f"GFLOPs (1 MAC = 2 FLOPs), output {side}x{side}, LR = output / scale; paper Table 3 beside")
    lines.append("scale  LR       width  encoder  dec slim  dec paper  total slim  total paper  SRNO-order dec   paper")
    for index, scale in enumerate((2, 3, 4)):
        lr_side = side // scale
        out_size = (lr_side * scale, lr_side * scale)
        group = slim.width_for_scale(scale)
        srno_order = 2 * srno_order_macs(slim, out_size)
        for width in slim.widths:
            ours = count_flops(slim, (lr_side, lr_side), out_size, width)
            full = count_flops(paper, (lr_side, lr_side), out_size, width)
            paper_values = []
            if width == 1.0:
                paper_values.append(f"SRNO {PAPER_TABLE3['SRNO'][index]}, ‡ {PAPER_TABLE3['SRNO‡'][index]}")
            if width == group:
                paper_values.append(f"† {PAPER_TABLE3['SRNO†'][index]}")
            rows.append(
                {
                    "scale": scale,
                    "lr_side": lr_side,
                    "out_size": list(out_size),
                    "width": width,
                    "group_width": width == group,
                    "encoder_flops": ours.encoder,
                    "decoder_flops_slim": ours.decoder,
                    "decoder_flops_paper": full.decoder,
                    "srno_order_decoder_flops": srno_order,
                }
            )
            lines.append(
                f"x{scale:<5} {lr_side:>3}x{lr_side:<4} {width:>5}  {ours.encoder / 1e9:7.2f}  {ours.decoder / 1e9:8.2f}  "
                f"{full.decoder / 1e9:9.2f}  {ours.total / 1e9:10.2f}  {full.total / 1e9:11.2f}  "
                f"{srno_order / 1e9:14.2f}   {'; '.join(paper_values)}"
            )
    print("\n".join(lines))
    record = {"command": " ".join(["python benchmarks/bench_srno.py", *sys.argv[1:]]), "table3_size": side}
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(record | {"paper": PAPER_TABLE3, "rows": rows}, indent=2) + "\n")
    print(f"wrote {output}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    if args.rss_case is not None:
        run_rss_case(args.rss_case)
        return 0
    if args.table3:
        output = args.output if args.output != DEFAULT_OUTPUT else DEFAULT_OUTPUT.with_name("bench_srno_table3.json")
        return table3(args.table3_size, output)
    global CLOCK
    CLOCK = time.process_time if args.clock == "cpu" else time.perf_counter
    height, _, width_px = args.lr_size.lower().partition("x")
    lr_size = (int(height), int(width_px or height))
    model = make_model()
    lr = torch.rand(1, 3, *lr_size, generator=torch.Generator().manual_seed(0))
    results: dict[str, Any] = {"scales": {}}
    lines = []
    for scale in (float(text) for text in args.scales.split(",")):
        out_size = output_size(lr_size, (scale, scale))
        rows = []
        for width in model.widths:
            seconds = median_time(lambda w=width, size=out_size: model.upscale(lr, size, w), args.repeats)
            flops = count_flops(model, lr_size, out_size, width)
            rows.append({"width": width, "time_s": seconds, "flops": flops.total, "decoder_flops": flops.decoder})
            lines.append(
                f"x{scale:g} {out_size[0]}x{out_size[1]}  chunked w={width:<4} {seconds:7.3f} s  "
                f"{flops.total / 1e9:7.2f} GFLOPs  {flops.total / seconds / 1e9:6.1f} GFLOP/s"
            )
        split = split_times(model, lr, out_size, 1.0, args.repeats)
        whole_s = median_time(lambda size=out_size: whole_grid(model, lr, size), args.repeats)
        lines.append(
            f"x{scale:g} w=1.0 split: prepare {split['prepare_s']:.3f} s, passes {split['passes_s']:.3f} s, decode "
            f"{split['decode_s']:.3f} s; lift alone {split['lift_once_s']:.3f} s (run 3 times: once per pass + decode)"
        )
        lines.append(f"x{scale:g} w=1.0 whole grid (SRNO's order, unbounded memory) {whole_s:.3f} s")
        blocks = {}
        for block in PASS_BLOCKS:
            srno.PASS_BLOCK_QUERIES, saved = block, srno.PASS_BLOCK_QUERIES
            try:
                blocks[block] = split_times(model, lr, out_size, 1.0, args.repeats)["passes_s"]
            finally:
                srno.PASS_BLOCK_QUERIES = saved
        lines.append(f"x{scale:g} w=1.0 passes by block: " + ", ".join(f"{b}: {s:.3f} s" for b, s in blocks.items()))
        rss = {case: peak_rss(case, lr_size, scale, args.threads) for case in ("none", "chunked", "whole")}
        lines.append(
            f"x{scale:g} w=1.0 peak RSS above the model alone ({rss['none'] / 2**20:.0f} MiB): chunked "
            f"{(rss['chunked'] - rss['none']) / 2**20:.0f} MiB, whole grid {(rss['whole'] - rss['none']) / 2**20:.0f} MiB"
        )
        results["scales"][f"{scale:g}"] = {
            "out_size": list(out_size),
            "chunked": rows,
            "split_full_width": split,
            "whole_grid_s": whole_s,
            "passes_s_by_block": {str(block): seconds for block, seconds in blocks.items()},
            "peak_rss_bytes": rss,
        }
    print("\n".join(lines))  # noqa: T201
    record = {
        "command": "python benchmarks/bench_srno.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "lr_size": list(lr_size),
        "repeats": args.repeats,
        "clock": args.clock,
        "host": host_info("cpu", args.threads),
        "results": results,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {args.output}")  # noqa: T201
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
