"""How far is the server's tiled output from whole-image inference, with the shipped (trained) weights?

Tiling is exact without ASE; with ASE each tile pools its own window, so the gates (and the output)
differ slightly. ``tests/server/test_tiling.py`` bounds this on a tiny model with randomised gates; this
script measures it on the real weights and a real photograph, which is the number docs/serving.md quotes.

For each width it runs the image whole (``AnySR.upscale``) and as the server does (``plan_tiles`` with
the receptive-radius halo, ``ModelRunner.infer`` in batches, ``stitch_tiles``), then reports the max
abs difference in [0, 1] units, the PSNR between the two, and the share of 8-bit output values that
differ once both are quantised as the server quantises. Results go to
``benchmarks/results/tiling.json``.

    python benchmarks/bench_tiling.py --weights weights/anysr-edsr-liif.safetensors --tile 96 --scale 2
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from models.checkpoint import load_checkpoint
from models.geometry import output_size
from server.jobs import BatchKey, TileJob
from server.runner import ModelRunner, RunnerConfig
from server.tiling import crop_window, plan_for_model, stitch_tiles, tile_query

REPO = Path(__file__).resolve().parents[1]
DEFAULT_IMAGE = REPO.parent / "shared" / "datasets" / "Set14" / "baboon.png"


def load_image(path: Path, crop: int | None) -> torch.Tensor:
    """(3, h, w) float in [0, 1]; centre-cropped to ``crop`` pixels square when given."""
    rgb = np.asarray(Image.open(path).convert("RGB"))
    if crop is not None:
        top, left = max(0, (rgb.shape[0] - crop) // 2), max(0, (rgb.shape[1] - crop) // 2)
        rgb = rgb[top : top + crop, left : left + crop]
    return torch.from_numpy(rgb.copy()).permute(2, 0, 1).float() / 255.0


def tiled_output(runner: ModelRunner, image: torch.Tensor, out_size: tuple[int, int], width: float, args: Any):
    """The server's path: plan, one job per tile, batches of ``args.batch``, stitch. (H, W, 3) float."""
    lr_size = (image.shape[1], image.shape[2])
    plan = plan_for_model(runner.model, lr_size, out_size, tile_size=args.tile)
    scale = (out_size[0] / lr_size[0], out_size[1] / lr_size[1])
    key = BatchKey(width, plan.lr_tile_shape, plan.out_tile_shape)
    jobs = []
    for tile in plan.tiles():
        ys, xs, cell = tile_query(plan, tile)
        jobs.append(
            TileJob(key, crop_window(image, plan, tile), ys, xs, cell, scale, plan.tile_flops(runner.model, width))
        )
    outputs: list[torch.Tensor] = []
    for start in range(0, len(jobs), args.batch):
        outputs.extend(runner.infer(jobs[start : start + args.batch]).permute(0, 2, 3, 1).unbind(0))
    return stitch_tiles(plan, outputs), plan.count


def compare(tiled: torch.Tensor, whole: torch.Tensor) -> dict[str, float]:
    """Differences in [0, 1] units and after 8-bit quantisation (round half up of the clamped value)."""
    tiled, whole = tiled.clamp(0, 1), whole.clamp(0, 1)
    difference = tiled - whole
    mse = float((difference.double() ** 2).mean())
    levels_t = (tiled * 255 + 0.5).floor()
    levels_w = (whole * 255 + 0.5).floor()
    level_gap = (levels_t - levels_w).abs()
    return {
        "max_abs": float(difference.abs().max()),
        "psnr_db": math.inf if mse == 0 else 10 * math.log10(1 / mse),
        "uint8_values_differing": float((level_gap > 0).double().mean()),
        "uint8_max_level_gap": float(level_gap.max()),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--weights", type=Path, default=REPO / "weights" / "anysr-edsr-liif.safetensors")
    parser.add_argument("--image", type=Path, default=DEFAULT_IMAGE, help="input image (used as the LR input)")
    parser.add_argument("--crop", type=int, default=None, help="centre crop to this many pixels square")
    parser.add_argument("--scale", type=float, default=2.0)
    parser.add_argument("--tile", type=int, default=96, help="LR tile side before the halo (server default 256)")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--output", type=Path, default=REPO / "benchmarks" / "results" / "tiling.json")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    model, info = load_checkpoint(args.weights)
    runner = ModelRunner(model, RunnerConfig(device="cpu", precision="fp32"))
    image = load_image(args.image, args.crop)
    lr_size = (image.shape[1], image.shape[2])
    out_size = output_size(lr_size, (args.scale, args.scale))
    rows = []
    print(f"{args.image.name} {lr_size[0]}x{lr_size[1]} -> {out_size[0]}x{out_size[1]}, tile {args.tile}")
    print(f"{'width':>5} {'tiles':>5} {'max abs':>9} {'PSNR dB':>8} {'uint8 differing':>16} {'max gap':>7} {'s':>6}")
    for width in runner.model.widths:
        started = time.perf_counter()
        with torch.inference_mode():
            tiled, tiles = tiled_output(runner, image, out_size, width, args)
            whole = runner.model.upscale(image[None], out_size, width)[0].permute(1, 2, 0)
        row = {"width": width, "tiles": tiles, **compare(tiled, whole), "seconds": time.perf_counter() - started}
        rows.append(row)
        print(
            f"{width:5.1f} {tiles:5d} {row['max_abs']:9.2e} {row['psnr_db']:8.1f} "
            f"{row['uint8_values_differing']:16.2e} {row['uint8_max_level_gap']:7.0f} {row['seconds']:6.1f}"
        )
    result = {
        "benchmark": "tiling",
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "weights": str(args.weights),
        "weights_training": info.training,
        "image": args.image.name,
        "lr_size": lr_size,
        "out_size": out_size,
        "tile": args.tile,
        "halo": runner.model.receptive_radius,
        "batch": args.batch,
        "rows": rows,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2, default=str))
    print(f"saved {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
