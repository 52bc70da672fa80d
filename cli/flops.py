"""``anysr flops``: the FLOPs model's numbers for one upscale, per width, without building a model.

Reads :func:`models.flops.count_flops` (exact MAC counts of what runs, 1 MAC = 2 FLOPs) for any registered
encoder and decoder at their default arguments (``anysr models`` lists them), or for the model a weights
file describes; ``--mode paper`` keeps a sliceable decoder full. The model is built on the meta device
(no memory). Nothing is timed here; ``benchmarks/bench_widths.py`` does that.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cli.common import CliError, add_scale_arguments, choose_width, gflops, parse_size, plan_scale

if TYPE_CHECKING:
    from models.spec import ModelSpec

HELP = "FLOPs per width (encoder, decoder, total, ratio to full width) for one upscale"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--lr", type=parse_size, default=(256, 256), metavar="HxW", help="LR input size (256x256)")
    add_scale_arguments(parser)
    parser.add_argument("--encoder", default=None, help="registered encoder (default edsr-baseline; see anysr models)")
    parser.add_argument("--decoder", default=None, help="registered decoder (default liif; see anysr models)")
    parser.add_argument("--weights", type=Path, default=None, help="take the model from this weights file instead")
    parser.add_argument(
        "--mode",
        choices=("slim", "paper"),
        default="slim",
        help="slim: the width also slices the decoder's hidden layers (product default); paper: decoder always full",
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


def model_spec(args: argparse.Namespace) -> ModelSpec:
    """The spec to count: the weights file's, or the named parts (``--mode paper`` sets ``slim: false``)."""
    from models.registry import entry, resolve_spec
    from models.spec import DEFAULT_DECODER, DEFAULT_ENCODER, ModelSpec

    if args.weights is not None:
        if args.encoder or args.decoder:
            raise CliError("give either --weights or --encoder/--decoder, not both")
        from models.checkpoint import CheckpointError, read_checkpoint_info

        try:
            spec = read_checkpoint_info(args.weights).spec
        except CheckpointError as error:
            raise CliError(str(error)) from None
    else:
        try:
            spec = resolve_spec(ModelSpec.of(args.encoder or DEFAULT_ENCODER, args.decoder or DEFAULT_DECODER))
        except ValueError as error:
            raise CliError(str(error)) from None
    if args.mode == "paper":
        if "slim" not in spec.decoder.args:
            name = spec.decoder.name
            raise CliError(f"decoder {name!r} has no hidden width to slice, so it has no paper mode")
        spec = spec.replace_args(decoder={"slim": False})
    entry("decoder", spec.decoder.name)
    return spec


def flops_report(args: argparse.Namespace) -> dict[str, Any]:
    """Every width's FLOPs for the requested upscale, as a JSON-ready dict."""
    import torch

    from models.anysr import build_model
    from models.flops import FLOPS_PER_MAC, count_flops

    plan = plan_scale(args, args.lr)
    spec = model_spec(args)
    with torch.device("meta"):
        model = build_model(spec)
    counts = {width: count_flops(model, args.lr, (plan.out_h, plan.out_w), width) for width in model.widths}
    full = counts[1.0].total
    mode = args.mode if "slim" in spec.decoder.args else "encoder-only"
    return {
        "lr_size": list(args.lr),
        "out_size": [plan.out_h, plan.out_w],
        "scale": [plan.scale_h, plan.scale_w],
        "mode": mode,
        "model": spec.label,
        "flops_per_mac": FLOPS_PER_MAC,
        "auto_width": choose_width(None, plan, model.widths).width,
        "spec": spec.to_dict(),
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
        f"FLOPs of one {lr_h}x{lr_w} -> {out_h}x{out_w} upscale (scale {scale_h:.4g} x {scale_w:.4g}) by "
        f"{report['model']}, {report['mode']} mode; 1 MAC = {report['flops_per_mac']} FLOPs",
        f"{'width':>6}  {'encoder GFLOPs':>14}  {'decoder GFLOPs':>14}  {'total GFLOPs':>12}  {'ratio':>6}",
    ]
    for row in report["widths"]:
        marker = "  <- auto for this scale" if row["width"] == report["auto_width"] else ""
        lines.append(
            f"{row['width']:>6}  {gflops(row['encoder_flops']):>14}  {gflops(row['decoder_flops']):>14}  "
            f"{gflops(row['total_flops']):>12}  {row['ratio_to_full']:>6.3f}{marker}"
        )
    return "\n".join(lines)
