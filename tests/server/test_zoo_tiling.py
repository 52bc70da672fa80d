"""Tiled inference equals whole-image inference for every registered encoder × decoder at every width.

This is what holds each part's declared receptive radius (and window alignment) to account: with a halo of
``model.receptive_radius`` every output pixel must see exactly the LR pixels it sees in the whole-image
pass, so a radius declared one pixel short shows up as seams. ASE starts at its identity (W2 = 0), whose
gate ignores the pooled features that differ per tile, so the comparison is exact up to float rounding.
A global decoder is never tiled: its plan is one whole-image tile. That the radius is not padded either is
checked exactly, on the gradient's support (last test).
"""

from __future__ import annotations

import itertools

import pytest
import torch

from models.anysr import build_model
from models.coords import make_cell, make_coord
from models.registry import entries, tiny_spec
from server.jobs import BatchKey, TileJob
from server.runner import ModelRunner, RunnerConfig
from server.tiling import crop_window, plan_for_model, plan_tiles, stitch_tiles, tile_query

COMBOS = list(itertools.product([e.name for e in entries("encoder")], [d.name for d in entries("decoder")]))
IDS = [f"{encoder}+{decoder}" for encoder, decoder in COMBOS]
#: Big enough for a 3 × 4 grid of tiles of 10 LR pixels (plus halos of up to 10) at a non-integer scale.
LR_SIZE = (33, 41)
OUT_SIZE = (76, 94)
#: Float rounding between a tile and the whole image (different conv windows): ~1e-7 measured for LIIF,
#: per unit of output magnitude (see :func:`exact_atol`).
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


def sizes_for(radius: int) -> tuple[tuple[int, int], tuple[int, int]]:
    """LR and output sizes that still cut into tiles of 10 LR pixels when the halo is ``radius``: the default
    sizes, grown by two LR pixels (and the same scale) per pixel of radius beyond 10."""
    grow = 2 * max(0, radius - 10)
    lr_size = (LR_SIZE[0] + grow, LR_SIZE[1] + grow)
    return lr_size, (round(lr_size[0] * OUT_SIZE[0] / LR_SIZE[0]), round(lr_size[1] * OUT_SIZE[1] / LR_SIZE[1]))


def tiled(
    runner: ModelRunner,
    image: torch.Tensor,
    out_size: tuple[int, int],
    width: float,
    halo: int | None = None,
    tile_size: int = 10,
) -> tuple[torch.Tensor, int]:
    """The server's path (plan, one job per tile, stitch) as unclamped (3, H, W) floats, and the tile count."""
    lr_size = (image.shape[1], image.shape[2])
    if halo is None:
        plan = plan_for_model(runner.model, lr_size, out_size, tile_size=tile_size)
    else:
        plan = plan_tiles(lr_size, out_size, tile_size=tile_size, halo=halo, alignment=runner.model.alignment)
    scale = (out_size[0] / lr_size[0], out_size[1] / lr_size[1])
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
    lr_size, out_size = sizes_for(0 if model.is_global else model.receptive_radius)
    image = torch.rand(3, *lr_size, generator=torch.Generator().manual_seed(2))
    for width in model.widths:
        stitched, count = tiled(runner, image, out_size, width)
        whole = model.upscale(image[None], out_size, width)[0]
        if model.is_global:
            assert count == 1
        else:
            assert count > 1
        torch.testing.assert_close(stitched.clamp(0, 1), whole, rtol=0, atol=exact_atol(stitched))


@pytest.mark.parametrize("combo", [combo for combo in COMBOS if not build_model(tiny_spec(*combo)).is_global], ids=str)
def test_the_radius_is_the_furthest_any_output_pixel_reaches(combo: tuple[str, str]) -> None:
    """The radius is tight, not padded (and not short), checked exactly on the gradient's support.

    For the output pixels over a 4 × 4 block of LR pixels at the centre of a whole-image upscale, the furthest
    LR pixel with a nonzero gradient lies exactly ``receptive_radius`` from the output pixel's own LR pixel.
    Exact zeros rather than tile errors, because a far-reaching path can move the output by less than the
    float noise between a tile and the whole image (~1e-6 here) and still be there: ArbSR's pooled mask
    branch reaches its last pixels at ~1e-6 of the output, and its bounded sampling offsets reach their
    last pixel only at some positions. At a scale just above 1, where a reach that grows as the scale falls
    (an upsampler reading the neighbouring output row) is largest; 4 × 4 LR pixels so that every output
    position within an LR pixel and both parities of a 2 × 2 pooling grid occur.
    """
    torch.manual_seed(1)
    model = build_model(tiny_spec(*combo)).eval()
    # Random biases (so no ReLU is dead everywhere near the edge of the field), ASE left at its identity.
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("bias") and ".ase." not in name:
                param.uniform_(-0.3, 0.3)
    radius, cells = model.receptive_radius, 4
    side = 2 * radius + cells + 6
    out_side = round(side * 1.15)
    lr = torch.rand(1, 3, side, side, generator=torch.Generator().manual_seed(3), requires_grad=True)
    coords = make_coord(out_side, 1)[:, 0][None]
    rgb = model.decoder.render(
        model.prepare(lr, 1.0, (out_side / side, out_side / side)),
        coords,
        coords,
        make_cell(out_side, out_side, 1),
        1.0,
    )
    first = side // 2 - cells // 2
    # Output pixel i sits in LR pixel ((2i + 1)·side) // (2·out_side).
    pixel_of = {i: (2 * i + 1) * side // (2 * out_side) for i in range(out_side)}
    chosen = [i for i, pixel in pixel_of.items() if first <= pixel < first + cells]
    furthest = 0
    for row in chosen:
        for column in chosen:
            (gradient,) = torch.autograd.grad(rgb[0, :, row, column].sum(), lr, retain_graph=True)
            support = gradient[0].abs().sum(0).nonzero()
            rows, columns = support[:, 0], support[:, 1]
            own_row, own_column = pixel_of[row], pixel_of[column]
            furthest = max(
                furthest,
                own_row - int(rows.min()),
                int(rows.max()) - own_row,
                own_column - int(columns.min()),
                int(columns.max()) - own_column,
            )
    assert furthest == radius, f"declared radius {radius}, but output pixels reach {furthest} LR pixels"
