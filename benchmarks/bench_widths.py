"""Time AnySR per width against its FLOPs: does compute really fall with width, and how fast is full width?

For each decoder mode (slim, paper), scale (×2, ×4 by default) and width, times ``AnySR.upscale`` end to
end (encoder, projection, grid decoding; no image I/O) on a 256×256 LR input, and prints time, FLOPs
(:func:`models.flops.count_flops`, 1 MAC = 2 FLOPs), achieved GFLOP/s, and the time ratio beside the
FLOPs ratio (both relative to w = 1.0 of the same mode and scale). The issue's target: every time ratio
within 0.05 of its FLOPs ratio. Results go to ``benchmarks/results/bench_widths.json``.

Timing: ``--warmup`` untimed runs of every case, then ``--repeats`` rounds that each run every width of a
(mode, scale) once, interleaved, so slow drift from other load hits all widths alike; the median is
reported. Wall time is the number that matters; process CPU time is recorded beside it because on a
shared machine wall time also counts time the process waited for a core (with ``--threads 1`` the CPU
time is then close to the uncontended wall time). The load average before and after is saved too.

Weights are random (seeded): the same FLOPs as trained weights, and no file needed.

    python benchmarks/bench_widths.py --repeats 3 --threads 2
    python benchmarks/bench_widths.py --lr-size 128x128 --repeats 3 --threads 1     # a quicker run
    python benchmarks/bench_widths.py --check-bf16 --lr-size 64x64                  # bf16 accuracy vs fp32
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from models.anysr import DEFAULT_BLOCK_QUERIES, AnySR, build_model
from models.ase import AnyScaleEnhancement
from models.flops import count_flops
from models.geometry import output_size
from models.spec import ModelSpec
from models.widths import WIDTHS

REPO = Path(__file__).resolve().parents[1]
DEFAULT_OUTPUT = REPO / "benchmarks" / "results" / "bench_widths.json"
#: The issue's acceptance threshold on |time ratio − FLOPs ratio|.
RATIO_TOLERANCE = 0.05


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lr-size", default="256x256", help="LR input HxW (256x256)")
    parser.add_argument("--scales", default="2,4", help="comma-separated square scales (2,4)")
    parser.add_argument("--modes", default="slim,paper", help="slim, paper or both (slim,paper)")
    parser.add_argument("--widths", default=",".join(str(w) for w in WIDTHS), help="widths to time (all)")
    parser.add_argument("--repeats", type=int, default=3, help="timed rounds; the median is reported (3)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed runs per case first (1)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--dtype", choices=("fp32", "bf16"), default="fp32", help="compute dtype (fp32)")
    parser.add_argument("--block-queries", type=int, default=DEFAULT_BLOCK_QUERIES, help="decoder block size")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (cpu)")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help=f"JSON path ({DEFAULT_OUTPUT})")
    parser.add_argument(
        "--check-bf16", action="store_true", help="instead of timing: bf16 vs fp32 output difference per width"
    )
    parser.add_argument(
        "--reference",
        action="store_true",
        help="also time full width the reference LIIF way and via prepare + query (the per-query path)",
    )
    parser.add_argument(
        "--weights", type=Path, default=None, help="for --check-bf16: a checkpoint (default: random weights per mode)"
    )
    args = parser.parse_args(argv)
    if args.repeats < 1 or args.warmup < 0:
        parser.error(f"--repeats must be >= 1 and --warmup >= 0, got {args.repeats}, {args.warmup}")
    if args.threads is not None and args.threads < 1:
        parser.error(f"--threads must be >= 1, got {args.threads}")
    return args


def parse_size(text: str) -> tuple[int, int]:
    height, _, width = text.lower().partition("x")
    return int(height), int(width or height)


def make_model(mode: str, device: torch.device, base: ModelSpec | None = None) -> AnySR:
    """A seeded random model of ``base`` (default: the product spec) in ``mode``, with active ASE gates.

    A fresh model's ASE gates are exactly 1 (W2 = 0); small random W2 values make them real work, so no
    branch is trivially cheap.
    """
    spec = (base or ModelSpec()).replace_args(decoder={"slim": mode == "slim"})
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = build_model(spec)
        with torch.no_grad():
            for module in model.modules():
                if isinstance(module, AnyScaleEnhancement):
                    module.fc2.weight.normal_(0.0, 0.02)
    return model.to(device).eval()


def lr_image(size: tuple[int, int], device: torch.device) -> torch.Tensor:
    """A (1, 3, h, w) LR input: a crop of Set14's baboon when the shared data is there, else seeded noise."""
    shared = Path(os.environ.get("ANYSR_SHARED_DIR", REPO / ".." / "shared"))
    photo = shared / "datasets" / "Set14" / "baboon.png"
    height, width = size
    if photo.is_file():
        from PIL import Image

        image = Image.open(photo).convert("RGB")
        if image.height >= height and image.width >= width:
            pixels = np.asarray(image.crop((0, 0, width, height)), dtype=np.float32) / 255.0
            return torch.from_numpy(pixels).permute(2, 0, 1)[None].to(device)
    generator = torch.Generator().manual_seed(0)
    return torch.rand(1, 3, height, width, generator=generator).to(device)


