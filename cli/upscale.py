"""``anysr upscale IN OUT``: one image through the model on this machine, no server.

Reads like the pipeline: decode → validate → plan (scale, output size, width) → load weights → infer
(with a progress bar for large outputs) → encode → report width and why, FLOPs (from the FLOPs model)
and time. It never pretends: without a weights file it says so and exits 1; ``--allow-untrained`` runs
a randomly initialised model for smoke tests and labels the run (and PNG output metadata) as untrained.
Exit status: 0 done, 1 weights or I/O failure, 2 invalid request.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from cli.common import (
    DEFAULT_MAX_OUTPUT_PIXELS,
    DEFAULT_WEIGHTS,
    CliError,
    ScalePlan,
    add_scale_arguments,
    choose_width,
    gflops,
    parse_width,
    plan_scale,
)

if TYPE_CHECKING:
    import torch

    from models.anysr import AnySR

HELP = "upscale one image file by any scale (width auto from the scale group, or forced)"

#: Outputs at least this large (pixels) get a progress bar on stderr.
PROGRESS_MIN_PIXELS = 1 << 20

#: Seed of the ``--allow-untrained`` model, so smoke-test outputs repeat.
UNTRAINED_SEED = 0


class WeightsError(Exception):
    """No usable weights: missing file or a broken checkpoint. Exit status 1."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("input", type=Path, metavar="IN", help="input image (any format Pillow reads)")
    parser.add_argument("output", type=Path, metavar="OUT", help="output image; the extension picks the format")
    add_scale_arguments(parser)
    parser.add_argument(
        "--width",
        type=parse_width,
        default=None,
        metavar="W",
        help="one of the model's widths (EDSR-baseline: 0.5, 0.7, 0.9, 1.0) or auto (default: auto)",
    )
    parser.add_argument("--weights", type=Path, default=DEFAULT_WEIGHTS, help=f"weights file ({DEFAULT_WEIGHTS})")
    parser.add_argument(
        "--allow-untrained",
        action="store_true",
        help="if the weights file is missing, use a randomly initialised model (smoke tests only; labelled)",
    )
    parser.add_argument("--device", choices=("cpu", "cuda", "auto"), default="auto", help="where to run (auto)")
    parser.add_argument(
        "--precision",
        choices=("auto", "fp32", "bf16", "fp16"),
        default="auto",
        help="compute precision; auto: bf16 on CUDA, and on a CPU with native bf16 when a short probe finds it "
        "faster and close to fp32, else fp32 (the server's rule) [auto]",
    )
    parser.add_argument("--threads", type=int, default=None, metavar="N", help="CPU threads (default: torch's)")
    parser.add_argument(
        "--max-output-pixels",
        type=int,
        default=DEFAULT_MAX_OUTPUT_PIXELS,
        metavar="N",
        help=f"refuse larger outputs (default {DEFAULT_MAX_OUTPUT_PIXELS:,})",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    try:
        report = upscale_file(args)
    except CliError as error:
        print(f"anysr upscale: error: {error}", file=sys.stderr)
        return 2
    except WeightsError as error:
        print(f"anysr upscale: error: {error}", file=sys.stderr)
        return 1
    print("\n".join(report))
    return 0


def upscale_file(args: argparse.Namespace) -> list[str]:
    """Do the whole job; returns the report lines. Raises :class:`CliError` or :class:`WeightsError`."""
    from cli.image_files import output_format, read_image, upscale_alpha, write_image

    if args.threads is not None and args.threads < 1:
        raise CliError(f"--threads must be >= 1, got {args.threads}")
    if args.max_output_pixels < 1:
        raise CliError(f"--max-output-pixels must be >= 1, got {args.max_output_pixels}")
    fmt = output_format(args.output)  # fail on a bad extension before any work
    if args.output.resolve() == args.input.resolve():
        raise CliError(f"OUT must differ from IN ({args.input}); refusing to overwrite the input")
    image = read_image(args.input)
    plan = plan_scale(args, image.size)
    out_pixels = plan.out_h * plan.out_w
    if out_pixels > args.max_output_pixels:
        raise CliError(
            f"output {plan.out_h}x{plan.out_w} = {out_pixels:,} pixels exceeds --max-output-pixels "
            f"{args.max_output_pixels:,}"
        )
    import torch

    device = _device(args.device)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    load_start = time.perf_counter()
    model, weights_line, provenance = _load_model(args.weights, args.allow_untrained, device)
    load_s = time.perf_counter() - load_start
    choice = choose_width(args.width, plan, model.widths)
    from models.precision import choose_precision

    try:
        precision = choose_precision(model, device, args.precision)
    except ValueError as error:
        raise CliError(f"--precision: {error}") from None
    compute_dtype = precision.dtype

    lr = torch.from_numpy(image.rgb).permute(2, 0, 1)[None].to(device)
    rgb, infer_s = _infer(model, lr, plan, choice.width, compute_dtype, show_progress=not args.quiet)
    pixels = rgb[0].mul(255).round_().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
    alpha = upscale_alpha(image.alpha, (plan.out_h, plan.out_w)) if image.alpha is not None else None
    text = {**provenance, "AnySR-Width": str(choice.width), "AnySR-Scale": f"{plan.scale_h:g}x{plan.scale_w:g}"}
    write_notes = write_image(args.output, pixels, alpha, image.grey, text)

    from models.flops import count_flops

    flops = count_flops(model, image.size, (plan.out_h, plan.out_w), choice.width)
    count = torch.get_num_threads()
    threads = f", {count} thread{'s' if count != 1 else ''}" if device.type == "cpu" else ""
    lines = [
        f"wrote {args.output} ({plan.out_h}x{plan.out_w} {fmt}) from {args.input} ({image.size[0]}x{image.size[1]} "
        f"{image.mode}), scale {plan.scale_h:.4g} x {plan.scale_w:.4g} (sizes are HxW)",
        f"width {choice.width} ({choice.reason})",
        f"FLOPs {gflops(flops.total)} G (encoder {gflops(flops.encoder)} G + decoder {gflops(flops.decoder)} G; "
        "1 MAC = 2 FLOPs)",
        f"time {infer_s:.2f} s inference on {device.type} ({precision.precision}{threads}), "
        f"{flops.total / infer_s / 1e9:.1f} GFLOP/s; model load {load_s:.2f} s",
        weights_line,
    ]
    notes = [*image.notes, *write_notes, *_bf16_notes(precision.precision == "bf16", device)]
    if precision.probe:  # auto ran the bf16 probe: say what it found
        notes.append(f"precision {precision.reason}")
    lines += [f"note: {note}" for note in notes]
    return lines


def _device(name: str) -> torch.device:
    from models.devices import resolve_device

    try:
        return resolve_device(name)
    except ValueError as error:
        raise CliError(f"--device: {error}") from None


def _load_model(weights: Path, allow_untrained: bool, device: torch.device) -> tuple[AnySR, str, dict[str, str]]:
    """The model, the report line naming its weights, and provenance text for the output file."""
    import torch

    if not weights.exists():
        if not allow_untrained:
            raise WeightsError(
                f"no weights file at {weights}: trained weights are not available yet. Pass --weights PATH, "
                "or --allow-untrained for a smoke test with a randomly initialised (useless) model"
            )
        from models.anysr import build_model
        from models.spec import ModelSpec

        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(UNTRAINED_SEED)
            model = build_model(ModelSpec())
        print(
            "anysr upscale: WARNING: UNTRAINED model (random weights): the output is not a super-resolution result",
            file=sys.stderr,
        )
        line = f"weights: UNTRAINED (random initialisation, seed {UNTRAINED_SEED}; no file at {weights})"
        return model.to(device).eval(), line, {"AnySR-Weights": "UNTRAINED random initialisation"}

    from models.checkpoint import CheckpointError, load_checkpoint

    try:
        model, info = load_checkpoint(weights, map_location=device)
    except CheckpointError as error:
        raise WeightsError(str(error)) from None
    return model, f"weights: {weights} (sha256 {info.sha256[:16]}...)", {"AnySR-Weights": f"sha256:{info.sha256}"}


def _infer(
    model: AnySR, lr: torch.Tensor, plan: ScalePlan, width: float, compute_dtype: torch.dtype, show_progress: bool
) -> tuple[torch.Tensor, float]:
    """Run the model, with a tqdm bar on stderr for large outputs; returns (rgb (1, 3, H, W), seconds)."""
    import torch
    from tqdm import tqdm

    total = plan.out_h * plan.out_w
    disable = not show_progress or total < PROGRESS_MIN_PIXELS
    bar = tqdm(total=total, unit="px", unit_scale=True, desc="upscale", file=sys.stderr, leave=False, disable=disable)

    def progress(done: int, _total: int) -> None:
        bar.update(done - bar.n)

    start = time.perf_counter()
    try:
        rgb = model.upscale(
            lr,
            (plan.out_h, plan.out_w),
            width,
            scale=(plan.scale_h, plan.scale_w),
            progress=progress,
            compute_dtype=compute_dtype,
        )
        if lr.device.type == "cuda":
            torch.cuda.synchronize(lr.device)
    finally:
        bar.close()
    return rgb, time.perf_counter() - start


def _bf16_notes(bf16: bool, device: torch.device) -> list[str]:
    """Say so when bf16 is asked for on a CPU without fast bf16 kernels (it is then far slower than fp32)."""
    if not bf16 or device.type != "cpu":
        return []
    import torch

    fast = getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", None)
    if fast is not None and not fast():
        return ["this CPU has no fast bf16 kernels (needs AVX512-BF16 or AMX); fp32 is faster here"]
    return []
