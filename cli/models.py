"""``anysr models``: the registered parts (backbones and upsamplers), their default arguments and widths.

Every part that registers itself (:mod:`models.registry`) shows up here; a spec, a training config or
``anysr flops --encoder/--decoder`` can then name it. Parts are inspected on the meta device, so listing
them allocates no weights.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from models.widths import width_label

HELP = "list the registered encoders and decoders with their arguments and widths"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")


def run(args: argparse.Namespace) -> int:
    report = models_report()
    print(json.dumps(report, indent=2) if args.json else format_report(report))
    return 0


def models_report() -> dict[str, Any]:
    """Every registered part as JSON-ready dicts: name, summary, default arguments, and what it declares."""
    import torch

    from models.anysr import build_model
    from models.registry import entries, tiny_spec
    from models.spec import ModelSpec

    encoders = []
    for part in entries("encoder"):
        config = part.make_config({})
        with torch.device("meta"):
            model = build_model(ModelSpec.of(part.name, "liif"))
        encoders.append(
            {
                "name": part.name,
                "summary": part.summary,
                "widths": list(model.widths),
                "receptive_radius": model.encoder.receptive_radius,
                "args": config.to_args(),
            }
        )
    decoders = []
    for part in entries("decoder"):
        config = part.make_config({})
        with torch.device("meta"):
            model = build_model(tiny_spec("edsr-baseline", part.name))
        decoders.append(
            {
                "name": part.name,
                "summary": part.summary,
                "query_mode": model.decoder.query_mode,
                "global": model.decoder.is_global,
                "slim": "slim" in config.to_args(),
                "args": config.to_args(),
            }
        )
    return {"encoders": encoders, "decoders": decoders}


def format_report(report: dict[str, Any]) -> str:
    lines = ["encoders (backbones):"]
    for part in report["encoders"]:
        widths = "/".join(width_label(width) for width in part["widths"])
        lines.append(f"  {part['name']:<14} widths {widths:<16} {part['summary']}")
    lines.append("decoders (upsamplers):")
    described = []
    for part in report["decoders"]:
        notes = [part["query_mode"] + " queries"]
        if part["global"]:
            notes.append("global: served whole-image")
        if part["slim"]:
            notes.append("slim option")
        described.append((part, ", ".join(notes)))
    column = max(len(notes) for _, notes in described)
    for part, notes in described:
        lines.append(f"  {part['name']:<14} {notes:<{column}}  {part['summary']}")
    lines.append(
        "any encoder combines with any decoder: anysr flops --encoder E --decoder D; args: anysr models --json"
    )
    return "\n".join(lines)