def time_once(
    model: AnySR, lr: torch.Tensor, out_size: tuple[int, int], width: float, args: Any
) -> tuple[float, float]:
    """(wall seconds, process CPU seconds) of one upscale."""
    dtype = torch.bfloat16 if args.dtype == "bf16" else torch.float32
    scale = (out_size[0] / lr.shape[2], out_size[1] / lr.shape[3])
    wall, cpu = time.perf_counter(), time.process_time()
    model.upscale(lr, out_size, width, scale=scale, compute_dtype=dtype, block_queries=args.block_queries)
    if lr.device.type == "cuda":
        torch.cuda.synchronize(lr.device)
    return time.perf_counter() - wall, time.process_time() - cpu


def bench_case(model: AnySR, lr: torch.Tensor, scale: float, widths: list[float], args: Any) -> list[dict[str, Any]]:
    """Time every width at one (mode, scale), rounds interleaved; rows with ratios relative to the widest."""
    lr_size = (lr.shape[2], lr.shape[3])
    out_size = output_size(lr_size, (scale, scale))
    for width in widths:
        for _ in range(args.warmup):
            time_once(model, lr, out_size, width, args)
    walls: dict[float, list[float]] = {width: [] for width in widths}
    cpus: dict[float, list[float]] = {width: [] for width in widths}
    for _ in range(args.repeats):
        for width in widths:
            wall, cpu = time_once(model, lr, out_size, width, args)
            walls[width].append(wall)
            cpus[width].append(cpu)
    full = max(widths)
    full_flops = count_flops(model, lr_size, out_size, full).total
    rows = []
    for width in widths:
        flops = count_flops(model, lr_size, out_size, width)
        wall = statistics.median(walls[width])
        cpu = statistics.median(cpus[width])
        time_ratio = wall / statistics.median(walls[full])
        flops_ratio = flops.total / full_flops
        rows.append(
            {
                "width": width,
                "out_size": list(out_size),
                "flops": {"encoder": flops.encoder, "decoder": flops.decoder, "total": flops.total},
                "time_s": {"median": wall, "min": min(walls[width]), "runs": walls[width]},
                "cpu_s": {"median": cpu, "min": min(cpus[width]), "runs": cpus[width]},
                "gflops_per_s": flops.total / wall / 1e9,
                "gflops_per_cpu_s": flops.total / cpu / 1e9,
                "flops_ratio": flops_ratio,
                "time_ratio": time_ratio,
                "cpu_time_ratio": cpu / statistics.median(cpus[full]),
                "ratio_gap": time_ratio - flops_ratio,
            }
        )
    return rows


#: The full-width paths :func:`bench_reference` can time; the reference must come first (it is the baseline).
FULL_WIDTH_PATHS = ("reference_liif", "query_path", "upscale")


