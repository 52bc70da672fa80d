"""Meta-SR decoder (meta-upscale): per-query filter weights predicted from the position and 1/scale.

The function is LIIF's compact Meta-SR baseline (yinboc/liif, ``models/misc.py``, ``MetaSR.query_rgb``).
For a query at ``coord`` with output-pixel size ``cell``:

1. move the query to its output pixel's top-left corner, ``coord - cell / 2``, and pick (nearest) the LR
   pixel that corner lies in;
2. the position input is the corner relative to that LR pixel's own top-left corner, in LR-pixel units
   (in [0, 1)), plus ``r_rev = cell_h · h / 2``, which is 1/s_h on an output grid;
3. an MLP 3 → hidden → C·9·3 turns those 3 numbers into a (C·9) × 3 filter, applied to the picked
   pixel's 3×3-unfolded features: RGB = unfolded · filter.

Computed in a cheaper order with the same result up to float rounding. The MLP's last layer is linear,
and the filter multiplies the features linearly, so

    RGB_c = Σ_m hidden_m · (Σ_j f_j · W2[(j, c), m]) + Σ_j f_j · b2[(j, c)]

where the bracketed sums depend only on the LR pixel. :meth:`MetaSRDecoder.prepare` therefore runs them
once per LR pixel, as one 3×3 convolution of the features into 3·hidden + 3 channels (the "table"), and
a query only computes its hidden vector (3 → hidden) and a 3 × hidden contraction with its pixel's row
of the table. On an output grid even the hidden layer's input is separable (the relative y depends on
the row only, the relative x on the column only, r_rev on the image only), and every query of an LR
pixel (by its corner) shares one table row, so :class:`MetaSRGridDecoding` contracts a whole block of queries with one
row in a single matrix product. LIIF's MetaSR predicts in [-1, 1] units (its data are normalised); the
table folds the conversion to [0, 1] into its filters, so no query pays for it.

The "slim" option (default) slices the hidden layer with the width; ``slim: false`` keeps it full.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from models.geometry import row_segments
from models.parts import Decoder, Encoder, GridDecoding, Regions, per_image
from models.registry import PartConfig, register_decoder
from models.slicing import SlicedMLP, mlp_regions
from models.widths import channels_at

#: LIIF's nudge of the corner before the nearest pick, so a corner exactly on an LR border (every other
#: output pixel at ×2) takes the pixel after the border, not whichever float rounding gives.
_EPS_SHIFT = 1e-6


@dataclass(frozen=True)
class MetaSRConfig(PartConfig):
    """Meta-SR's weight-prediction network: Linear(3, hidden) → ReLU → Linear(hidden, C·9·3)."""

    #: Hidden units of the weight-prediction MLP at full width (Meta-SR and LIIF: 256).
    hidden: int = 256
    #: Slice the hidden layer with the width (product default); False keeps the decoder full.
    slim: bool = True

    def __post_init__(self) -> None:
        if isinstance(self.hidden, bool) or not isinstance(self.hidden, int) or self.hidden < 1:
            raise ValueError(f"hidden must be an integer >= 1, got {self.hidden!r}")
        if not isinstance(self.slim, bool):
            raise ValueError(f"slim must be true or false, got {self.slim!r}")


