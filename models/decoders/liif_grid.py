"""Whole-grid LIIF decoding for inference: the same function as :meth:`LIIFDecoder.query`, less work per query.

When the queries form a grid (every output row shares one y, every column one x, as in a whole-image or
tile upscale), LIIF's lookup is separable: the LR cell a query picks, its relative coordinate and the
coordinate part of the MLP's first layer all depend on the row *or* the column, never on both. So this
module works them out once per row and per column (:class:`GridDecoder`), and per query only

1. gathers the first hidden layer's pre-activation from a small per-row table (an ``index_select`` into a
   reused buffer) and adds the column term fused with the ReLU,
2. runs the remaining layers as ``mm`` into reused buffers with bias and ReLU fused in one pass,
   holding activations feature-major, (features, queries): MKL's row-major product is up to ~1.5x slower
   when its output has a column count that is not a multiple of 16 (179 and 230, the 0.7 and 0.9
   widths, were slower than 256), while with queries as columns every width runs at full speed;
3. blends the four ensemble predictions by area (3 values per query) into a channels-first output.

No per-query ``(Q, 4)`` geometry tensor, no ``K = 4`` matrix product, no fresh allocation per layer: the
per-query element-wise work is what remains besides the matrix products, and it is what makes the time
of a narrow width stop tracking its FLOPs, so it is kept to two passes per layer. The matrix products
are those of :meth:`LIIFDecoder.query` minus its per-query (4 → h1) geometry product;
:meth:`LIIFDecoder.macs` counts what runs here.

Training never uses this module (it samples random queries and needs autograd); inference only.
"""

from __future__ import annotations

import torch

from models.decoders.liif import LIIFDecoder, nearest_cells
from models.geometry import row_segments
from models.kernels import relu_
from models.parts import per_image

#: The four ensemble shifts in LIIF's order; prediction k is weighted by the area of prediction 3 - k.
_SHIFTS = ((-1, -1), (-1, 1), (1, -1), (1, 1))