def full_width_paths(
    model: AnySR, lr: torch.Tensor, out_size: tuple[int, int], block_queries: int
) -> dict[str, Callable[[], torch.Tensor]]:
    """Full width three ways, each returning the (B, 3, H, W) image clamped to [0, 1].

    The reference (:func:`models.decoders.liif_reference.reference_upscale`) unfolds features and runs the whole
    MLP per query, as LIIF's code does; the query path (``prepare`` + ``query`` in 65,536-query chunks) is
    what a caller with arbitrary coordinates gets; ``upscale`` is the grid decoder the product runs.
    """
    from models.coords import make_cell, make_coord
    from models.decoders.liif_reference import reference_upscale

    scale_pair = (out_size[0] / lr.shape[2], out_size[1] / lr.shape[3])

    def query_path() -> torch.Tensor:
        prepared = model.prepare(lr, 1.0, scale_pair)
        coord = make_coord(*out_size, device=lr.device)[None].expand(lr.shape[0], -1, -1)
        cell = make_cell(*out_size, coord.shape[1], device=lr.device)[None].expand(lr.shape[0], -1, -1)
        chunks = [
            model.query(prepared, coord[:, start : start + 65536], cell[:, start : start + 65536], 1.0)
            for start in range(0, coord.shape[1], 65536)
        ]
        rgb = torch.cat(chunks, dim=1).clamp_(0, 1)
        return rgb.reshape(lr.shape[0], *out_size, 3).permute(0, 3, 1, 2)

    return {
        "reference_liif": lambda: reference_upscale(model, lr, out_size, 1.0),
        "query_path": query_path,
        "upscale": lambda: model.upscale(lr, out_size, 1.0, block_queries=block_queries),
    }


def bench_reference(
    model: AnySR, lr: torch.Tensor, scale: float, args: Any, paths: tuple[str, ...] = FULL_WIDTH_PATHS
) -> dict[str, Any]:
    """Time full width along ``paths`` (see :func:`full_width_paths`), interleaved per round.

    Per path: median wall and process CPU seconds of ``args.repeats`` rounds after ``args.warmup``
    untimed ones, the timed runs, and the largest absolute difference of its output from the reference's
    (first round; [0, 1] units), which shows the faster paths compute the same image.
    """
    if not paths or paths[0] != "reference_liif":
        raise ValueError(f"paths must start with 'reference_liif' (the baseline), got {paths}")
    out_size = output_size((lr.shape[2], lr.shape[3]), (scale, scale))
    available = full_width_paths(model, lr, out_size, args.block_queries)
    unknown = [name for name in paths if name not in available]
    if unknown:
        raise ValueError(f"unknown paths {unknown}; choose from {tuple(available)}")
    walls: dict[str, list[float]] = {name: [] for name in paths}
    cpus: dict[str, list[float]] = {name: [] for name in paths}
    max_abs: dict[str, float] = {}
    reference: torch.Tensor | None = None
    for round_index in range(args.warmup + args.repeats):
        for name in paths:
            wall, cpu = time.perf_counter(), time.process_time()
            output = available[name]()
            if lr.device.type == "cuda":
                torch.cuda.synchronize(lr.device)
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            if round_index >= args.warmup:
                walls[name].append(wall)
                cpus[name].append(cpu)
            if round_index == 0:
                if reference is None:
                    reference = output
                max_abs[name] = float((output - reference).abs().max())
            del output
    flops = count_flops(model, tuple(lr.shape[2:]), out_size, 1.0).total
    result = {
        name: {
            "time_s": statistics.median(walls[name]),
            "cpu_s": statistics.median(cpus[name]),
            "runs": walls[name],
            "max_abs_diff_vs_reference": max_abs[name],
        }
        for name in paths
    }
    print(f"full width x{scale:g}, {flops / 1e9:.1f} GFLOPs in the FLOPs model:")
    for name, row in result.items():
        speedup = result["reference_liif"]["time_s"] / row["time_s"]
        cpu_speedup = result["reference_liif"]["cpu_s"] / row["cpu_s"]
        print(
            f"  {name:>15}: {row['time_s']:.2f} s ({row['cpu_s']:.2f} cpu s), "
            f"{speedup:.2f}x faster than reference ({cpu_speedup:.2f}x by cpu time), "
            f"max |difference| {row['max_abs_diff_vs_reference']:.2e}",
            flush=True,
        )
    return result


def print_table(mode: str, scale: float, rows: list[dict[str, Any]]) -> None:
    out_h, out_w = rows[0]["out_size"]
    print(f"\n{mode} mode, x{scale:g} -> {out_h}x{out_w}")
    print(
        f"{'width':>5} {'time s':>8} {'cpu s':>8} {'GFLOPs':>8} {'GFLOP/s':>8} {'FLOPs ratio':>11} "
        f"{'time ratio':>10} {'gap':>6} {'cpu ratio':>9}"
    )
    for row in rows:
        flag = "" if abs(row["ratio_gap"]) <= RATIO_TOLERANCE else "  > 0.05"
        print(
            f"{row['width']:>5} {row['time_s']['median']:>8.2f} {row['cpu_s']['median']:>8.2f} "
            f"{row['flops']['total'] / 1e9:>8.1f} {row['gflops_per_s']:>8.1f} {row['flops_ratio']:>11.3f} "
            f"{row['time_ratio']:>10.3f} {row['ratio_gap']:>+6.3f} {row['cpu_time_ratio']:>9.3f}{flag}",
            flush=True,
        )