@register_decoder(
    "metasr",
    config=MetaSRConfig,
    tiny={"hidden": 32},
    summary="Meta-SR: per-query 3x3 filters predicted from the relative position and 1/scale",
)
class MetaSRDecoder(Decoder):
    """Meta-upscale on the encoder's features, with the filter product reordered per LR pixel."""

    def __init__(self, config: MetaSRConfig, encoder: Encoder) -> None:
        super().__init__()
        self.config = config
        #: Length of a pixel's 3×3-unfolded feature vector (LIIF's feat_unfold): C·9.
        self.feat_dim = encoder.out_dim * 9
        # Inputs (rel_y, rel_x, r_rev); outputs a (C·9) × 3 filter, row-major (LIIF's view(C·9, 3)).
        self.mlp = SlicedMLP(3, (config.hidden,), self.feat_dim * 3)

    def hidden_size(self, width: float) -> int:
        """Hidden units at ``width``: floor(hidden · w) in slim mode, always all of them otherwise."""
        return channels_at(self.config.hidden, width if self.config.slim else 1.0)

    def prepare(self, features: torch.Tensor, lr: torch.Tensor, width: float, scale: torch.Tensor) -> torch.Tensor:
        """The table: (B, C, h, w) features → (B, 3·m + 3, h, w) for m hidden units at ``width``.

        Channel 3·k + c is Σ_j f_j · W2[(j, c), k] / 2 (the filter's hidden unit k, colour c, contracted
        with the pixel's unfolded features f); channel 3·m + c is Σ_j f_j · b2[(j, c)] / 2 + 1/2. So a
        query's RGB in [0, 1] is hidden · table[:3m] + table[3m:], and the halves convert LIIF's [-1, 1].
        A 3×3 convolution with padding 1 reads exactly the values ``F.unfold(features, 3, padding=1)``
        lays out (c major, then the 3×3 positions), so its weight is W2 reshaped.
        """
        hidden = self.hidden_size(width)
        channels = features.shape[1]
        last = self.mlp.layers[1]
        weight = last.weight[:, :hidden].reshape(channels, 9, 3, hidden).permute(3, 2, 0, 1)
        bias = last.bias.reshape(channels, 9, 3).permute(2, 0, 1)
        filters = torch.cat([weight.reshape(3 * hidden, channels, 3, 3), bias.reshape(3, channels, 3, 3)]) * 0.5
        offsets = torch.zeros(3 * hidden + 3, dtype=filters.dtype, device=filters.device)
        offsets[3 * hidden :] = 0.5
        return F.conv2d(features, filters, offsets, padding=1)

    def query(self, prepared: torch.Tensor, coord: torch.Tensor, cell: torch.Tensor, width: float) -> torch.Tensor:
        """RGB in [0, 1] at ``coord`` (B, Q, 2) for output pixels of size ``cell`` (B, Q, 2): (B, Q, 3)."""
        batch, channels, height, width_px = prepared.shape
        hidden_units = self.table_hidden_size(channels, width)
        index_y, rel_y = corner_cells(coord[..., 0], cell[..., 0], height)
        index_x, rel_x = corner_cells(coord[..., 1], cell[..., 1], width_px)
        r_rev = cell[..., 0] * (height / 2)
        first = self.mlp.layers[0]
        position = torch.stack([rel_y, rel_x, r_rev], dim=-1)
        hidden = F.relu(F.linear(position, first.weight[:hidden_units], first.bias[:hidden_units]))
        # (B·h·w, 3m + 3) rows, one per LR pixel; free when ``prepared`` is channels_last.
        rows = prepared.permute(0, 2, 3, 1).reshape(batch * height * width_px, channels)
        offsets = (torch.arange(batch, device=coord.device) * (height * width_px))[:, None]
        picked = rows.index_select(0, (offsets + index_y * width_px + index_x).reshape(-1))
        filters = picked[:, : 3 * hidden_units].view(-1, hidden_units, 3)
        hidden = hidden.reshape(-1, 1, hidden_units).to(filters.dtype)
        rgb = torch.baddbmm(picked[:, None, 3 * hidden_units :], hidden, filters)
        return rgb.view(batch, -1, 3)

    def grid_decoder(
        self,
        prepared: torch.Tensor,
        ys: torch.Tensor,
        xs: torch.Tensor,
        cell: torch.Tensor,
        width: float,
        compute_dtype: torch.dtype = torch.float32,
    ) -> GridDecoding:
        return MetaSRGridDecoding(self, prepared, ys, xs, cell, width, compute_dtype)

    def macs(self, lr_size: tuple[int, int], out_size: tuple[int, int], width: float) -> int:
        """MACs as :class:`MetaSRGridDecoding` runs them.

        Per LR pixel: the table convolution, C·9 → 3·(m + 1). Per output row and per output column: the
        hidden layer's y or x term (m each, a K = 1 product). Per query: the 3 × m contraction. The
        hidden layer's bias and r_rev term (m per image) and the ReLU are element-wise (not counted).
        :meth:`query`, which takes arbitrary points, runs the hidden layer per query: 3·m more per query.
        """
        hidden = self.hidden_size(width)
        lr_pixels = lr_size[0] * lr_size[1]
        queries = out_size[0] * out_size[1]
        per_image = hidden * (out_size[0] + out_size[1])
        return self.feat_dim * 3 * (hidden + 1) * lr_pixels + 3 * hidden * queries + per_image

    @property
    def receptive_radius(self) -> int:
        # The 3×3 unfold (one pixel), and the corner's pixel: for scales >= 1 the corner is at most half
        # an LR pixel before the query's centre, so it lies in the query's own LR pixel or the one before.
        return 2

    def used_regions(self, width: float) -> Regions:
        return mlp_regions("mlp", [self.config.hidden], [self.hidden_size(width)])

    def table_hidden_size(self, channels: int, width: float) -> int:
        """Hidden units at ``width``, after checking a table of ``channels`` was prepared at that width."""
        hidden = self.hidden_size(width)
        if channels != 3 * hidden + 3:
            raise ValueError(f"prepared has {channels} channels but width {width} needs {3 * hidden + 3}")
        return hidden


