"""Cut an upscale into fixed-size tiles whose stitched output matches whole-image inference.

A plan fixes one LR window shape and one output tile shape per image, so every tile of an image
(and tiles of other images with the same shapes) can share a batch. Along each axis the output is
cut into the fewest equal runs whose LR footprint is at most ``tile_size`` LR pixels; each run reads
an LR window that adds ``halo`` pixels on both sides and is shifted inwards at the image border (so
it never leaves the image and border padding matches the whole-image pass). The last run is shifted
inwards too, overlapping its neighbour by less than one pixel per run, so all runs have one length.
With ``alignment`` a > 1 (a model that pools 2×2, say) every window starts at a multiple of a, so
its pooling grid is the whole image's.

Exactness: with ``halo >= model.receptive_radius`` (which the model computes from its parts) every
output pixel sees exactly the LR pixels it sees in the whole-image pass, so without ASE the result
equals whole-image inference up to float rounding. ASE pools each block's features over its whole
input, so with ASE on, a tile's gates differ slightly from the whole image's; docs/serving.md states
the measured tolerance. A model whose decoder is global (``model.is_global``) is not tiled at all.

Also here: the query coordinates of a tile (in the tile's own [-1, 1] frame) and stitching.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from models.anysr import AnySR
from models.flops import count_flops


@dataclass(frozen=True)
class AxisPlan:
    """Tiling along one axis: window starts and length in LR pixels, run starts and length in output pixels."""

    lr_size: int
    out_size: int
    lr_starts: tuple[int, ...]
    lr_length: int
    out_starts: tuple[int, ...]
    out_length: int


def window_length(out_length: int, lr_size: int, out_size: int, halo: int) -> int:
    """LR window a run of ``out_length`` output pixels needs.

    Runs o..o+L-1 cover the LR cells floor(y_o) .. floor(y_(o+L-1)): at most ((L-1)·n) // N + 2 of
    them, and each needs ``halo`` more on both sides.
    """
    return ((out_length - 1) * lr_size) // out_size + 2 * halo + 2


def plan_axis(lr_size: int, out_size: int, tile_size: int, halo: int, alignment: int = 1) -> AxisPlan:
    """Split one axis. A single span (the whole axis) when one window would cover it anyway."""
    whole = AxisPlan(lr_size, out_size, (0,), lr_size, (0,), out_size)
    # Integer arithmetic throughout: output pixel j sits at LR position (j + 0.5)·n/N, whose floor is
    # ((2j + 1)·n) // (2N) exactly, so no float rounding can move a window by a pixel.
    longest = max(1, (tile_size * out_size) // lr_size)
    if longest >= out_size or window_length(longest, lr_size, out_size, halo) + alignment - 1 >= lr_size:
        return whole
    # As few runs as the tile size allows, of equal length: an image just over one tile becomes two
    # smaller tiles rather than one full tile plus an almost entirely overlapping second one.
    count = math.ceil(out_size / longest)
    out_length = math.ceil(out_size / count)
    # Aligned windows start up to alignment - 1 pixels early, so they are that much longer; and their
    # length leaves lr_size - length a multiple of the alignment, so the last window starts aligned too.
    lr_length = window_length(out_length, lr_size, out_size, halo) + alignment - 1
    lr_length += (lr_size - lr_length) % alignment
    if lr_length >= lr_size:
        return whole
    out_starts = [index * out_length for index in range(count - 1)] + [out_size - out_length]
    lr_starts = []
    for start in out_starts:
        needed = max(((2 * start + 1) * lr_size) // (2 * out_size) - halo, 0)
        lr_starts.append(min(needed - needed % alignment, lr_size - lr_length))
    return AxisPlan(lr_size, out_size, tuple(lr_starts), lr_length, tuple(out_starts), out_length)


@dataclass(frozen=True)
class Tile:
    """One tile: LR window origin (top, left) and output run origin (top, left); shapes come from the plan."""

    lr_top: int
    lr_left: int
    out_top: int
    out_left: int


@dataclass(frozen=True)
class TilePlan:
    """How one image is cut. ``whole`` plans have a single tile covering the whole image."""

    rows: AxisPlan
    cols: AxisPlan

    @property
    def lr_size(self) -> tuple[int, int]:
        return self.rows.lr_size, self.cols.lr_size

    @property
    def out_size(self) -> tuple[int, int]:
        return self.rows.out_size, self.cols.out_size

    @property
    def lr_tile_shape(self) -> tuple[int, int]:
        return self.rows.lr_length, self.cols.lr_length

    @property
    def out_tile_shape(self) -> tuple[int, int]:
        return self.rows.out_length, self.cols.out_length

    @property
    def count(self) -> int:
        return len(self.rows.lr_starts) * len(self.cols.lr_starts)

    @property
    def whole(self) -> bool:
        return self.count == 1

    def tiles(self) -> list[Tile]:
        """Tiles in row-major order."""
        return [
            Tile(lr_top, lr_left, out_top, out_left)
            for lr_top, out_top in zip(self.rows.lr_starts, self.rows.out_starts)
            for lr_left, out_left in zip(self.cols.lr_starts, self.cols.out_starts)
        ]

    def tile_flops(self, model: AnySR, width: float) -> int:
        """FLOPs of one tile at ``width`` (every tile of a plan costs the same)."""
        return count_flops(model, self.lr_tile_shape, self.out_tile_shape, width).total

    def flops(self, model: AnySR, width: float) -> int:
        """FLOPs this plan actually runs at ``width``: halos and overlapping runs included."""
        return self.count * self.tile_flops(model, width)


def plan_tiles(
    lr_size: tuple[int, int], out_size: tuple[int, int], tile_size: int, halo: int, alignment: int = 1
) -> TilePlan:
    """Plan an upscale of ``lr_size`` (h, w) to ``out_size`` (H, W) with LR tiles of ``tile_size`` plus
    ``halo``, windows starting at multiples of ``alignment``."""
    if tile_size < 1 or halo < 0 or alignment < 1:
        raise ValueError(f"tile_size and alignment must be >= 1 and halo >= 0, got {tile_size}, {alignment}, {halo}")
    if min(lr_size) < 1 or min(out_size) < 1:
        raise ValueError(f"sizes must be positive, got lr {lr_size} and out {out_size}")
    return TilePlan(
        rows=plan_axis(lr_size[0], out_size[0], tile_size, halo, alignment),
        cols=plan_axis(lr_size[1], out_size[1], tile_size, halo, alignment),
    )


def plan_for_model(
    model: AnySR, lr_size: tuple[int, int], out_size: tuple[int, int], tile_size: int, halo: int | None = None
) -> TilePlan:
    """The plan the model's parts allow: whole-image for a global model, else tiles with its alignment and
    (by default) a halo of its receptive radius, which makes the tiles exact."""
    if model.is_global:
        return plan_tiles(lr_size, out_size, tile_size=max(lr_size), halo=0)
    radius = model.receptive_radius if halo is None else halo
    return plan_tiles(lr_size, out_size, tile_size, radius, model.alignment)


def axis_coords(axis: AxisPlan, lr_start: int, out_start: int) -> torch.Tensor:
    """Query coordinates of one run in its window's [-1, 1] frame, (out_length,) float32.

    Output pixel j of N sits at LR position y = (j + 0.5)·n/N; in a window starting at ``lr_start``
    of length L that is -1 + 2·(y − lr_start)/L = -1 + ((2j + 1)·n − 2·lr_start·N) / (N·L), a ratio of
    integers. It is evaluated as one float32 division of the reduced integers, the same operation the
    model uses for cell centres (-1 + (2k + 1)/L) and ``make_coord`` uses for whole images, so a query
    exactly on a cell centre lands there bit for bit. That matters on the last row and column: there
    both ensemble neighbours clamp to the same cell, the blend weights become 0/0-like and a 1-ulp
    offset would change the pixel by up to a few percent.
    """
    n, big_n, length = axis.lr_size, axis.out_size, axis.lr_length
    common = math.gcd(math.gcd(n, 2 * lr_start * big_n), big_n * length)
    rows = np.arange(out_start, out_start + axis.out_length, dtype=np.int64)
    numerators = ((2 * rows + 1) * n - 2 * lr_start * big_n) // common
    denominator = (big_n * length) // common
    if denominator < 2**24 and np.abs(numerators).max() < 2**24:
        # Both exact in float32, so the division is correctly rounded like the model's own.
        ratio = torch.from_numpy(numerators.astype(np.float32)) / torch.tensor(float(denominator))
    else:
        ratio = torch.from_numpy(numerators / denominator).float()
    return -1.0 + ratio


def axis_cell(axis: AxisPlan) -> float:
    """Size of one output pixel in the window's [-1, 1] units (the same for every run of the axis)."""
    return 2.0 * (axis.lr_size / axis.out_size) / axis.lr_length


