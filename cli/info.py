"""``anysr info``: what the model is (its parts, widths, scale groups, parameters per width) and what the weights file is.

The weights file is validated exactly as loading would (:func:`models.checkpoint.read_checkpoint_info`),
but no model is built from it: everything per width comes from a meta-device model (no memory) that
asks its parts (parameters each width reads, receptive radius). Without a weights file the command
says so plainly and describes the default architecture; it exits 0 then, since nothing failed.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from cli.common import DEFAULT_WEIGHTS, describe_group
from models.spec import ModelSpec
from models.widths import SCALE_GROUP_BOUNDS, SCALE_GROUP_GRIDS, group_width

HELP = "the model's parts, widths and scale groups, parameters per width, and the weights file's facts"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--weights", type=Path, default=DEFAULT_WEIGHTS, help=f"weights file ({DEFAULT_WEIGHTS})")
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")


def run(args: argparse.Namespace) -> int:
    from models.checkpoint import CheckpointError

    try:
        report = info_report(args.weights)
    except CheckpointError as error:
        print(f"anysr info: error: {error}", file=sys.stderr)
        return 1
    print(json.dumps(report, indent=2) if args.json else format_report(report))
    return 0


def info_report(weights: Path) -> dict[str, Any]:
    """Everything ``info`` shows, as a JSON-ready dict; raises ``CheckpointError`` for a broken file."""
    import torch

    from models.anysr import build_model
    from models.checkpoint import read_checkpoint_info
    from models.prefix import parameters_used

    if weights.exists():
        checkpoint = read_checkpoint_info(weights)
        spec = checkpoint.spec
        weights_facts: dict[str, Any] | None = {
            "path": str(checkpoint.path),
            "sha256": checkpoint.sha256,
            "parameters": checkpoint.parameter_count,
            "dtype": checkpoint.dtype,
            "size_bytes": weights.stat().st_size,
            "training": checkpoint.training,
        }
    else:
        spec = ModelSpec()
        weights_facts = None
    with torch.device("meta"):
        model = build_model(spec)
    full = parameters_used(model, 1.0)
    widths = []
    for width in model.widths:
        used = parameters_used(model, width)
        row: dict[str, Any] = {"width": width, "parameters": used, "share_of_full": used / full}
        groups = [index for index in range(len(SCALE_GROUP_BOUNDS) + 1) if group_width(index, model.widths) == width]
        row["auto_for"] = [describe_group(_group_scale(index)) for index in groups]
        widths.append(row)
    return {
        "weights_path": str(weights),
        "weights": weights_facts,
        "spec": model.spec.to_dict(),
        "parts": {
            "encoder": model.spec.encoder.name,
            "decoder": model.spec.decoder.name,
            "decoder_query_mode": model.query_mode,
            "global_decoder": model.is_global,
            "receptive_radius": model.receptive_radius,
            "alignment": model.alignment,
        },
        "widths": widths,
        "training_scale_grids": [list(grid) for grid in SCALE_GROUP_GRIDS],
    }


def format_report(report: dict[str, Any]) -> str:
    """Human-readable text: weights first (the question usually asked), then the architecture."""
    lines = []
    facts = report["weights"]
    if facts is None:
        lines.append(f"weights: NONE - no weights file at {report['weights_path']}")
        lines.append("  (trained weights do not exist yet; below is the default architecture, untrained)")
    else:
        lines.append(f"weights: {facts['path']}")
        lines.append(f"  sha256      {facts['sha256']}")
        lines.append(f"  parameters  {facts['parameters']:,} ({facts['dtype']}, {facts['size_bytes']:,} bytes)")
        training = facts["training"]
        if training:
            lines.append("  training:")
            lines.extend(f"    {key}: {json.dumps(value)}" for key, value in sorted(training.items()))
        else:
            lines.append("  training:   (no training info recorded in the file)")
    spec, parts = report["spec"], report["parts"]
    for role in ("encoder", "decoder"):
        args = ", ".join(f"{key}={_plain(value)}" for key, value in spec[role]["args"].items())
        lines.append(f"{role}: {spec[role]['name']} ({args})")
    tiling = "whole images only (global decoder)" if parts["global_decoder"] else "tiles"
    lines.append(
        f"receptive radius {parts['receptive_radius']} LR pixels, window alignment {parts['alignment']}, "
        f"decoder trains on {parts['decoder_query_mode']}, served in {tiling}"
    )
    lines.append("")
    lines.append(f"{'width':>6}  {'parameters':>12}  {'share':>6}  auto for")
    for row in report["widths"]:
        groups = "; ".join(row["auto_for"]) or "-"
        lines.append(f"{row['width']:>6}  {row['parameters']:>12,}  {row['share_of_full']:>6.1%}  {groups}")
    grids = ", ".join(
        f"S{index + 1} {grid[0]:g}-{grid[-1]:g}" for index, grid in enumerate(report["training_scale_grids"])
    )
    lines.append(f"training scale grids (step 0.1): {grids}; the auto width uses max(scale_h, scale_w)")
    return "\n".join(lines)


def _group_scale(index: int) -> float:
    """A scale inside group ``index`` (its upper bound, or just above the last bound for the open group)."""
    return SCALE_GROUP_BOUNDS[index] if index < len(SCALE_GROUP_BOUNDS) else SCALE_GROUP_BOUNDS[-1] + 1.0


def _plain(value: Any) -> str:
    """Argument values as typed on a command line: lists without spaces."""
    if isinstance(value, list | tuple):
        return "(" + ",".join(str(item) for item in value) + ")"
    return str(value)
