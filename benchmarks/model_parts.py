"""The suite's two whole-image model parts, built on ``bench_widths``: width vs FLOPs, and ours vs reference LIIF.

``widths``: does time fall with width as the FLOPs model says? Every (mode, scale, width) is timed with
:func:`benchmarks.bench_widths.bench_case` (rounds interleaved over the widths of one mode and scale,
medians reported), after one priming run per (mode, width): kernel selection and allocations depend on
the channel counts, not on the scale (the decoder runs fixed-size query blocks), so one run each at the
smallest scale pays them for every scale.

``reference``: what the optimisations buy at full width, :meth:`AnySR.upscale` (grid decoder) against
the plain reference LIIF (unfold + four separate MLP passes) on the same input and weights, with the
largest output difference to show both compute the same image.

Weights are random and seeded: timing depends on the FLOPs, not on the weight values.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import torch

from benchmarks.bench_widths import RATIO_TOLERANCE, bench_case, bench_reference, lr_image, make_model, print_table
from benchmarks.config import SuiteConfig
from models.anysr import DEFAULT_BLOCK_QUERIES
from models.flops import count_flops


def _timing_args(config: SuiteConfig, warmup: int) -> SimpleNamespace:
    """The few ``args`` fields bench_widths' timing functions read."""
    return SimpleNamespace(warmup=warmup, repeats=config.repeats, dtype="fp32", block_queries=DEFAULT_BLOCK_QUERIES)


def _out_size(lr_size: int, scale: float) -> tuple[int, int]:
    side = round(lr_size * scale)
    return side, side


def run_widths(config: SuiteConfig) -> tuple[dict[str, Any], dict[str, Any]]:
    """Time per width vs FLOPs ratio at every scale in both modes: (config, results)."""
    device = torch.device(config.device)
    size = config.widths_lr_size
    lr = lr_image((size, size), device)
    args = _timing_args(config, warmup=0)
    smallest = min(config.widths_scales)
    cases = []
    for mode in config.widths_modes:
        model = make_model(mode, device, config.spec)
        for width in model.widths:
            model.upscale(lr, _out_size(size, smallest), width)
        for scale in config.widths_scales:
            rows = bench_case(model, lr, scale, list(model.widths), args)
            print_table(mode, scale, rows)
            cases.append({"mode": mode, "scale": scale, "rows": rows})
    rows = [(case, row) for case in cases for row in case["rows"]]
    worst_case, worst_row = max(rows, key=lambda item: abs(item[1]["ratio_gap"]))
    max_gap = abs(worst_row["ratio_gap"])
    max_cpu_gap = max(abs(row["cpu_time_ratio"] - row["flops_ratio"]) for _, row in rows)
    print(f"max |time ratio - FLOPs ratio| = {max_gap:.3f} (target <= {RATIO_TOLERANCE})", flush=True)
    settings = {
        "lr_size": [size, size],
        "scales": list(config.widths_scales),
        "modes": list(config.widths_modes),
        "widths": [row["width"] for row in cases[0]["rows"]] if cases else [],
        "repeats": config.repeats,
        "priming": "one untimed upscale per (mode, width) at the smallest scale",
        "spec": config.model_spec,
        "weights": "random (seeded)",
        "dtype": "fp32",
        "block_queries": DEFAULT_BLOCK_QUERIES,
        "image": "Set14 baboon crop if the shared data is present, else seeded noise",
    }
    results = {
        "cases": cases,
        "ratio_tolerance": RATIO_TOLERANCE,
        "max_ratio_gap": max_gap,
        "max_cpu_ratio_gap": max_cpu_gap,
        "worst": {"mode": worst_case["mode"], "scale": worst_case["scale"], "width": worst_row["width"]},
        "within_target": max_gap <= RATIO_TOLERANCE,
    }
    return settings, results


def run_reference(config: SuiteConfig) -> tuple[dict[str, Any], dict[str, Any]]:
    """Full-width AnySR.upscale vs the reference LIIF at each reference scale: (config, results)."""
    device = torch.device(config.device)
    size = config.reference_lr_size
    lr = lr_image((size, size), device)
    # Slim and paper mode are the same network at full width; slim is the product default.
    model = make_model("slim", device, config.spec)
    # One untimed round, whose outputs also give the difference between the two paths.
    args = _timing_args(config, warmup=1)
    rows = []
    for scale in config.reference_scales:
        paths = bench_reference(model, lr, scale, args, paths=("reference_liif", "upscale"))
        reference, ours = paths["reference_liif"], paths["upscale"]
        out_size = _out_size(size, scale)
        rows.append(
            {
                "scale": scale,
                "out_size": list(out_size),
                "flops": count_flops(model, (size, size), out_size, 1.0).total,
                "reference_time_s": reference["time_s"],
                "reference_cpu_s": reference["cpu_s"],
                "upscale_time_s": ours["time_s"],
                "upscale_cpu_s": ours["cpu_s"],
                "speedup": reference["time_s"] / ours["time_s"],
                "cpu_speedup": reference["cpu_s"] / ours["cpu_s"],
                "max_abs_diff": ours["max_abs_diff_vs_reference"],
                "runs": {"reference_liif": reference["runs"], "upscale": ours["runs"]},
            }
        )
    settings = {
        "lr_size": [size, size],
        "scales": list(config.reference_scales),
        "width": 1.0,
        "repeats": config.repeats,
        "warmup_rounds": 1,
        "spec": config.model_spec,
        "mode": "slim (identical to paper mode at full width)",
        "weights": "random (seeded)",
        "dtype": "fp32",
        "reference": (
            "models.decoders.liif_reference.reference_upscale: unfold + 4 MLP passes per query, 65,536 queries per chunk"
        ),
        "ours": "models.anysr.AnySR.upscale: per-LR-pixel projection + separable grid decoder",
    }
    return settings, {"rows": rows}