def tile_query(plan: TilePlan, tile: Tile) -> tuple[torch.Tensor, torch.Tensor, tuple[float, float]]:
    """(row coords (Th,), column coords (Tw,), cell (cy, cx)) for ``tile``; the runner builds the grid."""
    ys = axis_coords(plan.rows, tile.lr_top, tile.out_top)
    xs = axis_coords(plan.cols, tile.lr_left, tile.out_left)
    return ys, xs, (axis_cell(plan.rows), axis_cell(plan.cols))


def crop_window(lr: torch.Tensor, plan: TilePlan, tile: Tile) -> torch.Tensor:
    """The LR window of ``tile`` from ``lr`` (3, h, w): a view, (3, Lh, Lw)."""
    height, width = plan.lr_tile_shape
    return lr[:, tile.lr_top : tile.lr_top + height, tile.lr_left : tile.lr_left + width]


def new_canvas(plan: TilePlan, channels: int = 3, dtype: torch.dtype = torch.uint8) -> torch.Tensor:
    """The (H, W, C) output image the tiles are written into (uninitialised: every pixel gets a tile)."""
    return torch.empty((*plan.out_size, channels), dtype=dtype)


def tile_region(canvas: torch.Tensor, plan: TilePlan, tile: Tile) -> torch.Tensor:
    """The (Th, Tw, C) view of ``canvas`` that ``tile``'s output fills.

    Tiles are written in ``plan.tiles()`` order (the batcher runs a request's tiles first in, first
    out), so where the last run of an axis overlaps its neighbour the later tile's pixels are kept;
    both were computed with a full halo, so either is correct.
    """
    tile_h, tile_w = plan.out_tile_shape
    return canvas[tile.out_top : tile.out_top + tile_h, tile.out_left : tile.out_left + tile_w]


def stitch_tiles(plan: TilePlan, outputs: list[torch.Tensor]) -> torch.Tensor:
    """Assemble per-tile outputs (Th, Tw, C) in ``plan.tiles()`` order into (H, W, C), for offline use
    (benchmarks, tests). The server writes each tile into its canvas as its batch finishes instead
    (:attr:`server.jobs.TileJob.out`), so it never holds the tiles and the image at once."""
    tiles = plan.tiles()
    if len(outputs) != len(tiles):
        raise ValueError(f"expected {len(tiles)} tile outputs, got {len(outputs)}")
    tile_shape = (*plan.out_tile_shape, outputs[0].shape[-1])
    image = new_canvas(plan, outputs[0].shape[-1], outputs[0].dtype)
    for tile, pixels in zip(tiles, outputs):
        if tuple(pixels.shape) != tile_shape:
            raise ValueError(f"tile output must be {tile_shape}, got {tuple(pixels.shape)}")
        tile_region(image, plan, tile).copy_(pixels)
    return image