def corner_cells(coord: torch.Tensor, cell: torch.Tensor, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """One axis of Meta-SR's position: the LR pixel the output pixel's corner picks, and where in it.

    ``coord`` holds output-pixel centres in [-1, 1] (any shape) and ``cell`` their sizes (broadcastable);
    ``size`` is the LR extent along the axis. Returns the index of the LR pixel holding the corner
    ``coord - cell / 2`` (long, in [0, size)) and the corner relative to that pixel's own corner, in
    LR-pixel units (in [0, 1) except at the clamped image border). The query path and the grid path share
    this function, so they always pick the same pixels.
    """
    # In float64: a float32 corner is off by up to ~size/2 ulps of an LR pixel, and Meta-SR's output depends
    # on the position directly, so tiles (small frames) and the whole image (a large one) disagreed more.
    corner = coord.double() - cell.double() / 2
    nudged = (corner + _EPS_SHIFT).clamp(-1 + 1e-6, 1 - 1e-6)
    index = ((nudged + 1) * (size / 2)).floor().long().clamp(0, size - 1)
    pixel_corner = -1 + 2 * index.double() / size
    return index, ((corner - pixel_corner) * (size / 2)).to(coord.dtype)


#: An axis cut into runs of consecutive output pixels that pick the same LR pixel: (first output pixel of
#: each run, its LR pixel), plus the axis length, where the last run ends.
Runs = tuple[list[int], list[int], int]
#: Runs of one length L gathered for a product: (n, L) output positions and the n LR pixels.
RunGroup = tuple[torch.Tensor, torch.Tensor]


class MetaSRGridDecoding:
    """Decodes flat queries ``start:stop`` (row-major) of an output grid, block by block.

    Every query of one output row shares its relative y and LR row, every query of one column its
    relative x and LR column. So the hidden layer is a per-row term (y part, bias, r_rev part) plus a
    per-column term (x part), worked out once for the grid. The queries that pick one LR pixel form a
    block of consecutive rows × consecutive columns; blocks of equal shape are contracted with their
    pixels' table rows in one batched product, (n, rows·cols, m) @ (n, m, 3). At integer scales every
    block has one shape; otherwise each axis has runs of two lengths (plus a chunk's cut ones), so a chunk
    takes a handful of products. Holds no state between calls, so one instance serves one thread.
    """

    def __init__(
        self,
        decoder: MetaSRDecoder,
        prepared: torch.Tensor,
        ys: torch.Tensor,
        xs: torch.Tensor,
        cell: torch.Tensor,
        width: float,
        compute_dtype: torch.dtype = torch.float32,
    ) -> None:
        batch, channels, height, width_px = prepared.shape
        self.hidden = decoder.table_hidden_size(channels, width)
        device = prepared.device
        self.batch = batch
        self.lr_width = width_px
        self.dtype = compute_dtype
        ys = per_image(ys.to(device=device, dtype=torch.float32), batch, "ys")
        xs = per_image(xs.to(device=device, dtype=torch.float32), batch, "xs")
        cell = per_image(cell.to(device=device, dtype=torch.float32), batch, "cell")
        self.out_width = xs.shape[1]
        self.queries = ys.shape[1] * self.out_width
        #: (B, h·w, 3m + 3): each LR pixel's table row.
        self.table = prepared.permute(0, 2, 3, 1).reshape(batch, height * width_px, channels).to(compute_dtype)

        row_index, rel_y = corner_cells(ys, cell[:, :1], height)
        column_index, rel_x = corner_cells(xs, cell[:, 1:], width_px)
        first = decoder.mlp.layers[0]
        weight = first.weight[: self.hidden].float()
        r_rev = cell[:, 0] * (height / 2)
        per_image_term = first.bias[: self.hidden].float() + r_rev[:, None] * weight[:, 2]
        #: (B, H, m): bias, r_rev and y parts of the hidden layer's input, per output row.
        self.row_terms = torch.baddbmm(
            per_image_term[:, None, :], rel_y[:, :, None], weight[:, 0].expand(batch, 1, -1)
        ).to(compute_dtype)
        #: (B, W, m): the x part, per output column.
        self.column_terms = torch.bmm(rel_x[:, :, None], weight[:, 1].expand(batch, 1, -1)).to(compute_dtype)
        self.row_runs = [_runs(indices) for indices in row_index.tolist()]
        self.column_runs = [_runs(indices) for indices in column_index.tolist()]
        # Whole rows are the common case (every chunk but a partial first or last row): group them once.
        self.whole_row_groups = [_run_groups(runs, 0, self.out_width, device) for runs in self.column_runs]

    def decode(self, start: int, stop: int, out: torch.Tensor | None = None) -> torch.Tensor:
        """RGB in [0, 1] (not clamped) of flat queries ``start:stop`` of every image: (B, 3, n) float32.

        Equals :meth:`MetaSRDecoder.query` on the same coordinates (transposed) up to float rounding.
        ``out`` (B, 3, n) float32, if given, receives the result and is returned.
        """
        if not 0 <= start < stop <= self.queries:
            raise ValueError(f"query range must lie within [0, {self.queries}], got {start}:{stop}")
        if out is None:
            out = torch.empty(self.batch, 3, stop - start, dtype=torch.float32, device=self.table.device)
        device = self.table.device
        for image in range(self.batch):
            for row_start, row_stop, column_start, column_stop in row_segments(start, stop, self.out_width):
                if column_start == 0 and column_stop == self.out_width:
                    column_groups = self.whole_row_groups[image]
                else:
                    column_groups = _run_groups(self.column_runs[image], column_start, column_stop, device)
                row_groups = _run_groups(self.row_runs[image], row_start, row_stop, device)
                self._contract(image, row_groups, column_groups, start, out[image])
        return out

    def _contract(
        self, image: int, row_groups: list[RunGroup], column_groups: list[RunGroup], start: int, out: torch.Tensor
    ) -> None:
        """Every (row run shape, column run shape) pair of one rectangle: hidden layer, table rows, product."""
        hidden_units = self.hidden
        table = self.table[image]
        row_terms, column_terms = self.row_terms[image], self.column_terms[image]
        columns = [
            (positions, pixels, column_terms.index_select(0, positions.reshape(-1)).view(*positions.shape, -1))
            for positions, pixels in column_groups
        ]
        for row_positions, lr_rows in row_groups:
            row_count, row_length = row_positions.shape
            rows = row_terms.index_select(0, row_positions.reshape(-1)).view(row_count, 1, row_length, 1, -1)
            for column_positions, lr_columns, column_part in columns:
                column_count, column_length = column_positions.shape
                # (rows runs, column runs, row_length, column_length, m): one block of queries per LR pixel.
                hidden = torch.add(rows, column_part.view(1, column_count, 1, column_length, -1)).relu_()
                blocks = row_count * column_count
                pixels = (lr_rows[:, None] * self.lr_width + lr_columns[None, :]).reshape(-1)
                picked = table.index_select(0, pixels)
                filters = picked[:, : 3 * hidden_units].view(blocks, hidden_units, 3)
                rgb = torch.baddbmm(
                    picked[:, None, 3 * hidden_units :],
                    hidden.view(blocks, row_length * column_length, hidden_units),
                    filters,
                )
                flat = row_positions[:, None, :, None] * self.out_width + column_positions[None, :, None, :]
                out.index_copy_(1, flat.reshape(-1) - start, rgb.view(-1, 3).t().float())


def _runs(indices: list[int]) -> Runs:
    """Where consecutive output pixels of one axis start picking a new LR pixel (indices are monotone)."""
    starts, pixels = [], []
    for position, index in enumerate(indices):
        if not pixels or index != pixels[-1]:
            starts.append(position)
            pixels.append(index)
    return starts, pixels, len(indices)


def _run_groups(runs: Runs, lo: int, hi: int, device: torch.device) -> list[RunGroup]:
    """The runs of output pixels ``lo:hi`` (the first and last cut to the range), grouped by length."""
    starts, pixels, total = runs
    by_length: dict[int, tuple[list[int], list[int]]] = {}
    run = bisect.bisect_right(starts, lo) - 1
    while run < len(starts) and starts[run] < hi:
        first = max(starts[run], lo)
        last = min(starts[run + 1] if run + 1 < len(starts) else total, hi)
        firsts, lr_pixels = by_length.setdefault(last - first, ([], []))
        firsts.append(first)
        lr_pixels.append(pixels[run])
        run += 1
    groups = []
    for length, (firsts, lr_pixels) in by_length.items():
        positions = torch.tensor(firsts, device=device)[:, None] + torch.arange(length, device=device)
        groups.append((positions, torch.tensor(lr_pixels, device=device)))
    return groups
