"""Tiled inference equals whole-image inference for every registered encoder × decoder at every width.

This is what holds each part's declared receptive radius (and window alignment) to account: with a halo of
``model.receptive_radius`` every output pixel must see exactly the LR pixels it sees in the whole-image
pass, so a radius declared one pixel short shows up as seams. ASE starts at its identity (W2 = 0), whose
gate ignores the pooled features that differ per tile, so the comparison is exact up to float rounding.
A global decoder is never tiled: its plan is one whole-image tile.
"""

from __future__ import annotations

import itertools

import pytest
import torch

from models.anysr import build_model
from models.registry import entries, tiny_spec
from server.jobs import BatchKey, TileJob
from server.runner import ModelRunner, RunnerConfig
from server.tiling import crop_window, plan_for_model, plan_tiles, stitch_tiles, tile_query

COMBOS = list(itertools.product([e.name for e in entries("encoder")], [d.name for d in entries("decoder")]))
IDS = [f"{encoder}+{decoder}" for encoder, decoder in COMBOS]
#: Big enough for a 3 × 4 grid of tiles of 10 LR pixels (plus halos) at a non-integer scale.
LR_SIZE = (33, 41)
OUT_SIZE = (76, 94)
#: Float rounding between a tile and the whole image (different conv windows): ~1e-7 measured for LIIF. A
#: halo one pixel short of the radius gives ~1e-5 on these tiny random models, so this tolerance tells them
#: apart. It is per unit of output magnitude (see :func:`exact_atol`).
EXACT_ATOL = 2e-6


def exact_atol(outputs: torch.Tensor) -> float:
    """:data:`EXACT_ATOL` scaled by the outputs' magnitude (at least 1): rounding is relative to the values.

    A random LIIF stays near 0.5, but a random Meta-SR's outputs reach ~2, and they depend on the query
    position directly: float32 coordinates over a frame of n LR pixels resolve a position only to about
    n/2 · 6e-8 pixel, which differs between a tile's frame and the whole image's (~3e-6 measured at ~2).
    """
    return EXACT_ATOL * max(1.0, float(outputs.abs().max()))


def fresh_runner(combo: tuple[str, str]) -> ModelRunner:
    torch.manual_seed(1)
    return ModelRunner(build_model(tiny_spec(*combo)), RunnerConfig())


def tiled(runner: ModelRunner, image: torch.Tensor, width: float, halo: int | None = None) -> tuple[torch.Tensor, int]:
    """The server's path (plan, one job per tile, stitch) as (3, H, W) floats, and the tile count."""
    if halo is None:
        plan = plan_for_model(runner.model, LR_SIZE, OUT_SIZE, tile_size=10)
    else:
        plan = plan_tiles(LR_SIZE, OUT_SIZE, tile_size=10, halo=halo, alignment=runner.model.alignment)
    scale = (OUT_SIZE[0] / LR_SIZE[0], OUT_SIZE[1] / LR_SIZE[1])
    key = BatchKey(width, plan.lr_tile_shape, plan.out_tile_shape)
    outputs = []
    for tile in plan.tiles():
        ys, xs, cell = tile_query(plan, tile)
        job = TileJob(key, crop_window(image, plan, tile), ys, xs, cell, scale, plan.tile_flops(runner.model, width))
        outputs.append(runner.infer([job])[0].permute(1, 2, 0))
    return stitch_tiles(plan, outputs).permute(2, 0, 1), plan.count


@pytest.mark.parametrize("combo", COMBOS, ids=IDS)
def test_tiles_equal_the_whole_image_at_every_width(combo: tuple[str, str]) -> None:
    runner = fresh_runner(combo)
    model = runner.model
    image = torch.rand(3, *LR_SIZE, generator=torch.Generator().manual_seed(2))
    for width in model.widths:
        stitched, count = tiled(runner, image, width)
        whole = model.upscale(image[None], OUT_SIZE, width)[0]
        if model.is_global:
            assert count == 1
        else:
            assert count >= 6
        torch.testing.assert_close(stitched.clamp(0, 1), whole, rtol=0, atol=exact_atol(stitched))


@pytest.mark.parametrize("combo", [combo for combo in COMBOS if not build_model(tiny_spec(*combo)).is_global], ids=str)
def test_a_halo_one_pixel_short_of_the_radius_is_not_exact(combo: tuple[str, str]) -> None:
    """The radius is tight, not padded: with one pixel less the tiles disagree with the whole image."""
    runner = fresh_runner(combo)
    model = runner.model
    # Random biases everywhere, so features at the window border really differ from the whole image's.
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("bias") and ".ase." not in name:
                param.uniform_(-0.3, 0.3)
    image = torch.rand(3, *LR_SIZE, generator=torch.Generator().manual_seed(3))
    stitched, _ = tiled(runner, image, 1.0, halo=model.receptive_radius - 1)
    whole = model.upscale(image[None], OUT_SIZE, 1.0)[0]
    assert (stitched.clamp(0, 1) - whole).abs().max() > 2 * exact_atol(stitched)
