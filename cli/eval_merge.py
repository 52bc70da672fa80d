"""Combine ``eval.json`` records of one model, split by scale, into one report (``anysr eval --merge``).

On a GPU the evaluation is bound by per-call overhead rather than arithmetic, so a dense sweep runs
several times faster as a few processes over disjoint scale ranges. Merging rebuilds the report from the
per-image scores, so the means, tables and plot are exactly what one process over all scales would write.
It refuses records that could not have come from one run: other weights, protocol or images, or the same
(image, scale, row) scored twice, which would double-count it in the means.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from models.evaluation.evaluate import AUTO, ImageScore, ScalePair, WidthMode, row_label


@dataclass(frozen=True)
class MergedRecords:
    """What the merged report is written from; ``runs`` says where each part came from."""

    scores: list[ImageScore]
    scales: list[ScalePair]
    modes: list[WidthMode]
    datasets: dict[str, list[str]]
    weights_sha256: str | None
    elapsed_s: float
    runs: list[dict[str, Any]]


def _scale(value: list[float]) -> ScalePair:
    return (float(value[0]), float(value[1]))


def _psnr(value: float | None) -> float:
    """The JSON writes an infinite PSNR (identical images) as null."""
    return math.inf if value is None else float(value)


def merge_records(paths: list[Path]) -> MergedRecords:
    """Read and check the records; raise ValueError naming the file and the mismatch."""
    if not paths:
        raise ValueError("--merge needs at least one eval.json")
    records = []
    for path in paths:
        try:
            records.append(json.loads(Path(path).read_text()))
        except FileNotFoundError:
            raise ValueError(f"eval record not found: {path}") from None
        except json.JSONDecodeError as error:
            raise ValueError(f"{path} is not JSON: {error}") from None
    first = records[0]
    for path, record in zip(paths, records):
        if not isinstance(record, dict) or "per_image" not in record or "protocol" not in record:
            raise ValueError(f"{path} is not an eval.json written by anysr eval")
        for field, what in (("protocol", "protocol"), ("datasets", "images")):
            if record[field] != first[field]:
                raise ValueError(f"{path} differs from {paths[0]} in its {what}; merge only splits of one run")
        if _sha(record) != _sha(first):
            raise ValueError(f"{path} scored weights sha256 {_sha(record)}, {paths[0]} scored {_sha(first)}")

    scores: list[ImageScore] = []
    seen: dict[tuple[str, str, ScalePair, str], Path] = {}
    scales: list[ScalePair] = []
    for path, record in zip(paths, records):
        scales.extend(_scale(scale) for scale in record["scales"])
        for item in record["per_image"]:
            score = ImageScore(
                dataset=item["dataset"],
                image=item["image"],
                scale=_scale(item["scale"]),
                row=item["row"],
                width=item["width"],
                psnr=_psnr(item["psnr"]),
                ssim=float(item["ssim"]),
                seconds=float(item["seconds"]),
            )
            key = (score.dataset, score.image, score.scale, score.row)
            if key in seen:
                raise ValueError(
                    f"{score.dataset}/{score.image} x{score.scale[0]:g}x{score.scale[1]:g} {score.row} is in both "
                    f"{seen[key]} and {path}; split runs must not overlap"
                )
            seen[key] = path
            scores.append(score)

    # The rows name their widths (``w=0.7``), so the width modes come back from the records themselves.
    fixed = sorted({score.width for score in scores if score.row != AUTO and score.width is not None})
    candidates: list[WidthMode] = [*fixed, AUTO]
    rows = {score.row for score in scores}
    modes = [mode for mode in candidates if row_label(mode) in rows]
    runs = [
        {key: record.get(key) for key in ("elapsed_s", "device", "compute_dtype", "threads")} | {"file": str(path)}
        for path, record in zip(paths, records)
    ]
    return MergedRecords(
        scores=scores,
        scales=list(dict.fromkeys(scales)),
        modes=modes,
        datasets=first["datasets"],
        weights_sha256=_sha(first),
        elapsed_s=sum(float(record.get("elapsed_s", 0.0)) for record in records),
        runs=runs,
    )


def _sha(record: dict[str, Any]) -> str | None:
    weights = record.get("weights")
    return weights.get("sha256") if isinstance(weights, dict) else None
