"""What ``anysr eval`` writes: Markdown tables, the paper's Table 3, the JSON record and the Fig. 4 plot.

Pure formatting of :mod:`models.evaluation.evaluate` results (plus the model, for Table 3's parameter and FLOPs
columns); matplotlib is imported only to draw, and its absence only skips the plot.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from models.evaluation.evaluate import AUTO, BICUBIC, PROTOCOL, parameters_used, row_label, scale_label, subnet_cost

if TYPE_CHECKING:
    from models.anysr import AnySR
    from models.evaluation.evaluate import ImageScore, ScalePair, SummaryRow, WidthMode

#: Table 3 lists at most this many scales when none of the evaluated ones are integers.
TABLE3_MAX_SCALES = 6


def _row_order(modes: list[WidthMode]) -> list[str]:
    return [BICUBIC, *(row_label(mode) for mode in modes)]


def render_markdown(
    summary: list[SummaryRow],
    scales: list[ScalePair],
    modes: list[WidthMode],
    model: AnySR | None,
    flops_size: tuple[int, int],
    weights: dict[str, Any] | None,
) -> str:
    """One PSNR/SSIM table per dataset (scales down, rows across), then Table 3 per dataset."""
    lines = [f"Protocol: {PROTOCOL}."]
    if weights is not None:
        training = weights["training"]
        lines.append(f"Weights: `{weights['path']}` (sha256 {weights['sha256'][:12]}, step {training.get('step')}).")
    cells = {(row.dataset, row.scale, row.row): row for row in summary}
    rows = [row for row in _row_order(modes) if any(key[2] == row for key in cells)]
    for dataset in dict.fromkeys(row.dataset for row in summary):
        images = max(row.images for row in summary if row.dataset == dataset)
        lines += ["", f"### {dataset} ({images} images): PSNR (dB) / SSIM", ""]
        lines.append("| scale | " + " | ".join(rows) + " |")
        lines.append("|---|" + "---|" * len(rows))
        for scale in scales:
            values = [cells.get((dataset, scale, row)) for row in rows]
            text = [f"{value.psnr:.2f} / {value.ssim:.4f}" if value else "" for value in values]
            lines.append(f"| ×{scale_label(scale)} | " + " | ".join(text) + " |")
        if model is not None:
            lines += ["", *table3(dataset, cells, scales, modes, model, flops_size)]
    return "\n".join(lines) + "\n"


def table3(
    dataset: str,
    cells: dict[tuple[str, ScalePair, str], SummaryRow],
    scales: list[ScalePair],
    modes: list[WidthMode],
    model: AnySR,
    flops_size: tuple[int, int],
) -> list[str]:
    """The paper's Table 3 for one dataset: parameters read, PSNR (Δ vs w=1) and GFLOPs (% of w=1) per scale."""
    integer = [scale for scale in scales if scale[0] == scale[1] and float(scale[0]).is_integer()]
    chosen = integer or scales[:TABLE3_MAX_SCALES]
    full = row_label(1.0)
    header = " | ".join(f"×{scale_label(scale)} PSNR | ×{scale_label(scale)} GFLOPs" for scale in chosen)
    lines = [
        f"Table 3 ({dataset}): params read by the subnet; FLOPs for one {flops_size[0]}x{flops_size[1]} output "
        f"(LR = output / scale); deltas against {full}. Stored parameters: {_millions(parameters_used(model, 1.0))} M.",
        "",
        f"| model | params (M) | {header} |",
        "|---|---|" + "---|---|" * len(chosen),
    ]
    for mode in modes:
        row = row_label(mode)
        widths = [model.width_for_scale(*scale) if mode == AUTO else float(mode) for scale in chosen]
        params = [parameters_used(model, width) for width in widths]
        low, high = min(params), max(params)
        params_text = _millions(low) if low == high else f"{_millions(low)}–{_millions(high)}"
        pieces = []
        for scale, width in zip(chosen, widths):
            value, reference = cells.get((dataset, scale, row)), cells.get((dataset, scale, full))
            psnr = f"{value.psnr:.2f}" if value else ""
            if value and reference:
                psnr += f" ({value.psnr - reference.psnr:+.2f})"
            flops = subnet_cost(model, scale, width, flops_size).flops
            flops_full = subnet_cost(model, scale, 1.0, flops_size).flops
            pieces.append(f"{psnr} | {flops / 1e9:.2f} ({100 * flops / flops_full:.1f}%)")
        mark = " (†)" if mode == AUTO else " (‡)" if row == full else ""
        lines.append(f"| {row}{mark} | {params_text} | " + " | ".join(pieces) + " |")
    return lines


def _millions(count: int) -> str:
    return f"{count / 1e6:.3f}"


def _finite(value: float) -> float | None:
    """JSON has no infinity (PSNR of identical images): write null instead."""
    return value if math.isfinite(value) else None


def build_record(
    scores: list[ImageScore],
    summary: list[SummaryRow],
    scales: list[ScalePair],
    datasets: dict[str, list[str]],
    weights: dict[str, Any] | None,
    elapsed_s: float,
) -> dict[str, Any]:
    """Everything needed to redo or re-plot the run: protocol, inputs (image file names), per-image and mean scores.

    The caller adds how it ran (device, dtype, threads).
    """
    return {
        "protocol": PROTOCOL,
        "weights": weights,
        "datasets": datasets,
        "scales": [list(scale) for scale in scales],
        "rows": list(dict.fromkeys(row.row for row in summary)),
        "elapsed_s": round(elapsed_s, 1),
        "summary": [
            {
                "dataset": row.dataset,
                "scale": list(row.scale),
                "label": scale_label(row.scale),
                "row": row.row,
                "width": row.width,
                "psnr": _finite(row.psnr),
                "ssim": row.ssim,
                "images": row.images,
                "seconds": round(row.seconds, 4),
            }
            for row in summary
        ],
        "per_image": [
            {
                "dataset": score.dataset,
                "image": score.image,
                "scale": list(score.scale),
                "row": score.row,
                "width": score.width,
                "psnr": _finite(score.psnr),
                "ssim": score.ssim,
                "seconds": round(score.seconds, 4),
            }
            for score in scores
        ],
    }


def write_plot(summary: list[SummaryRow], path: Path) -> bool:
    """PSNR against scale, one line per row and a panel per dataset (the paper's Fig. 4); square scales only.

    Returns False (and writes nothing) when matplotlib is missing or no square scale was evaluated.
    """
    square = [row for row in summary if row.scale[0] == row.scale[1]]
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("anysr eval: matplotlib is not installed; no plot (pip install matplotlib)", file=sys.stderr)
        return False
    if not square:
        return False
    datasets = list(dict.fromkeys(row.dataset for row in square))
    figure, axes = plt.subplots(1, len(datasets), figsize=(6 * len(datasets), 4.5), squeeze=False)
    for axis, dataset in zip(axes[0], datasets):
        for name in dict.fromkeys(row.row for row in square if row.dataset == dataset):
            points = sorted((row.scale[0], row.psnr) for row in square if row.dataset == dataset and row.row == name)
            style = {"color": "black", "linestyle": "--"} if name == "bicubic" else {}
            axis.plot([p[0] for p in points], [p[1] for p in points], marker=".", label=name, **style)
        axis.set_title(f"{dataset}: PSNR (Y, shave = ceil(scale))")
        axis.set_xlabel("scale")
        axis.set_ylabel("PSNR (dB)")
        axis.grid(alpha=0.3)
        axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return True
