"""Training throughput on one GPU (issue 16, item 1): samples/s of the real trainer per recipe, and with
several runs sharing the card. One command, one archive.

    python3 -m benchmarks.gpu_train --out $OUT                 # on the GPU host: about 4-5 minutes
    python -m benchmarks.gpu_train --cpu-smoke --out /tmp/gt   # here: tiny model, a few steps per recipe

Why the real loop rather than a bare forward/backward: the trainer's cost on a GPU is not only the model.
The batch producer thread, the device-side degradation, Algorithm 1's width changes and the prefix restore
after each narrow step all sit on the critical path, and the last H200 runs left the card partly idle
(three runs at once gave 1.55x one run). So each recipe runs :func:`models.training.train.train` itself:
warm-up steps first (cuDNN autotuning per width, the allocator growing), then timed steps, read from the
trainer's own clock, which stops after the loss of the last step has been read.

Recipes: fp32 with TF32 at batch 32 (today's recipe, 940 samples/s on an H200), bf16 autocast at batch
32 / 64 / 128, then the fastest single recipe run as K = 1, 2, 3, 4 processes at once. The data is
synthetic (random images): throughput does not depend on pixel content, and the device tool carries
64 MiB. Quality per sample is a separate, longer check (a short bf16 and fp32 run from one start, scored
with ``anysr eval``); this script only measures speed.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

ARCHIVE = "anysr-gpu-train.tar.gz"
REPO = Path(__file__).resolve().parents[1]


@dataclasses.dataclass(frozen=True)
class Recipe:
    name: str
    batch_size: int
    bf16: bool


RECIPES = (
    Recipe("fp32-tf32-b32", 32, False),
    Recipe("bf16-b32", 32, True),
    Recipe("bf16-b64", 64, True),
    Recipe("bf16-b128", 128, True),
)
SMOKE_RECIPES = (Recipe("fp32-b2", 2, False), Recipe("bf16-b2", 2, True))


def synthetic_images(folder: Path, count: int, side: int) -> Path:
    """Random RGB PNGs: enough distinct crops for the sampler, no data set needed on the device."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for index in range(count):
        pixels = rng.integers(0, 256, size=(side, side, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"{index:03d}.png")
    return folder


def run_recipe(settings: dict[str, Any]) -> dict[str, Any]:
    """Warm up, then time ``steps`` steps of one recipe in this process; returns its rate."""
    import torch

    from models.training.train import TrainConfig, train

    config = TrainConfig.from_dict(settings["config"])
    warmup, steps = settings["warmup"], settings["steps"]
    first = train(config, max_steps=warmup, quiet=True)
    second = train(config, max_steps=steps, quiet=True)
    seconds = second["elapsed_s"] - first["elapsed_s"]
    peak = torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else None
    return {
        "steps": steps,
        "seconds": round(seconds, 3),
        "steps_per_s": round(steps / seconds, 3),
        "samples_per_s": round(steps * config.batch_size / seconds, 1),
        "peak_cuda_mib": None if peak is None else round(peak),
        "width_counts": second["width_counts"],
    }


def recipe_settings(recipe: Recipe, args: argparse.Namespace, data: Path, run_dir: Path) -> dict[str, Any]:
    """A stage-2 config (Algorithm 1, p = 0.6) of the product model, or the tiny model in smoke runs."""
    from models.spec import DEFAULT_SPEC, TINY_SPEC

    spec = TINY_SPEC if args.cpu_smoke else DEFAULT_SPEC
    config = {
        "run_dir": str(run_dir),
        "data_dirs": [str(data)],
        "stage": 2,
        "init_from": str(args.init_from),
        "init_drop_ase": True,
        "model": spec.to_dict(),
        "batch_size": recipe.batch_size,
        "patch": 16 if args.cpu_smoke else 48,
        "queries": 64 if args.cpu_smoke else 2304,
        "steps": 1_000_000,  # the lr schedule is irrelevant to speed; never reach the decay
        "lr": 2.0e-4 * recipe.batch_size / 32,  # scaled with the batch, as the issue asks
        "reset_p": 0.6,
        "bf16": recipe.bf16,
        "device": "cpu" if args.cpu_smoke else "cuda",
        "checkpoint_every_s": 1e9,
        "log_every": 10**9,
    }
    return {"config": config, "warmup": args.warmup, "steps": args.steps}


def concurrent(settings: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Run one recipe per process, all at once; each prints its result as one JSON line."""
    processes = [
        subprocess.Popen(
            [sys.executable, "-m", "benchmarks.gpu_train", "--single", json.dumps(item)],
            cwd=REPO,
            stdout=subprocess.PIPE,
            text=True,
        )
        for item in settings
    ]
    results = []
    for process in processes:
        output, _ = process.communicate()
        if process.returncode != 0:
            raise RuntimeError(f"a concurrent run failed with exit code {process.returncode}")
        results.append(json.loads(output.strip().splitlines()[-1]))
    return results


def initial_weights(args: argparse.Namespace, work: Path) -> Path:
    """The shipped model (its ASE dropped by the config), or a saved tiny model in smoke runs."""
    if not args.cpu_smoke:
        return REPO / "weights" / "anysr-edsr-liif.safetensors"
    import torch

    from models.anysr import build_model
    from models.checkpoint import save_checkpoint
    from models.spec import TINY_SPEC

    torch.manual_seed(0)
    path = work / "tiny.safetensors"
    save_checkpoint(path, build_model(TINY_SPEC))
    return path


def report(results: dict[str, Any]) -> str:
    lines = [
        "| recipe | processes | steps/s each | samples/s total | vs the first row | peak MiB |",
        "|---|---|---|---|---|---|",
    ]
    base = results["runs"][0]["samples_per_s_total"] if results["runs"] else None  # today's recipe, one run
    for run in results["runs"]:
        ratio = "" if not base else f"{run['samples_per_s_total'] / base:.2f}x"
        each = ", ".join(f"{item['steps_per_s']:.2f}" for item in run["processes"])
        peak = max((item["peak_cuda_mib"] or 0) for item in run["processes"]) or "—"
        lines.append(
            f"| {run['recipe']} | {len(run['processes'])} | {each} | {run['samples_per_s_total']:.1f} | {ratio} | {peak} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help="folder for the one archive")
    parser.add_argument("--cpu-smoke", action="store_true", help="tiny model on the CPU: test the plumbing")
    parser.add_argument("--warmup", type=int, default=None, help="untimed steps per recipe [40; smoke 1]")
    parser.add_argument("--steps", type=int, default=None, help="timed steps per recipe [150; smoke 2]")
    parser.add_argument("--max-processes", type=int, default=None, help="largest K of runs at once [4; smoke 2]")
    parser.add_argument("--single", help=argparse.SUPPRESS)  # one recipe in this process (for concurrency)
    args = parser.parse_args(argv)
    if args.single:
        print(json.dumps(run_recipe(json.loads(args.single))))
        return 0
    if args.out is None:
        parser.error("--out is required")
    args.warmup = args.warmup if args.warmup is not None else (1 if args.cpu_smoke else 40)
    args.steps = args.steps if args.steps is not None else (2 if args.cpu_smoke else 150)
    max_k = args.max_processes or (2 if args.cpu_smoke else 4)
    from benchmarks.host import host_info

    with tempfile.TemporaryDirectory() as temp:
        work = Path(temp) / "anysr-gpu-train"
        work.mkdir()
        data = synthetic_images(Path(temp) / "data", 8 if args.cpu_smoke else 64, 64 if args.cpu_smoke else 256)
        args.init_from = initial_weights(args, Path(temp))
        device = "cpu" if args.cpu_smoke else "cuda"
        results: dict[str, Any] = {"command": " ".join(sys.argv), "host": host_info(device, None), "runs": []}
        started = time.monotonic()
        recipes = SMOKE_RECIPES if args.cpu_smoke else RECIPES
        for recipe in recipes:
            settings = recipe_settings(recipe, args, data, Path(temp) / "runs" / recipe.name)
            outcome = concurrent([settings])  # a fresh process per recipe: no state carried between them
            results["runs"].append(
                {
                    "recipe": recipe.name,
                    "processes": outcome,
                    "samples_per_s_total": sum(item["samples_per_s"] for item in outcome),
                }
            )
        best = max(results["runs"], key=lambda run: run["samples_per_s_total"])["recipe"]
        chosen = next(recipe for recipe in recipes if recipe.name == best)
        for k in range(2, max_k + 1):
            settings = [recipe_settings(chosen, args, data, Path(temp) / "runs" / f"{best}-k{k}-{i}") for i in range(k)]
            outcome = concurrent(settings)
            results["runs"].append(
                {
                    "recipe": best,
                    "processes": outcome,
                    "samples_per_s_total": sum(item["samples_per_s"] for item in outcome),
                }
            )
        results["seconds"] = round(time.monotonic() - started, 1)
        (work / "results.json").write_text(json.dumps(results, indent=2))
        table = report(results)
        (work / "report.md").write_text(table)
        print(table)
        args.out.mkdir(parents=True, exist_ok=True)
        with tarfile.open(args.out / ARCHIVE, "w:gz") as archive:
            archive.add(work, arcname="anysr-gpu-train")
    return 0


if __name__ == "__main__":
    sys.exit(main())
