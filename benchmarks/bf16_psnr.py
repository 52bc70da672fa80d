"""What bf16 costs in quality: PSNR with bf16 compute against fp32, on Set5 and Set14, per scale and width.

``precision=auto`` picks bf16 where it is fast; that is only right while bf16 scores within 0.05 dB of
fp32 (the issue's bound, and the premise of :mod:`models.precision`'s 57 dB probe threshold). This
measures it with the evaluation protocol of ``anysr eval`` (:mod:`models.evaluation.evaluate`): the
same images, LR and metric, once with fp32 and once with bf16 compute, compared image by image.

Two ways to make the record (both write ``<out>/bf16_psnr.json``, the suite's record layout):

    python -m benchmarks.suite --only bf16_psnr --threads 2      # evaluates both precisions here
    python -m benchmarks.bf16_psnr --fp32 A/eval.json --bf16 B/eval.json   # from two `anysr eval` runs

The second is how the CPU numbers were made (``anysr eval --compute-dtype fp32|bf16 --out-dir ...``),
since a full evaluation in fp32 takes most of an hour on two cores. The GPU benchmark
(``benchmarks/gpu.py``) calls :func:`evaluate_both` on the card.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shlex
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from benchmarks.config import REPO, SuiteConfig
from models.anysr import AnySR
from models.evaluation.evaluate import AUTO, WidthMode, evaluate, scale_label

#: The issue's bound on |PSNR(bf16) − PSNR(fp32)| of a dataset mean, dB.
BOUND_DB = 0.05
#: Rows compared: the scale-group width (what the scheduler serves at moderate load) and full width.
MODES: tuple[WidthMode, ...] = (AUTO, 1.0)
DATASETS = ("Set5", "Set14")


def shared_datasets(shared: Path, names: Sequence[str] = DATASETS, max_images: int | None = None) -> dict:
    """name → sorted image paths under ``shared/datasets``; FileNotFoundError naming what is missing."""
    from models.images import list_images

    datasets = {}
    for name in names:
        folder = shared / "datasets" / name
        if not folder.is_dir():
            raise FileNotFoundError(f"dataset folder {folder} not found (set ANYSR_SHARED_DIR)")
        datasets[name] = list_images([folder])[:max_images]
    return datasets


def evaluate_both(
    model: AnySR,
    datasets: Mapping[str, Sequence[Path]],
    scales: Sequence[float],
    modes: Sequence[WidthMode] = MODES,
) -> dict[str, list[dict[str, Any]]]:
    """Per-image scores of fp32 and of bf16 compute (eval.json's ``per_image`` layout), model on its device.

    On CUDA, TF32 is switched off for the fp32 pass (as ``anysr eval`` does), so fp32 means fp32.
    """
    pairs = [(float(scale), float(scale)) for scale in scales]
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        return {
            name: [
                dataclasses.asdict(score)
                for score in evaluate(model, datasets, pairs, modes, bicubic=False, compute_dtype=dtype)
            ]
            for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16))
        }
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def compare(fp32: Sequence[Mapping[str, Any]], bf16: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Dataset means and per-image differences of every (dataset, scale, row) both score lists share.

    Rows are eval.json's ``per_image`` entries (dataset, image, scale, row, psnr); bicubic rows are
    skipped. ValueError when the two lists do not cover the same images.
    """

    def keyed(scores: Sequence[Mapping[str, Any]]) -> dict[tuple[str, str, str, str], float]:
        return {
            (row["dataset"], scale_label(tuple(row["scale"])), row["row"], row["image"]): float(row["psnr"])
            for row in scores
            if row["row"] != "bicubic"
        }

    base, low = keyed(fp32), keyed(bf16)
    if not base or set(base) != set(low):
        missing = sorted(set(base) ^ set(low))[:3]
        raise ValueError(f"the fp32 and bf16 scores must cover the same images, rows and scales (differ: {missing})")
    groups: dict[tuple[str, str, str], list[tuple[float, float]]] = {}
    for (dataset, scale, row, _), psnr in base.items():
        groups.setdefault((dataset, scale, row), []).append((psnr, low[(dataset, scale, row, _)]))
    rows = []
    for (dataset, scale, row), pairs in groups.items():
        fp32_mean = sum(a for a, _ in pairs) / len(pairs)
        bf16_mean = sum(b for _, b in pairs) / len(pairs)
        rows.append(
            {
                "dataset": dataset,
                "scale": scale,
                "row": row,
                "images": len(pairs),
                "fp32_psnr": fp32_mean,
                "bf16_psnr": bf16_mean,
                "delta_db": bf16_mean - fp32_mean,
                "max_image_delta_db": max(abs(b - a) for a, b in pairs),
            }
        )
    worst = max(rows, key=lambda row: abs(row["delta_db"]))
    return {
        "rows": rows,
        "bound_db": BOUND_DB,
        "worst_mean_delta_db": worst["delta_db"],
        "worst": {key: worst[key] for key in ("dataset", "scale", "row")},
        "worst_image_delta_db": max(row["max_image_delta_db"] for row in rows),
        "within_bound": abs(worst["delta_db"]) <= BOUND_DB,
    }


def run_bf16_psnr(config: SuiteConfig) -> tuple[dict[str, Any], dict[str, Any]]:
    """The suite part: evaluate the shipped weights in both precisions here: (config, results)."""
    from benchmarks.served_precision import load_model

    if not config.weights.is_file() and not config.allow_untrained:
        raise FileNotFoundError(f"weights file {config.weights} not found; bf16_psnr scores the shipped weights")
    shared = Path(os.environ.get("ANYSR_SHARED_DIR", REPO / ".." / "shared"))
    datasets = shared_datasets(shared, max_images=config.quality_max_images)
    model = load_model(config, torch.device(config.device))
    scores = evaluate_both(model, datasets, config.quality_scales)
    results = compare(scores["fp32"], scores["bf16"]) | {"per_image": scores}
    print_rows(results)
    settings = {
        "datasets": {name: [path.name for path in paths] for name, paths in datasets.items()},
        "scales": list(config.quality_scales),
        "modes": [str(mode) for mode in MODES],
        "weights": str(config.weights) if config.weights.is_file() else "random (untrained)",
        "device": config.device,
        "protocol": "anysr eval's (models/evaluation/evaluate.py), output rounded to 8 bits, PSNR on Y",
    }
    return settings, results


def print_rows(results: Mapping[str, Any]) -> None:
    print("dataset  scale  row     fp32 dB   bf16 dB   delta dB  max |image delta|", flush=True)
    for row in results["rows"]:
        print(
            f"{row['dataset']:<8} x{row['scale']:<5} {row['row']:<6} {row['fp32_psnr']:>8.3f}  {row['bf16_psnr']:>8.3f}"
            f"  {row['delta_db']:>+8.4f}  {row['max_image_delta_db']:>8.4f}",
            flush=True,
        )
    verdict = "within" if results["within_bound"] else "OVER"
    print(f"worst mean delta {results['worst_mean_delta_db']:+.4f} dB: {verdict} the {BOUND_DB} dB bound", flush=True)


def main(argv: list[str] | None = None) -> int:
    """Build the ``bf16_psnr`` record from two ``anysr eval`` JSON files of the same weights."""
    from benchmarks.host import host_info, make_record, write_record

    parser = argparse.ArgumentParser(prog="python -m benchmarks.bf16_psnr", description=main.__doc__)
    parser.add_argument("--fp32", type=Path, required=True, help="eval.json of `anysr eval --compute-dtype fp32`")
    parser.add_argument("--bf16", type=Path, required=True, help="eval.json of `anysr eval --compute-dtype bf16`")
    parser.add_argument("--out", type=Path, default=SuiteConfig().out_dir, help="results folder (%(default)s)")
    parser.add_argument("--command", default=None, help="the eval commands, recorded with the result")
    args = parser.parse_args(argv)
    records = {name: json.loads(path.read_text()) for name, path in (("fp32", args.fp32), ("bf16", args.bf16))}
    dtypes = {name: record.get("compute_dtype") for name, record in records.items()}
    if dtypes != {"fp32": "fp32", "bf16": "bf16"}:
        print(f"benchmarks.bf16_psnr: expected an fp32 and a bf16 evaluation, got {dtypes}", file=sys.stderr)
        return 2
    weights = {name: record["weights"]["sha256"] for name, record in records.items()}
    if weights["fp32"] != weights["bf16"]:
        print(f"benchmarks.bf16_psnr: the two evaluations scored different weights: {weights}", file=sys.stderr)
        return 2
    try:
        results = compare(records["fp32"]["per_image"], records["bf16"]["per_image"])
    except ValueError as error:
        print(f"benchmarks.bf16_psnr: {error}", file=sys.stderr)
        return 2
    print_rows(results)
    fp32 = records["fp32"]
    settings = {
        "datasets": fp32["datasets"],
        "scales": [scale_label(tuple(scale)) for scale in fp32["scales"]],
        "modes": [row for row in fp32["rows"] if row != "bicubic"],
        "weights": fp32["weights"]["path"],
        "weights_sha256": weights["fp32"],
        "device": fp32.get("device"),
        "threads": {name: record.get("threads") for name, record in records.items()},
        "eval_seconds": {name: record.get("elapsed_s") for name, record in records.items()},
        "sources": {"fp32": str(args.fp32), "bf16": str(args.bf16)},
        "protocol": fp32.get("protocol"),
    }
    command = args.command or shlex.join(["python", "-m", "benchmarks.bf16_psnr", *(argv or sys.argv[1:])])
    host = host_info(str(fp32.get("device") or "cpu"), None)
    load = os.getloadavg()
    record = make_record("bf16_psnr", command, settings, results, host, load, time.monotonic())
    print(f"wrote {write_record(args.out, record)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
