"""LIIF decoder (local implicit image function) with a width-sliceable MLP.

Same function as LIIF's ``query_rgb`` with feature unfolding, relative coordinates, cell decoding and
the local ensemble, computed in a cheaper order: the MLP's first layer is linear in the 3×3-unfolded
features, and every query that lands in one LR cell sees the same unfolded vector. So that part is
applied once per LR pixel, as a 3×3 convolution of the features into the first hidden layer
(:meth:`LIIFDecoder.prepare`), and each query only gathers its cell's row and adds the 4-input
coordinate/cell term (:meth:`LIIFDecoder.query`). The weights keep LIIF's layout (a Linear over
576 + 2 + 2 inputs), so the saving changes no parameter and no result beyond float rounding.

The "slim" option (the product default) lets the width slice the MLP's hidden layers too, so compute
really falls with width; ``slim: false`` is the paper's mode (decoder always full). Inference on an
output grid runs :class:`models.decoders.liif_grid.GridDecoder`, the same function with less work per query.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from models.parts import Decoder, Encoder, GridDecoding, Regions
from models.registry import PartConfig, register_decoder
from models.slicing import SlicedMLP, mlp_regions
from models.widths import channels_at

#: LIIF's tiny shift that keeps a query exactly on a cell border from picking both neighbours.
_EPS_SHIFT = 1e-6


@dataclass(frozen=True)
class LIIFConfig(PartConfig):
    """LIIF with feature unfolding, cell decoding and the local ensemble (the paper's 4 × 256 MLP)."""

    #: Hidden layer sizes of the MLP at full width.
    hidden: tuple[int, ...] = (256, 256, 256, 256)
    #: Slice the hidden layers with the width (product default); False is the paper's mode.
    slim: bool = True

    def __post_init__(self) -> None:
        if not self.hidden or any(size < 1 for size in self.hidden):
            raise ValueError(f"hidden needs at least one layer of size >= 1, got {self.hidden}")


@register_decoder(
    "liif",
    config=LIIFConfig,
    tiny={"hidden": [32, 32]},
    summary="LIIF: MLP on 3x3-unfolded features, relative coordinate and cell, local ensemble",
)
class LIIFDecoder(Decoder):
    """Decodes RGB at arbitrary continuous coordinates from encoder features."""

    def __init__(self, config: LIIFConfig, encoder: Encoder) -> None:
        super().__init__()
        self.config = config
        self.feat_dim = encoder.out_dim * 9
        # Inputs: unfolded features (C·9), relative coordinate (2), cell size (2).
        self.mlp = SlicedMLP(self.feat_dim + 4, config.hidden, 3)

    def hidden_sizes(self, width: float) -> list[int]:
        """Hidden sizes at ``width``: floor(h · w) in slim mode, always full in paper mode."""
        effective = width if self.config.slim else 1.0
        return [channels_at(size, effective) for size in self.config.hidden]

    def prepare(self, features: torch.Tensor, lr: torch.Tensor, width: float, scale: torch.Tensor) -> torch.Tensor:
        """First MLP layer's feature term plus bias for every LR pixel: (B, C, h, w) → (B, h1, h, w).

        Equal to applying W1[:, :C·9] to ``F.unfold(features, 3, padding=1)`` (LIIF's feat_unfold), whose
        channel order (c major, then the 3×3 positions) is exactly a conv weight's (C, 3, 3) layout.
        """
        first = self.mlp.layers[0]
        hidden = self.hidden_sizes(width)[0]
        channels = features.shape[1]
        weight = first.weight[:hidden, : self.feat_dim].reshape(hidden, channels, 3, 3)
        return F.conv2d(features, weight, first.bias[:hidden], padding=1)

    def query(self, prepared: torch.Tensor, coord: torch.Tensor, cell: torch.Tensor, width: float) -> torch.Tensor:
        """RGB in [0, 1] at ``coord`` (B, Q, 2), given cell sizes (B, Q, 2): (B, Q, 3).

        Coordinates are (y, x) in [-1, 1] over the extent of ``prepared`` (B, h1, h, w); cells are
        output-pixel sizes in the same units. The MLP itself predicts LIIF's [-1, 1] units.
        """
        return self.query_normalised(prepared, coord, cell, width) * 0.5 + 0.5

    def query_normalised(
        self, prepared: torch.Tensor, coord: torch.Tensor, cell: torch.Tensor, width: float
    ) -> torch.Tensor:
        """:meth:`query` in the MLP's own [-1, 1] units (what LIIF's ``query_rgb`` returns)."""
        batch, hidden1, height, width_px = prepared.shape
        sizes = self.hidden_sizes(width)
        layers = self.mlp.layers
        # (B·h·w, h1) rows; free when ``prepared`` is channels_last.
        rows = prepared.permute(0, 2, 3, 1).reshape(batch * height * width_px, hidden1)
        coord_weight_t = layers[0].weight[:hidden1, self.feat_dim :].t().to(rows.dtype)
        rel_cell = cell * torch.tensor([height, width_px], dtype=cell.dtype, device=cell.device)
        offsets = (torch.arange(batch, device=coord.device) * (height * width_px))[:, None]

        predictions = []
        areas = []
        for shift_y in (-1, 1):
            index_y, rel_y = nearest_cells(coord[..., 0], height, shift_y)
            for shift_x in (-1, 1):
                index_x, rel_x = nearest_cells(coord[..., 1], width_px, shift_x)
                gathered = rows.index_select(0, (offsets + index_y * width_px + index_x).reshape(-1))
                geometry = torch.stack([rel_y, rel_x, rel_cell[..., 0], rel_cell[..., 1]], dim=-1).reshape(-1, 4)
                # gathered + geometry · W1[:, C·9:]ᵀ in one product (no separate K=4 matmul and add).
                hidden = F.relu(torch.addmm(gathered, geometry.to(rows.dtype), coord_weight_t))
                for layer, (size_in, size_out) in zip(layers[1:-1], zip(sizes[:-1], sizes[1:])):
                    hidden = F.relu(F.linear(hidden, layer.weight[:size_out, :size_in], layer.bias[:size_out]))
                out = F.linear(hidden, layers[-1].weight[:, : sizes[-1]], layers[-1].bias)
                predictions.append(out.reshape(batch, -1, 3))
                areas.append((rel_y * rel_x).abs() + 1e-9)

        total = areas[0] + areas[1] + areas[2] + areas[3]
        # Each prediction is weighted by the area of the diagonally opposite one (LIIF's swap 0↔3, 1↔2).
        result = torch.zeros_like(predictions[0], dtype=torch.float32)
        for prediction, area in zip(predictions, reversed(areas)):
            result = result + prediction.float() * (area / total)[..., None]
        return result

    def grid_decoder(
        self,
        prepared: torch.Tensor,
        ys: torch.Tensor,
        xs: torch.Tensor,
        cell: torch.Tensor,
        width: float,
        compute_dtype: torch.dtype = torch.float32,
    ) -> GridDecoding:
        from models.decoders.liif_grid import GridDecoder

        return GridDecoder(self, prepared, ys, xs, cell, width, compute_dtype=compute_dtype)

    def macs(self, lr_size: tuple[int, int], out_size: tuple[int, int], width: float) -> int:
        """MACs as :meth:`grid_decoder` runs them.

        Per LR pixel: the 3×3 projection conv (C·9 → h1). Per output pixel: the local ensemble's 4 queries,
        each the MLP layers after the first. The first layer's 4 geometry inputs (relative coordinate, cell)
        cost no per-query MACs on an output grid: they are separable, so :mod:`models.decoders.liif_grid`
        applies them as per-row and per-column terms (h1 multiplies per output row or column and shift, and
        one (2 → h1) product per image for the cell: not counted, < 0.1%). :meth:`query`, which takes
        arbitrary coordinates, does run them per query: 4·h1 more MACs per query (0.5% at w = 1).
        """
        sizes = self.hidden_sizes(width)
        per_lr_pixel = self.feat_dim * sizes[0]
        per_query = sum(a * b for a, b in zip(sizes[:-1], sizes[1:])) + sizes[-1] * 3
        return per_lr_pixel * lr_size[0] * lr_size[1] + 4 * per_query * out_size[0] * out_size[1]

    @property
    def receptive_radius(self) -> int:
        # The 3×3 unfold (one pixel) and the local ensemble's neighbouring cell (one more).
        return 2

    def used_regions(self, width: float) -> Regions:
        return mlp_regions("mlp", list(self.config.hidden), self.hidden_sizes(width))


def nearest_cells(coord: torch.Tensor, size: int, shift: int) -> tuple[torch.Tensor, torch.Tensor]:
    """One axis of LIIF's local-ensemble lookup: the LR cell a query picks after a half-pixel shift.

    ``coord`` holds query positions along one axis in [-1, 1] (any shape); ``size`` is the LR extent along
    that axis and ``shift`` is -1 or +1 (towards which diagonal neighbour). Returns the picked cell index
    (long, in [0, size)) and the query's position relative to that cell's centre in LR-pixel units.
    Both axes are independent, so :meth:`LIIFDecoder.query` and the whole-grid path
    (:mod:`models.decoders.liif_grid`) share this one function and always pick the same cells.
    """
    # Move half an LR pixel towards the neighbour; the epsilon breaks ties for queries exactly on a border.
    shifted = (coord + (shift / size + _EPS_SHIFT)).clamp(-1 + 1e-6, 1 - 1e-6)
    index = ((shifted + 1) * size / 2).floor().long().clamp(0, size - 1)
    centre = -1 + (2 * index.to(coord.dtype) + 1) / size
    return index, (coord - centre) * size
