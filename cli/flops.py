"""``anysr flops``: the FLOPs model's numbers for one upscale, per width, without building a model.

Reads :func:`models.flops.count_flops` (exact MAC counts of what runs, 1 MAC = 2 FLOPs) for the default
architecture in slim-decoder or paper mode. Nothing is timed here; ``benchmarks/bench_widths.py`` does that.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from typing import Any

from cli.common import CliError, add_scale_arguments, choose_width, gflops, parse_size, plan_scale

HELP = "FLOPs per width (encoder, decoder, total, ratio to full width) for one upscale"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--lr", type=parse_size, default=(256, 256), metavar="HxW", help="LR input size (256x256)")
    add_scale_arguments(parser)
    parser.add_argument(
        "--mode",
        choices=("slim", "paper"),
        default="slim",
        help="slim: the width also slices the decoder MLP (product default); paper: decoder always full",
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")


def run(args: argparse.Namespace) -> int:
    try:
        report = flops_report(args)
    except CliError as error:
        print(f"anysr flops: error: {error}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(format_report(report))
    return 0


def flops_report(args: argparse.Namespace) -> dict[str, Any]:
    """Every width's FLOPs for the requested upscale, as a JSON-ready dict."""
    from models.flops import FLOPS_PER_MAC, count_flops
    from models.spec import ModelSpec

    plan = plan_scale(args, args.lr)
    spec = ModelSpec(slim_decoder=args.mode == "slim")
    counts = {width: count_flops(spec, args.lr, (plan.out_h, plan.out_w), width) for width in spec.widths}
    full = counts[max(spec.widths)].total
    return {
        "lr_size": list(args.lr),
        "out_size": [plan.out_h, plan.out_w],
        "scale": [plan.scale_h, plan.scale_w],
        "mode": args.mode,
        "flops_per_mac": FLOPS_PER_MAC,
        "auto_width": choose_width(None, plan).width,
        "spec": dataclasses.asdict(spec),
        "widths": [
            {
                "width": width,
                "encoder_flops": count.encoder,
                "decoder_flops": count.decoder,
                "total_flops": count.total,
                "ratio_to_full": count.total / full,
            }
            for width, count in counts.items()
        ],
    }


def format_report(report: dict[str, Any]) -> str:
    """The report as an aligned table with a one-line header naming the case."""
    (lr_h, lr_w), (out_h, out_w) = report["lr_size"], report["out_size"]
    scale_h, scale_w = report["scale"]
    lines = [
        f"FLOPs of one {lr_h}x{lr_w} -> {out_h}x{out_w} upscale (scale {scale_h:.4g} x {scale_w:.4g}), "
        f"{report['mode']} mode; 1 MAC = {report['flops_per_mac']} FLOPs",
        f"{'width':>6}  {'encoder GFLOPs':>14}  {'decoder GFLOPs':>14}  {'total GFLOPs':>12}  {'ratio':>6}",
    ]
    for row in report["widths"]:
        marker = "  <- auto for this scale" if row["width"] == report["auto_width"] else ""
        lines.append(
            f"{row['width']:>6}  {gflops(row['encoder_flops']):>14}  {gflops(row['decoder_flops']):>14}  "
            f"{gflops(row['total_flops']):>12}  {row['ratio_to_full']:>6.3f}{marker}"
        )
    return "\n".join(lines)
