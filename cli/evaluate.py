"""``anysr eval``: benchmark PSNR/SSIM per scale and width, with a bicubic row, tables, JSON and a plot.

The measuring lives in :mod:`models.evaluation.evaluate` (protocol in its docstring) and the writing in
:mod:`cli.eval_report`; this module parses the command line, reports progress on stderr and puts the
results where they were asked for: Markdown on stdout, and with ``--out-dir`` also ``eval.md``,
``eval.json`` and ``psnr_vs_scale.png``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from models.anysr import AnySR
    from models.evaluation.evaluate import EvalProgress, ImageScore, ScalePair, WidthMode

HELP = "benchmark PSNR/SSIM (Y, shave = scale) per scale and width, beside bicubic; tables, JSON and a plot"

#: Where the shipped weights live (the server's default too).
DEFAULT_WEIGHTS = Path("weights/anysr-edsr-liif.safetensors")


def default_data_dirs() -> list[Path]:
    """Set5 and Set14 in the ``shared`` folder beside the repository (or ``$ANYSR_SHARED_DIR``)."""
    override = os.environ.get("ANYSR_SHARED_DIR")
    shared = Path(override) if override else Path(__file__).resolve().parents[1] / ".." / "shared"
    return [shared / "datasets" / "Set5", shared / "datasets" / "Set14"]


def parse_scales(text: str) -> list[ScalePair]:
    """``"2,3,4"``, ``"1.1:4.0:0.1"`` (inclusive range) or a mix, as square (s, s) pairs, duplicates dropped."""
    values: list[float] = []
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        if ":" in item:
            pieces = item.split(":")
            if len(pieces) != 3:
                raise ValueError(f"a scale range is START:STOP:STEP, got {item!r}")
            start, stop, step = (_number(piece, item) for piece in pieces)
            if step <= 0 or stop < start:
                raise ValueError(f"a scale range needs STEP > 0 and STOP >= START, got {item!r}")
            count = math.floor((stop - start) / step + 1e-9) + 1
            values.extend(round(start + index * step, 10) for index in range(count))
        else:
            values.append(_number(item, item))
    if not values:
        raise ValueError(f"no scales in {text!r}")
    return _unique([_check_scale((value, value)) for value in values])


def parse_scale_pairs(text: str) -> list[ScalePair]:
    """``"1.5x2.5,2x3"`` as (s_h, s_w) pairs (non-square scales)."""
    pairs = []
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        pieces = item.lower().split("x")
        if len(pieces) != 2:
            raise ValueError(f"a scale pair is HxW, e.g. 1.5x2.5, got {item!r}")
        pairs.append(_check_scale((_number(pieces[0], item), _number(pieces[1], item))))
    return _unique(pairs)


def parse_width_modes(text: str, widths: tuple[float, ...] | None = None) -> list[WidthMode]:
    """``auto``, ``all`` (every width and auto), ``none`` (bicubic only) or a list such as ``0.5,1.0,auto``.

    Fixed widths must be the model's ``widths``; without them (a syntax check before the model is loaded)
    any width in (0, 1] passes, and ``all`` stands for the EDSR default set.
    """
    from models.evaluation.evaluate import AUTO
    from models.widths import WIDTHS, check_width

    def width_of(item: str) -> float:
        value = _number(item, item)
        if widths is not None:
            return check_width(value, widths)
        if not 0.0 < value <= 1.0:
            raise ValueError(f"a width is a number in (0, 1], got {item!r}")
        return value

    text = text.strip().lower()
    if text == "none":
        return []
    if text == "all":
        return [*(widths or WIDTHS), AUTO]
    modes: list[WidthMode] = []
    for item in (part.strip() for part in text.split(",")):
        mode: WidthMode = AUTO if item == AUTO else width_of(item)
        if mode not in modes:
            modes.append(mode)
    return sorted(modes, key=lambda mode: math.inf if mode == AUTO else float(mode))


def parse_size(text: str) -> tuple[int, int]:
    """``"256"`` or ``"256x192"`` (height x width) as a positive size."""
    pieces = text.lower().split("x")
    if len(pieces) not in (1, 2) or not all(piece.strip().isdigit() for piece in pieces):
        raise ValueError(f"a size is N or HxW in pixels, got {text!r}")
    height, width = int(pieces[0]), int(pieces[-1])
    if height < 1 or width < 1:
        raise ValueError(f"a size must be at least 1x1, got {text!r}")
    return height, width


def _number(text: str, context: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"not a number: {text!r} in {context!r}") from None


def _check_scale(scale: ScalePair) -> ScalePair:
    if min(scale) < 1.0:
        raise ValueError(f"scales must be at least 1.0, got {scale[0]:g}x{scale[1]:g}")
    return scale


def _unique(pairs: list[ScalePair]) -> list[ScalePair]:
    return list(dict.fromkeys(pairs))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--weights", type=Path, default=DEFAULT_WEIGHTS, help=f"safetensors file [{DEFAULT_WEIGHTS}]")
    parser.add_argument(
        "--data", type=Path, nargs="+", default=None, help="folders of HR images [shared/datasets/Set5 Set14]"
    )
    parser.add_argument("--scales", default="2,3,4", help="e.g. 2,3,4 or 1.1:4.0:0.1 (inclusive) [2,3,4]")
    parser.add_argument("--scale-pairs", default="", help="non-square scales HxW, e.g. 1.5x2.5,2x3")
    parser.add_argument(
        "--widths", default="auto,1.0", help="auto (scale-group width), all, none (bicubic only), or e.g. 0.5,1.0"
    )
    parser.add_argument("--bicubic", action=argparse.BooleanOptionalAction, default=True, help="bicubic row [on]")
    parser.add_argument("--out-dir", type=Path, default=None, help="write eval.md, eval.json, psnr_vs_scale.png here")
    parser.add_argument("--flops-size", default="256", help="output size (N or HxW) Table 3's FLOPs refer to [256]")
    parser.add_argument("--device", default="cpu", help="torch device for the model [cpu]")
    parser.add_argument("--compute-dtype", choices=("fp32", "bf16"), default="fp32", help="[fp32]")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch's default)")
    parser.add_argument("--max-images", type=int, default=None, help="first N images of each folder (quick checks)")
    parser.add_argument("--quiet", action="store_true", help="no per-image progress on stderr")
    parser.add_argument(
        "--merge",
        type=Path,
        nargs="+",
        default=None,
        metavar="EVAL_JSON",
        help="evaluate nothing: combine eval.json files of one model split by scale into one report "
        "(--weights must be the file they scored; it supplies Table 3)",
    )


def run(args: argparse.Namespace) -> int:
    if args.merge:
        return _run_merge(args)
    import torch

    from models.evaluation.evaluate import evaluate, scale_label
    from models.images import list_images

    try:
        scales = parse_scales(args.scales) + (parse_scale_pairs(args.scale_pairs) if args.scale_pairs else [])
        modes = parse_width_modes(args.widths)  # syntax now; the model's own widths once it is loaded
        flops_size = parse_size(args.flops_size)
        if args.max_images is not None and args.max_images < 1:
            raise ValueError(f"--max-images must be at least 1, got {args.max_images}")
        if args.threads < 0:
            raise ValueError(f"--threads must be >= 0, got {args.threads}")
        folders = args.data or default_data_dirs()
        datasets = {Path(folder).name: list_images([folder])[: args.max_images] for folder in folders}
    except (ValueError, FileNotFoundError) as error:
        print(f"anysr eval: {error}", file=sys.stderr)
        return 2
    if args.threads:
        torch.set_num_threads(args.threads)
    # Scores must not depend on the card: keep CUDA convolutions and matmuls in true fp32 (no TF32).
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False

    model, weights = None, None
    if args.widths.strip().lower() != "none":
        loaded = _load_weights(args.weights, args.device)
        if loaded is None:
            return 2
        model, weights = loaded
        try:
            modes = parse_width_modes(args.widths, model.widths)
        except ValueError as error:
            print(f"anysr eval: {error}", file=sys.stderr)
            return 2

    def progress(update: EvalProgress) -> None:
        score = update.score
        print(
            f"[{update.done}/{update.total}] {score.dataset}/{score.image} x{scale_label(score.scale)} {score.row}: "
            f"{score.psnr:.2f} dB, SSIM {score.ssim:.4f} ({score.seconds:.2f} s)",
            file=sys.stderr,
            flush=True,
        )

    started = time.perf_counter()
    dtype = torch.bfloat16 if args.compute_dtype == "bf16" else torch.float32
    scores = evaluate(model, datasets, scales, modes, args.bicubic, dtype, None if args.quiet else progress)
    how = {"device": args.device, "compute_dtype": args.compute_dtype, "threads": torch.get_num_threads()}
    names = {name: [path.name for path in paths] for name, paths in datasets.items()}
    elapsed_s = time.perf_counter() - started
    done = f"in {elapsed_s:.0f} s"
    _report(scores, scales, modes, model, flops_size, weights, names, elapsed_s, how, args.out_dir, done)
    return 0


def _load_weights(path: Path, device: str) -> tuple[AnySR, dict[str, Any]] | None:
    """The model and how reports name it, or None after printing why it cannot be loaded."""
    from models.checkpoint import CheckpointError, load_checkpoint

    try:
        model, info = load_checkpoint(path, map_location=device)
    except CheckpointError as error:
        print(f"anysr eval: {error}", file=sys.stderr)
        return None
    weights = {"path": str(info.path), "sha256": info.sha256, "spec": json.loads(info.spec.to_json())}
    weights["training"] = {key: info.training.get(key) for key in ("stage", "step", "elapsed_s")}
    return model, weights


def _run_merge(args: argparse.Namespace) -> int:
    from cli.eval_merge import merge_records

    try:
        merged = merge_records(args.merge)
        flops_size = parse_size(args.flops_size)
    except ValueError as error:
        print(f"anysr eval: {error}", file=sys.stderr)
        return 2
    model, weights = None, None
    if merged.modes:
        loaded = _load_weights(args.weights, "cpu")
        if loaded is None:
            return 2
        model, weights = loaded
        if weights["sha256"] != merged.weights_sha256:
            print(
                f"anysr eval: the records scored weights sha256 {merged.weights_sha256}, but --weights "
                f"{args.weights} is {weights['sha256']}",
                file=sys.stderr,
            )
            return 2
    how: dict[str, Any] = {"merged_from": merged.runs}
    for key in ("device", "compute_dtype", "threads"):
        values = {run[key] for run in merged.runs}
        how[key] = values.pop() if len(values) == 1 else None
    _report(
        merged.scores,
        merged.scales,
        merged.modes,
        model,
        flops_size,
        weights,
        merged.datasets,
        merged.elapsed_s,
        how,
        args.out_dir,
        f"from {len(merged.runs)} records ({merged.elapsed_s:.0f} s of evaluation in all)",
    )
    return 0


def _report(
    scores: list[ImageScore],
    scales: list[ScalePair],
    modes: list[WidthMode],
    model: AnySR | None,
    flops_size: tuple[int, int],
    weights: dict[str, Any] | None,
    datasets: dict[str, list[str]],
    elapsed_s: float,
    how: dict[str, Any],
    out_dir: Path | None,
    done: str,
) -> None:
    """Markdown on stdout; with an output folder also eval.md, eval.json and the plot."""
    from cli.eval_report import build_record, render_markdown, write_plot
    from models.evaluation.evaluate import summarise

    summary = summarise(scores)
    markdown = render_markdown(summary, scales, modes, model, flops_size, weights)
    print(markdown, end="")
    if out_dir is None:
        return
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "eval.md").write_text(markdown)
    record = build_record(scores, summary, scales, datasets, weights, elapsed_s)
    record.update(how)
    (out_dir / "eval.json").write_text(json.dumps(record, indent=2) + "\n")
    plotted = write_plot(summary, out_dir / "psnr_vs_scale.png")
    written = ["eval.md", "eval.json", *(["psnr_vs_scale.png"] if plotted else [])]
    print(f"wrote {', '.join(written)} to {out_dir} {done}", file=sys.stderr)