def check_bf16(args: Any, device: torch.device) -> dict[str, Any]:
    """Max abs difference and PSNR of bf16 against fp32 output, per mode and width, on one LR image.

    Random weights (the default) only bound the rounding error; trained weights (``--weights``) give the
    number that matters, since bf16's error depends on the activations' magnitudes.
    """
    lr = lr_image(parse_size(args.lr_size), device)
    results = []
    if args.weights is not None:
        from models.checkpoint import load_checkpoint

        model = load_checkpoint(args.weights, map_location=device)[0]
        models = {"slim" if model.spec.decoder.args.get("slim", True) else "paper": model}
    else:
        models = {mode: make_model(mode, device) for mode in args.modes.split(",")}
    for mode, model in models.items():
        for scale in (float(s) for s in args.scales.split(",")):
            out_size = output_size((lr.shape[2], lr.shape[3]), (scale, scale))
            for width in (float(w) for w in args.widths.split(",")):
                fp32 = model.upscale(lr, out_size, width, compute_dtype=torch.float32)
                bf16 = model.upscale(lr, out_size, width, compute_dtype=torch.bfloat16)
                difference = (bf16 - fp32).abs()
                mse = float(difference.square().mean())
                psnr = float("inf") if mse == 0 else 10 * np.log10(1.0 / mse)
                row = {
                    "mode": mode,
                    "scale": scale,
                    "width": width,
                    "max_abs": float(difference.max()),
                    "psnr_db": psnr,
                }
                print(f"{mode:>5} x{scale:g} w={width}: max |bf16 - fp32| = {row['max_abs']:.4f}, PSNR {psnr:.1f} dB")
                results.append(row)
    return {"bf16_vs_fp32": results}


def environment(args: Any) -> dict[str, Any]:
    return {
        "torch": torch.__version__,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "processor": platform.processor() or None,
        "cpu_count": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "device": args.device,
        "dtype": args.dtype,
        "weights": "random (seeded); timing does not depend on weight values",
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if args.check_bf16:
        report = {
            "environment": environment(args),
            "lr_size": args.lr_size,
            "weights": str(args.weights) if args.weights else "random (seeded)",
            **check_bf16(args, device),
        }
        target = args.output.with_name(args.output.stem + "_bf16.json")
    else:
        lr = lr_image(parse_size(args.lr_size), device)
        widths = [float(w) for w in args.widths.split(",")]
        load_before = os.getloadavg()
        started = time.time()
        cases = []
        for mode in args.modes.split(","):
            model = make_model(mode, device)
            for scale in (float(s) for s in args.scales.split(",")):
                rows = bench_case(model, lr, scale, widths, args)
                print_table(mode, scale, rows)
                case = {"mode": mode, "scale": scale, "rows": rows}
                if args.reference and mode == "paper":
                    case["full_width_paths"] = bench_reference(model, lr, scale, args)
                cases.append(case)
        gaps = [abs(row["ratio_gap"]) for case in cases for row in case["rows"]]
        cpu_gaps = [abs(row["cpu_time_ratio"] - row["flops_ratio"]) for case in cases for row in case["rows"]]
        report = {
            "environment": environment(args),
            "settings": {key: str(value) for key, value in vars(args).items()},
            "lr_size": list(lr.shape[2:]),
            "load_average_before": load_before,
            "load_average_after": os.getloadavg(),
            "duration_s": time.time() - started,
            "ratio_tolerance": RATIO_TOLERANCE,
            "max_ratio_gap": max(gaps),
            "max_cpu_ratio_gap": max(cpu_gaps),
            "cases": cases,
        }
        print(f"\nmax |time ratio - FLOPs ratio| = {max(gaps):.3f} (target <= {RATIO_TOLERANCE})")
        print(f"max |cpu time ratio - FLOPs ratio| = {max(cpu_gaps):.3f}")
        print(f"load average before {load_before[0]:.2f}, after {report['load_average_after'][0]:.2f}")
        target = args.output
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {target}")
    return 0


if __name__ == "__main__":
    with torch.inference_mode():
        sys.exit(main())