class GridDecoder:
    """Decodes queries ``start:stop`` of a row-major grid of one prepared batch, chunk by chunk.

    Built once per (prepared features, grid): ``prepared`` is (B, h1, h, w) from :meth:`LIIFDecoder.prepare`;
    ``ys`` (B, H) or (H,) and ``xs`` (B, W) or (W,) are the row and column coordinates in [-1, 1];
    ``cell`` (B, 2) or (2,) is the output-pixel size in the same units. ``compute_dtype`` is the dtype of
    the matrix products (float32, or bfloat16 where the hardware has fast bf16); the blend is float32.
    Holds no state between calls besides reusable scratch buffers, so one instance serves one thread.
    """

    def __init__(
        self,
        decoder: LIIFDecoder,
        prepared: torch.Tensor,
        ys: torch.Tensor,
        xs: torch.Tensor,
        cell: torch.Tensor,
        width: float,
        compute_dtype: torch.dtype = torch.float32,
    ) -> None:
        batch, hidden1, height, width_px = prepared.shape
        self.sizes = decoder.hidden_sizes(width)
        if hidden1 != self.sizes[0]:
            raise ValueError(f"prepared has {hidden1} channels but width {width} needs {self.sizes[0]}")
        device = prepared.device
        self.batch = batch
        self.lr_width = width_px
        self.dtype = compute_dtype
        ys = per_image(ys.to(device=device, dtype=torch.float32), batch, "ys")
        xs = per_image(xs.to(device=device, dtype=torch.float32), batch, "xs")
        cell = per_image(cell.to(device=device, dtype=torch.float32), batch, "cell")
        self.out_width = xs.shape[1]
        self.queries = ys.shape[1] * self.out_width

        layers = decoder.mlp.layers
        first = layers[0].weight[:hidden1, decoder.feat_dim :].float()
        # The cell term is the same for every query of an image: fold it into the per-LR-pixel table once.
        rel_cell = cell * torch.tensor([height, width_px], dtype=torch.float32, device=device)
        cell_term = rel_cell @ first[:, 2:].t()
        #: (B, h, w, h1): first layer's feature term, bias and cell term for every LR pixel. One add in
        #: the compute dtype (prepared arrives in it from autocast): going through float32 cost two extra
        #: full-size copies, ~40 ms of a 0.7 s bf16 upscale of 256² at ×2.
        rows = prepared.permute(0, 2, 3, 1)
        self.table = torch.add(rows.to(compute_dtype), cell_term.to(compute_dtype)[:, None, None, :])
        #: Per shift along each axis: picked LR cell (B, n) and relative coordinate (B, n).
        self.row_cells = {shift: nearest_cells(ys, height, shift) for shift in (-1, 1)}
        self.column_cells = {shift: nearest_cells(xs, width_px, shift) for shift in (-1, 1)}
        #: Coordinate terms of the first layer per row (B, H, h1) and per column (B, W, h1).
        self.row_terms = {s: (rel[..., None] * first[:, 0]).to(compute_dtype) for s, (_, rel) in self.row_cells.items()}
        self.column_terms = {
            s: (rel[..., None] * first[:, 1]).to(compute_dtype) for s, (_, rel) in self.column_cells.items()
        }
        #: Layout of the hidden activations. fp32 keeps them feature-major, (h, rows): MKL's fp32 product is up
        #: to ~1.5x slower when its output has a column count that is not a multiple of 16 (the 0.7 and 0.9
        #: widths' 179 and 230). In bf16/fp16 (oneDNN) row-major, (rows, h), is faster: the bias folds into
        #: the product (addmm with a row bias) and only the ReLU is a separate pass; feature-major there
        #: measured ~1.7x slower per layer (a product, then separate bias and ReLU passes: PyTorch's fused
        #: add-ReLU kernel is fp32-only).
        self.row_major = compute_dtype != torch.float32
        # Hidden layers as contiguous slices: (out, in) weights and (out, 1) biases for feature-major
        # products, or transposed (in, out) weights and (out,) biases for row-major ones.
        self.hidden_weights = []
        for layer, (size_in, size_out) in zip(layers[1:-1], zip(self.sizes[:-1], self.sizes[1:])):
            weight = layer.weight[:size_out, :size_in].to(compute_dtype)
            bias = layer.bias[:size_out].to(compute_dtype)
            if self.row_major:
                self.hidden_weights.append((weight.t().contiguous(), bias))
            else:
                self.hidden_weights.append((weight.contiguous(), bias[:, None]))
        last = layers[-1]
        self.out_weight = last.weight[:, : self.sizes[-1]].to(compute_dtype).contiguous()
        self.out_bias = last.bias.to(compute_dtype)
        self._scratch: torch.Tensor | None = None

    def decode(self, start: int, stop: int, out: torch.Tensor | None = None) -> torch.Tensor:
        """RGB in [0, 1] (not clamped) of flat queries ``start:stop`` (row-major) of every image: (B, 3, n).

        Channels-first, so a whole image's output is already NCHW. Equals ``decoder.query`` on the same
        coordinates (transposed) up to float rounding. ``out`` (B, 3, n) float32, if given, receives the
        result (e.g. a slice of the whole output) and is returned.
        """
        if not 0 <= start < stop <= self.queries:
            raise ValueError(f"query range must lie within [0, {self.queries}], got {start}:{stop}")
        count = stop - start
        if out is None:
            out = torch.empty(self.batch, 3, count, dtype=torch.float32, device=self.table.device)
        out.zero_()
        positions = torch.arange(start, stop, device=self.table.device)
        row_of, column_of = positions // self.out_width, positions % self.out_width
        segments = row_segments(start, stop, self.out_width)
        areas = {
            (sy, sx): (self.row_cells[sy][1][:, row_of] * self.column_cells[sx][1][:, column_of]).abs() + 1e-9
            for sy, sx in _SHIFTS
        }
        total = areas[_SHIFTS[0]] + areas[_SHIFTS[1]] + areas[_SHIFTS[2]] + areas[_SHIFTS[3]]
        first, second = self._buffers(self.batch * count)
        for shift_y in (-1, 1):
            row_tables = self._row_tables(shift_y, segments)
            for shift_x in (-1, 1):
                self._first_layer(row_tables, shift_x, segments, count, first)
                hidden = self._hidden_layers(self.batch * count, first, second)
                # (3, B·n): one M = 3 product over all queries.
                if self.row_major:
                    prediction = torch.addmm(self.out_bias, hidden, self.out_weight.t()).float().t()
                else:
                    prediction = torch.addmm(self.out_bias[:, None], self.out_weight, hidden).float()
                weight = areas[(-shift_y, -shift_x)] / total
                for image in range(self.batch):
                    out[image].addcmul_(prediction[:, image * count : (image + 1) * count], weight[image])
        # The blend weights sum to 1, so converting the blend from LIIF's [-1, 1] units converts each part.
        return out.mul_(0.5).add_(0.5)

    def _row_tables(self, shift_y: int, segments: list[tuple[int, int, int, int]]) -> list[list[torch.Tensor]]:
        """Per image and segment: the picked LR rows plus each output row's coordinate term, (R·w, h1).

        Only about 1/scale of the chunk's size, so building it costs little next to the per-query gather.
        """
        index_y = self.row_cells[shift_y][0]
        tables = []
        for image in range(self.batch):
            per_segment = []
            for row_start, row_stop, _, _ in segments:
                picked = self.table[image].index_select(0, index_y[image, row_start:row_stop])
                picked += self.row_terms[shift_y][image, row_start:row_stop, None, :]
                per_segment.append(picked.view(-1, picked.shape[-1]))
            tables.append(per_segment)
        return tables

    def _first_layer(
        self,
        row_tables: list[list[torch.Tensor]],
        shift_x: int,
        segments: list[tuple[int, int, int, int]],
        count: int,
        buffer: torch.Tensor,
    ) -> None:
        """Fill flat ``buffer`` as (B·n, h1): ReLU(feature + cell + row + column terms) for ``shift_x``."""
        index_x = self.column_cells[shift_x][0]
        hidden1 = self.sizes[0]
        target = buffer[: self.batch * count * hidden1].view(self.batch * count, hidden1)
        for image in range(self.batch):
            offset = image * count
            for (row_start, row_stop, col_start, col_stop), table in zip(segments, row_tables[image]):
                rows, columns = row_stop - row_start, col_stop - col_start
                local = torch.arange(rows, device=table.device)[:, None] * self.lr_width
                flat = (local + index_x[image, col_start:col_stop]).view(-1)
                piece = target[offset : offset + rows * columns]
                torch.index_select(table, 0, flat, out=piece)
                _add_relu_(piece.view(rows, columns, hidden1), self.column_terms[shift_x][image, col_start:col_stop])
                offset += rows * columns

    def _hidden_layers(self, rows: int, first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
        """Hidden layers after the first, alternating between the two scratch buffers: (h_last, rows)
        feature-major, or (rows, h_last) when :attr:`row_major`.

        ``first`` holds the first layer's (rows, h1) activations; a feature-major first product reads them
        transposed (no copy), and from then on activations are (h, rows).
        """
        current = first[: rows * self.sizes[0]].view(rows, self.sizes[0])
        if not self.row_major:
            current = current.t()
        holding, spare = first, second
        for weight, bias in self.hidden_weights:
            if self.row_major:
                target = spare[: rows * weight.shape[1]].view(rows, weight.shape[1])
                torch.addmm(bias, current, weight, out=target)
                relu_(target)
            else:
                target = spare[: rows * weight.shape[0]].view(weight.shape[0], rows)
                torch.mm(weight, current, out=target)
                _add_relu_(target, bias)
            current = target
            holding, spare = spare, holding
        return current

    def _buffers(self, rows: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Two flat scratch buffers of ``rows`` × the widest layer, reused across calls when large enough."""
        size = rows * max(self.sizes)
        if self._scratch is None or self._scratch.numel() < 2 * size:
            self._scratch = torch.empty(2 * size, dtype=self.dtype, device=self.table.device)
        return self._scratch[:size], self._scratch[size : 2 * size]


def _add_relu_(target: torch.Tensor, addend: torch.Tensor) -> torch.Tensor:
    """``target = relu(target + addend)`` in place, in one pass where PyTorch has the fused CPU kernel."""
    if target.device.type == "cpu" and target.dtype == torch.float32 and target.is_contiguous():
        return torch.ops.aten._add_relu_(target, addend)
    return relu_(target.add_(addend))
