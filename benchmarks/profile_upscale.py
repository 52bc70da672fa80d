"""Where one upscale spends its time, per precision: torch.profiler's top operators by self time.

    python -m benchmarks.profile_upscale                       # 256² baboon crop, ×2, width 1.0, bf16 and fp32
    python -m benchmarks.profile_upscale --size 128 --scale 4 --precisions bf16 --device cuda

The shipped weights (random ones of the default spec with ``--allow-untrained``: same FLOPs), one
untimed run per precision, then one profiled run. Prints each precision's table and the share of its
time in the matrix products (``mm``, ``addmm``, convolutions) against everything else, which is what
says whether a precision is bounded by its products or by the element-wise work around them.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

from benchmarks.bench_server_overhead import bench_image
from benchmarks.config import DEFAULT_WEIGHTS, SuiteConfig
from benchmarks.served_precision import decode_png, load_model
from models.geometry import output_size
from models.precision import DTYPES

#: Operators that are matrix products (the work the FLOPs model counts).
PRODUCTS = ("aten::mm", "aten::addmm", "aten::mkldnn_convolution", "aten::convolution", "aten::_convolution")


def profile_upscale(
    size: int, scale: float, precisions: list[str], device: str, weights: Path, untrained: bool
) -> None:
    torch_device = torch.device(device)
    model = load_model(SuiteConfig(weights=weights, allow_untrained=untrained, device=device), torch_device)
    lr = decode_png(bench_image(size)[0]).to(torch_device)
    out = output_size((size, size), (scale, scale))
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if torch_device.type == "cuda" else [])
    key = "self_device_time_total" if torch_device.type == "cuda" else "self_cpu_time_total"
    for name in precisions:
        model.upscale(lr, out, 1.0, compute_dtype=DTYPES[name])
        with profile(activities=activities) as prof:
            model.upscale(lr, out, 1.0, compute_dtype=DTYPES[name])
            if torch_device.type == "cuda":
                torch.cuda.synchronize(torch_device)
        events = prof.key_averages()
        total = sum(getattr(event, key) for event in events)
        products = sum(getattr(event, key) for event in events if event.key in PRODUCTS)
        print(f"== {name}: {size}² ×{scale:g} → {out[0]}×{out[1]}, width 1.0, {torch.get_num_threads()} threads")
        print(events.table(sort_by=key, row_limit=12))
        print(
            f"{name}: {total / 1e6:.3f} s of self time, {products / 1e6:.3f} s ({products / total:.0%}) in matrix "
            f"products, {(total - products) / 1e6:.3f} s ({1 - products / total:.0%}) in everything else\n",
            flush=True,
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.profile_upscale", description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=256, help="LR side (%(default)s)")
    parser.add_argument("--scale", type=float, default=2.0, help="(%(default)s)")
    parser.add_argument("--precisions", default="bf16,fp32", help="comma-separated (%(default)s)")
    parser.add_argument("--device", default="cpu", help="(%(default)s)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--weights", type=Path, default=DEFAULT_WEIGHTS, help="(%(default)s)")
    parser.add_argument("--allow-untrained", action="store_true", help="random weights if the file is missing")
    args = parser.parse_args(argv)
    precisions = [name.strip() for name in args.precisions.split(",") if name.strip()]
    unknown = [name for name in precisions if name not in DTYPES]
    if unknown or not precisions:
        parser.error(f"--precisions must be a subset of {','.join(DTYPES)}, got {args.precisions!r}")
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    profile_upscale(args.size, args.scale, precisions, args.device, args.weights, args.allow_untrained)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
