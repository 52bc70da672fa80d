"""``anysr info``: what the model is (spec, widths, scale groups, parameters per width) and what the weights file is.

The weights file is validated exactly as loading would (:func:`models.checkpoint.read_checkpoint_info`),
but no model is built from it: parameters per width come from a meta-device model (no memory) and the
prefix regions each width reads (:func:`models.prefix.used_regions`). Without a weights file the
command says so plainly and describes the default architecture; it exits 0 then, since nothing failed.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path
from typing import Any

from cli.common import DEFAULT_WEIGHTS, describe_group
from models.spec import ModelSpec
from models.widths import SCALE_GROUP_BOUNDS, SCALE_GROUP_GRIDS, WIDTHS, channels_at

HELP = "model spec, widths and scale groups, parameters per width, and the weights file's facts"


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
    from models.checkpoint import read_checkpoint_info

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
    parameters = parameters_per_width(spec)
    widths = []
    for width in spec.widths:
        row: dict[str, Any] = {
            "width": width,
            "encoder_channels": channels_at(spec.n_feats, width),
            "decoder_hidden": _decoder_hidden(spec, width),
            "parameters": parameters[width],
        }
        if width in WIDTHS:
            row["scale_group"] = describe_group(_group_scale(WIDTHS.index(width)))
        widths.append(row)
    return {
        "weights_path": str(weights),
        "weights": weights_facts,
        "spec": dataclasses.asdict(spec),
        "widths": widths,
        "training_scale_grids": [list(grid) for grid in SCALE_GROUP_GRIDS],
    }


def parameters_per_width(spec: ModelSpec) -> dict[float, int]:
    """Parameters each width's subnet reads (its weight prefixes), counted on a meta-device model."""
    import torch

    from models.anysr import build_model
    from models.prefix import used_regions

    with torch.device("meta"):
        model = build_model(spec)
    named = dict(model.named_parameters())
    counts = {}
    for width in spec.widths:
        regions = used_regions(model, width)
        counts[width] = sum(
            param[regions[name]].numel() if name in regions else param.numel() for name, param in named.items()
        )
    return counts


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
    spec = report["spec"]
    lines.append("spec: " + ", ".join(f"{key}={_plain(value)}" for key, value in spec.items()))
    mode = "slim (width also slices the decoder MLP)" if spec["slim_decoder"] else "paper (decoder always full)"
    lines.append(f"decoder mode: {mode}")
    lines.append("")
    lines.append(f"{'width':>6}  {'channels':>8}  {'decoder hidden':>16}  {'parameters':>12}  auto for")
    for row in report["widths"]:
        hidden = "/".join(str(size) for size in row["decoder_hidden"])
        lines.append(
            f"{row['width']:>6}  {row['encoder_channels']:>8}  {hidden:>16}  {row['parameters']:>12,}  "
            f"{row.get('scale_group', '-')}"
        )
    grids = ", ".join(
        f"S{index + 1} {grid[0]:g}-{grid[-1]:g}" for index, grid in enumerate(report["training_scale_grids"])
    )
    lines.append(f"training scale grids (step 0.1): {grids}; the auto width uses max(scale_h, scale_w)")
    return "\n".join(lines)


def _group_scale(index: int) -> float:
    """A scale inside group ``index`` (its upper bound, or just above the last bound for the open group)."""
    return SCALE_GROUP_BOUNDS[index] if index < len(SCALE_GROUP_BOUNDS) else SCALE_GROUP_BOUNDS[-1] + 1.0


def _decoder_hidden(spec: ModelSpec, width: float) -> list[int]:
    from models.liif import decoder_hidden_sizes

    return decoder_hidden_sizes(spec, width)


def _plain(value: Any) -> str:
    """Spec values as typed on a command line: tuples/lists without spaces."""
    if isinstance(value, list | tuple):
        return "(" + ",".join(str(item) for item in value) + ")"
    return str(value)
