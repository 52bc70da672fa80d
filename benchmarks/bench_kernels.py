"""The bf16 element-wise steps that ``models/kernels.py`` replaces, timed against PyTorch's own.

Each row times one step on the sizes of a 256² ×2 upscale at full width (``--quick``: tiny sizes, for the
test), the old way and the new way, interleaved, median of ``--repeats``:

- ReLU of a (65,536, 256) bf16 block (the grid decoder's hidden layer): ``relu_`` against the int16 clamp;
- the mean of a (1, 64, 256, 256) channels-last bf16 map (ASE's pooling): ``mean`` against
  :func:`models.kernels.spatial_mean`;
- the ASE gate's MLP under CPU bf16 autocast against fp32 with autocast off (the whole
  :class:`models.ase.AnyScaleEnhancement` forward, both ways);
- ``addmm`` + int16 clamp against oneDNN's fused ``torch.ops.mkldnn._linear_pointwise`` (not public API;
  skipped where missing), the fused kernel this project chose not to use.

    python -m benchmarks.bench_kernels --threads 1      # writes benchmarks/results/kernels.json
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

from benchmarks.host import host_info, make_record, write_record
from models.ase import AnyScaleEnhancement
from models.kernels import relu_, spatial_mean

RESULTS = Path(__file__).resolve().parent / "results"


def _old_ase_forward(ase: AnyScaleEnhancement, features: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """The gate before the change: the MLP under whatever autocast is active, ``mean`` for the pooling."""
    channels = features.shape[1]
    vector = ase.build_vector(features.mean(dim=(2, 3)), scale)
    hidden = F.relu(F.linear(vector, ase.fc1.weight[:, : vector.shape[1]], ase.fc1.bias))
    gate = 2.0 * torch.sigmoid(F.linear(hidden, ase.fc2.weight[:channels], ase.fc2.bias[:channels]))
    return features * gate[:, :, None, None]


def cases(quick: bool) -> dict[str, tuple[Callable[[], object], Callable[[], object]]]:
    """name → (old, new) callables on bf16 inputs of the served sizes (or tiny ones)."""
    rows, side = (256, 16) if quick else (65_536, 256)
    generator = torch.Generator().manual_seed(0)
    block = torch.randn(rows, 256, generator=generator).bfloat16()
    feature_map = torch.randn(1, 64, side, side, generator=generator).bfloat16()
    feature_map = feature_map.contiguous(memory_format=torch.channels_last)
    ase = AnyScaleEnhancement(64, 128, 16, True).eval()
    torch.nn.init.normal_(ase.fc2.weight, std=0.01)  # a trained-like gate, not the identity start
    scale = torch.tensor([[2.0, 2.0]])
    weight = torch.randn(256, 256, generator=generator).bfloat16() * 0.05
    bias = torch.randn(256, generator=generator).bfloat16()
    weight_t = weight.t().contiguous()
    out = torch.empty(rows, 256, dtype=torch.bfloat16)

    def under_autocast(step: Callable[[], object]) -> Callable[[], object]:
        def run() -> object:
            with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
                return step()

        return run

    table: dict[str, tuple[Callable[[], object], Callable[[], object]]] = {
        "relu (rows x 256)": (lambda: block.relu_(), lambda: relu_(block)),
        "spatial mean (64 ch map)": (lambda: feature_map.mean(dim=(2, 3)), lambda: spatial_mean(feature_map)),
        "ASE gate, whole forward": (
            under_autocast(lambda: _old_ase_forward(ase, feature_map, scale)),
            under_autocast(lambda: ase(feature_map, scale)),
        ),
    }
    if hasattr(torch.ops.mkldnn, "_linear_pointwise"):
        table["linear+ReLU: fused oneDNN vs addmm+clamp"] = (
            lambda: torch.ops.mkldnn._linear_pointwise(block, weight, bias, "relu", [], ""),
            lambda: relu_(torch.addmm(bias, block, weight_t, out=out)),
        )
    return table


def time_pair(old: Callable[[], object], new: Callable[[], object], repeats: int) -> tuple[float, float]:
    """Median seconds of each, one warm-up call each, then ``repeats`` interleaved rounds."""
    old(), new()
    times: tuple[list[float], list[float]] = ([], [])
    for _ in range(repeats):
        for index, step in enumerate((old, new)):
            started = time.perf_counter()
            step()
            times[index].append(time.perf_counter() - started)
    return statistics.median(times[0]), statistics.median(times[1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_kernels", description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--repeats", type=int, default=9, help="(%(default)s)")
    parser.add_argument("--quick", action="store_true", help="tiny sizes, for the test")
    parser.add_argument("--out", type=Path, default=RESULTS, help="results folder (%(default)s)")
    args = parser.parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    started, load = time.monotonic(), os.getloadavg()
    results = {}
    print(f"{'step':44s} {'old ms':>9s} {'new ms':>9s} {'speed-up':>9s}")
    for name, (old, new) in cases(args.quick).items():
        old_s, new_s = time_pair(old, new, args.repeats)
        results[name] = {"old_s": old_s, "new_s": new_s, "speedup": old_s / new_s}
        print(f"{name:44s} {old_s * 1e3:9.2f} {new_s * 1e3:9.2f} {old_s / new_s:8.2f}x")
    command = "python -m benchmarks.bench_kernels " + " ".join(argv if argv is not None else sys.argv[1:])
    config = {"quick": args.quick, "repeats": args.repeats, "dtype": "bf16"}
    record = make_record("kernels", command.strip(), config, results, host_info("cpu", args.threads), load, started)
    print(f"wrote {write_record(args.out, record)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
