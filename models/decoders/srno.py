"""SRNO decoder (Wei & Zhang, "Super-Resolution Neural Operator", CVPR 2023) with head-sliceable attention.

SRNO decodes a whole output grid at once. Each output pixel first gathers, from its four nearest LR
cells (LIIF's local ensemble lookup), the features weighted by the opposite areas, the four relative
coordinates and the cell, and a linear "lift" maps them to the operator's width (SRNO's ``conv00``).
Then Galerkin-type attention layers (``simple_attn``) mix every pixel with every other: per head,
``q · (LN(k)ᵀ LN(v) / N)`` over the N output pixels, then a GELU MLP. A GELU head maps to RGB, and the
bilinear (border-padded) upsampling of the LR image is added. Like the public code this works in its
normalised units, (x − 0.5) / 0.5, and converts to [0, 1] at the end.

Same function as the authors' ``SRNO.query_rgb`` and ``galerkin.simple_attn`` (their LayerNorm takes the
unbiased std and adds eps outside the square root; a layer returns ``x + MLP(x + attention(x))``),
computed in a cheaper order:

- The lift is linear, so its feature part is applied once per LR pixel and per ensemble shift
  (:meth:`SRNODecoder.prepare`: four 1×1 projections), and each output pixel blends the four gathered
  rows. The coordinate part is separable on a grid: a term per output row plus one per column.
- Training renders the whole grid (:meth:`SRNODecoder.render`), the attention in SRNO's order. Inference
  (:class:`SRNOGridDecoding`) runs in chunks with memory bounded by the chunk: ``LN(k)ᵀ LN(v)`` is a sum
  over pixels, so pass l accumulates layer l's sum over all chunks (recomputing the layers before it
  from the gathered lift, which costs no products), and only then are chunks decoded. Once a layer's
  d × d matrices are known its query projection, attention and first MLP layer are one linear map, so
  they fold into one width × width matrix per image.

One departure: the ensemble's blend weights drop SRNO's 1e-9 guard and factorise per axis
(:func:`axis_blend`), which changes nothing measurable except at output pixels sitting exactly on a
border LR cell's centre (odd integer scales), where SRNO's weights are 0/0 and decided by rounding.

The "slim" option slices the attention width by whole heads (a prefix of heads keeps every head's
LayerNorm and its q/k/v rows intact) and the head MLP's hidden layer, with the encoder's width;
``slim: false`` keeps the decoder full, which is the paper's AnySR-SRNO (it slices the encoder only).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from models.decoders.liif import nearest_cells
from models.parts import Decoder, Encoder, GridDecoding, Regions, per_image
from models.registry import PartConfig, register_decoder
from models.slicing import prefix_box
from models.widths import channels_at

#: SRNO's LayerNorm epsilon, added to the (unbiased) standard deviation.
_NORM_EPS = 1e-5
#: The ensemble shifts (y, x) in SRNO's order; shift k is weighted by the area of shift 3 - k.
_SHIFTS = ((-1, -1), (-1, 1), (1, -1), (1, 1))
#: Queries per image each accumulation pass handles at once, divided among the batch.
PASS_BLOCK_QUERIES = 4096


@dataclass(frozen=True)
class SRNOConfig(PartConfig):
    """SRNO as its authors configure it: width 256, 16 heads, two Galerkin layers, a 256-unit head."""

    #: Channels of the operator (SRNO's ``width``).
    width: int = 256
    #: Attention heads per layer (SRNO's ``blocks``); the width splits evenly among them.
    heads: int = 16
    #: Galerkin attention layers (SRNO's conv0 and conv1).
    layers: int = 2
    #: Hidden units of the RGB head (SRNO's fc1).
    hidden: int = 256
    #: Slice the heads and the head's hidden layer with the width (product default); False is the paper's mode.
    slim: bool = True

    def __post_init__(self) -> None:
        if self.heads < 1 or self.width % self.heads:
            raise ValueError(f"width must split evenly among heads >= 1, got width {self.width}, heads {self.heads}")
        if self.width // self.heads < 2:
            raise ValueError(f"each head needs at least 2 channels (its LayerNorm takes an unbiased std), got {self}")
        if self.layers < 1 or self.hidden < 1:
            raise ValueError(f"layers and hidden must be >= 1, got {self.layers}, {self.hidden}")


class SRNOPrepared(NamedTuple):
    """What :meth:`SRNODecoder.prepare` leaves for decoding: per-LR-pixel lift terms and the LR image."""

    #: (B, h·w·4, w′) rows: the lift's feature term of LR pixel p for ensemble shift k is row 4p + k.
    tables: torch.Tensor
    #: The LR image in [0, 1], (B, 3, h, w), for the bilinear skip.
    lr: torch.Tensor


class HeadNorm(nn.Module):
    """SRNO's per-head LayerNorm: (x − mean) / (unbiased std + eps) with an affine of its own per head.

    The std is summed out by hand: PyTorch's CPU ``std`` (a Welford reduction) is several times slower
    on d = 16 values per token and took about half of an accumulation pass.
    """

    def __init__(self, heads: int, head_dim: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(heads, head_dim))
        self.bias = nn.Parameter(torch.zeros(heads, head_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` (..., H′, d) for the first H′ heads."""
        heads, head_dim = x.shape[-2], x.shape[-1]
        centred = x - x.mean(-1, keepdim=True)
        std = (centred.square().sum(-1, keepdim=True) / (head_dim - 1)).sqrt()
        return centred / (std + _NORM_EPS) * self.weight[:heads] + self.bias[:heads]


class GalerkinLayer(nn.Module):
    """``x + MLP(x + attention(x))``, attention per head q · (LN(k)ᵀ LN(v) / N) (SRNO's ``simple_attn``).

    ``qkv`` keeps SRNO's channel layout: head h owns rows [3dh, 3dh + 3d) as its q, k, v in that order,
    so the first H′ heads read the prefix rows [0, 3dH′) and the prefix columns [0, dH′).
    """

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.head_dim = width // heads
        self.qkv = nn.Linear(width, 3 * width)
        self.k_norm = HeadNorm(heads, self.head_dim)
        self.v_norm = HeadNorm(heads, self.head_dim)
        self.out1 = nn.Linear(width, width)
        self.out2 = nn.Linear(width, width)

    def projections(self, heads: int) -> tuple[torch.Tensor, torch.Tensor]:
        """qkv weight (H′, 3, d, w′) and bias (H′, 3, d) of the first ``heads`` heads."""
        width = heads * self.head_dim
        weight = self.qkv.weight[: 3 * width, :width].view(heads, 3, self.head_dim, width)
        return weight, self.qkv.bias[: 3 * width].view(heads, 3, self.head_dim)

    def kernel(self, keys: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
        """Σ over tokens of LN(k)ᵀ LN(v) per head: (B, H′, d, d) from (B, n, H′, d) projections."""
        return torch.matmul(self.k_norm(keys).permute(0, 2, 3, 1), self.v_norm(values).transpose(1, 2))

    def forward(self, x: torch.Tensor, heads: int) -> torch.Tensor:
        """The whole grid's tokens ``x`` (B, N, w′) at ``heads`` heads, as SRNO orders the work."""
        batch, tokens, width = x.shape
        weight, bias = self.projections(heads)
        qkv = F.linear(x, weight.reshape(-1, width), bias.reshape(-1)).view(batch, tokens, heads, 3, self.head_dim)
        kernel = self.kernel(qkv[..., 1, :], qkv[..., 2, :]) / tokens
        attention = torch.matmul(qkv[..., 0, :].transpose(1, 2), kernel).transpose(1, 2).reshape(batch, tokens, width)
        hidden = F.gelu(F.linear(attention + x, self.out1.weight[:width, :width], self.out1.bias[:width]))
        return x + F.linear(hidden, self.out2.weight[:width, :width], self.out2.bias[:width])

    def kv_projection(self, heads: int, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """The k and v rows of ``qkv`` for the first ``heads`` heads, (2w′, w′) and (2w′,), in ``dtype``."""
        weight, bias = self.projections(heads)
        return weight[:, 1:].reshape(-1, weight.shape[-1]).to(dtype), bias[:, 1:].reshape(-1).to(dtype)

    def folded(self, kernel: torch.Tensor, dtype: torch.dtype) -> FoldedLayer:
        """The layer once its kernels LN(k)ᵀ LN(v) / N (B, H′, d, d) are known: one linear map per image.

        q_h · K_h = x · (W_q,hᵀ K_h) + b_q,h · K_h, so ``x + attention`` is x · (G + I) + g, and the first MLP
        layer applied to it is x · A + a with A = (G + I) · W₁ᵀ, a = g · W₁ᵀ + b₁.
        """
        batch, heads = kernel.shape[:2]
        weight, bias = self.projections(heads)
        width = heads * self.head_dim
        kernel = kernel.float()
        # (H′, w′, d) @ (B, H′, d, d) → (B, H′, w′, d): column block h of G is W_q,hᵀ K_h.
        gain = (
            torch.matmul(weight[:, 0].transpose(1, 2).float(), kernel).permute(0, 2, 1, 3).reshape(batch, width, width)
        )
        offset = torch.matmul(bias[:, None, 0].float(), kernel).reshape(batch, width)
        gain = gain + torch.eye(width, dtype=gain.dtype, device=gain.device)
        out1_t = self.out1.weight[:width, :width].t().float()
        matrix = torch.matmul(gain, out1_t)
        shift = torch.addmm(self.out1.bias[:width].float(), offset, out1_t)
        return FoldedLayer(
            matrix=matrix.to(dtype),
            shift=shift[:, None, :].to(dtype),
            out2_weight=self.out2.weight[:width, :width].to(dtype).contiguous(),
            out2_bias=self.out2.bias[:width].to(dtype),
        )


class FoldedLayer(NamedTuple):
    """A Galerkin layer with its kernels folded in: x ↦ x + GELU(x · A + a) · W₂ᵀ + b₂."""

    #: A (B, w′, w′) and a (B, 1, w′).
    matrix: torch.Tensor
    shift: torch.Tensor
    out2_weight: torch.Tensor
    out2_bias: torch.Tensor

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        hidden = F.gelu(torch.baddbmm(self.shift, x.to(self.matrix.dtype), self.matrix))
        return x + F.linear(hidden, self.out2_weight, self.out2_bias).float()


@register_decoder(
    "srno",
    config=SRNOConfig,
    tiny={"width": 24, "heads": 8, "hidden": 24},
    summary="SRNO: Galerkin-attention neural operator over the whole output grid (global), LR bilinear skip",
)
class SRNODecoder(Decoder):
    """Decodes a whole output grid from encoder features and the LR image."""

    query_mode = "grid"
    is_global = True

    def __init__(self, config: SRNOConfig, encoder: Encoder) -> None:
        super().__init__()
        self.config = config
        self.feat_dim = encoder.out_dim
        self.head_dim = config.width // config.heads
        # Inputs (SRNO's order): 4 relative coordinates (y, x), 4 area-weighted features, the cell (y, x).
        self.lift = nn.Linear(4 * (self.feat_dim + 2) + 2, config.width)
        self.layers = nn.ModuleList(GalerkinLayer(config.width, config.heads) for _ in range(config.layers))
        self.fc1 = nn.Linear(config.width, config.hidden)
        self.fc2 = nn.Linear(config.hidden, 3)

    # -- what a width runs -----------------------------------------------------------------------

    def heads_at(self, width: float) -> int:
        """Heads at ``width``: floor(heads · w) in slim mode (at least 1), always all in paper mode."""
        return channels_at(self.config.heads, width if self.config.slim else 1.0)

    def sizes(self, width: float) -> tuple[int, int, int]:
        """(heads, operator width, head hidden units) at ``width``."""
        heads = self.heads_at(width)
        hidden = channels_at(self.config.hidden, width if self.config.slim else 1.0)
        return heads, heads * self.head_dim, hidden

    # -- the passes ------------------------------------------------------------------------------

    def prepare(self, features: torch.Tensor, lr: torch.Tensor, width: float, scale: torch.Tensor) -> SRNOPrepared:
        """The lift's feature term for each LR pixel and ensemble shift: one 1×1 projection C → 4w′."""
        _, operator, _ = self.sizes(width)
        channels = self.feat_dim
        weight = self.lift.weight[:operator, 8 : 8 + 4 * channels].reshape(operator, 4, channels)
        weight = weight.transpose(0, 1).reshape(4 * operator, channels, 1, 1)
        projected = F.conv2d(features, weight)  # (B, 4w′, h, w); channel k·w′ + o
        batch, _, height, width_px = projected.shape
        # (B, h, w, 4, w′) → rows 4p + k; free when ``projected`` is channels_last.
        tables = projected.permute(0, 2, 3, 1).reshape(batch, height * width_px * 4, operator)
        return SRNOPrepared(tables=tables, lr=lr)

    def render(
        self, prepared: SRNOPrepared, ys: torch.Tensor, xs: torch.Tensor, cell: torch.Tensor, width: float
    ) -> torch.Tensor:
        """The whole grid, differentiably, as SRNO runs it: (B, 3, H, W) in [0, 1] (not clamped)."""
        heads, _, _ = self.sizes(width)
        lift = GridLift(self, prepared, ys, xs, cell, width)
        x = lift(0, lift.queries)
        for layer in self.layers:
            x = layer(x, heads)
        rgb = self.rgb(x, prepared.lr, lift.sample_points(0, lift.queries), width)
        return rgb.reshape(rgb.shape[0], 3, ys.shape[1], xs.shape[1])

    def rgb(self, x: torch.Tensor, lr: torch.Tensor, points: torch.Tensor, width: float) -> torch.Tensor:
        """Head and skip: tokens ``x`` (B, n, w′) at ``points`` (B, 1, n, 2) → (B, 3, n) in [0, 1]."""
        _, operator, hidden = self.sizes(width)
        dtype = x.dtype
        fc1_weight, fc1_bias = self.fc1.weight[:hidden, :operator].to(dtype), self.fc1.bias[:hidden].to(dtype)
        features = F.gelu(F.linear(x, fc1_weight, fc1_bias))
        out = F.linear(features, self.fc2.weight[:, :hidden].to(dtype), self.fc2.bias.to(dtype))
        out = out.float().transpose(1, 2)
        normalised = (lr.float() - 0.5) / 0.5
        skip = F.grid_sample(normalised, points, mode="bilinear", padding_mode="border", align_corners=False)
        return (out + skip[:, :, 0]) * 0.5 + 0.5

    def grid_decoder(
        self,
        prepared: SRNOPrepared,
        ys: torch.Tensor,
        xs: torch.Tensor,
        cell: torch.Tensor,
        width: float,
        compute_dtype: torch.dtype = torch.float32,
    ) -> GridDecoding:
        return SRNOGridDecoding(self, prepared, ys, xs, cell, width, compute_dtype=compute_dtype)

    # -- what the part declares ------------------------------------------------------------------

    def macs(self, lr_size: tuple[int, int], out_size: tuple[int, int], width: float) -> int:
        """MACs as :class:`SRNOGridDecoding` runs them (recomputation included).

        Per LR pixel: the lift's feature projection for the four shifts (4·C·w′). Per image: the lift's
        coordinate terms per output row and column and its cell term (2w′·(H + W + 1)), and per layer the
        fold (W_qᵀK: w′²·d, b_qK: w′·d, (G + I)·W₁ᵀ: w′³, g·W₁ᵀ: w′²). Per output pixel, pass l (one per
        layer) reruns layers 0..l−1 folded (2w′² each), projects k and v (2w′²) and adds kᵀv (w′·d);
        the decode pass runs every layer folded (2w′² each) and the head (w′·h + 3h). With L layers
        that is (L² + 3L)·w′² + L·w′·d + w′·h + 3h per output pixel: 10w′² + … for SRNO's two layers.
        """
        _, operator, hidden = self.sizes(width)
        layers, head_dim = self.config.layers, self.head_dim
        out_h, out_w = out_size
        per_lr_pixel = 4 * self.feat_dim * operator
        per_image = 2 * operator * (out_h + out_w + 1)
        per_image += layers * (operator**2 * head_dim + operator * head_dim + operator**3 + operator**2)
        per_query = (layers**2 + 3 * layers) * operator**2 + layers * operator * head_dim
        per_query += operator * hidden + 3 * hidden
        return per_lr_pixel * lr_size[0] * lr_size[1] + per_image + per_query * out_h * out_w

    @property
    def receptive_radius(self) -> int:
        """The local reach only (the ensemble's neighbouring cell, the bilinear skip's neighbour): every
        output pixel also depends on the whole image through the attention, which :attr:`is_global`
        declares, so the server never tiles this decoder."""
        return 1

    def used_regions(self, width: float) -> Regions:
        heads, operator, hidden = self.sizes(width)
        if heads == self.config.heads and hidden == self.config.hidden:
            return {}
        regions: Regions = {
            "lift.weight": (prefix_box(operator),),
            "lift.bias": (prefix_box(operator),),
            "fc1.weight": (prefix_box(hidden, operator),),
            "fc1.bias": (prefix_box(hidden),),
            "fc2.weight": (prefix_box(None, hidden),),
        }
        for index in range(self.config.layers):
            name = f"layers.{index}"
            regions[f"{name}.qkv.weight"] = (prefix_box(3 * operator, operator),)
            regions[f"{name}.qkv.bias"] = (prefix_box(3 * operator),)
            for norm in ("k_norm", "v_norm"):
                regions[f"{name}.{norm}.weight"] = (prefix_box(heads),)
                regions[f"{name}.{norm}.bias"] = (prefix_box(heads),)
            for linear in ("out1", "out2"):
                regions[f"{name}.{linear}.weight"] = (prefix_box(operator, operator),)
                regions[f"{name}.{linear}.bias"] = (prefix_box(operator),)
        return regions


class GridLift:
    """SRNO's lift (``conv00`` of the gathered ensemble) for any run of a row-major output grid.

    Everything but the blend of the four gathered feature rows is separable: the picked LR cell and the
    relative coordinate depend on the row or the column, never both. So the coordinate part is one term
    per output row plus one per column (the two shifts of an axis share their picked cell's rows of W),
    and the cell part one per image.
    """

    def __init__(
        self,
        decoder: SRNODecoder,
        prepared: SRNOPrepared,
        ys: torch.Tensor,
        xs: torch.Tensor,
        cell: torch.Tensor,
        width: float,
        dtype: torch.dtype | None = None,
    ) -> None:
        tables, lr = prepared
        batch, _, height, width_px = lr.shape
        _, operator, _ = decoder.sizes(width)
        if tables.shape[-1] != operator:
            raise ValueError(f"prepared has width {tables.shape[-1]} but width {width} needs {operator}")
        self.batch, self.lr_size = batch, (height, width_px)
        self.out_width = xs.shape[-1]
        self.queries = ys.shape[-1] * self.out_width
        self.dtype = tables.dtype if dtype is None else dtype
        #: (B·h·w·4, w′): image b's rows start at b·h·w·4.
        self.tables = tables.reshape(-1, operator).to(self.dtype)
        self.ys, self.xs = ys, xs
        weight = decoder.lift.weight[:operator]
        channels = decoder.feat_dim
        #: Per shift along each axis: picked LR cell (B, n) and relative coordinate (B, n).
        self.rows = {shift: nearest_cells(ys, height, shift) for shift in (-1, 1)}
        self.columns = {shift: nearest_cells(xs, width_px, shift) for shift in (-1, 1)}
        #: Per shift along each axis: its factor of the ensemble blend weight (B, n).
        self.row_blend = axis_blend(self.rows[-1][1], self.rows[1][1])
        self.column_blend = axis_blend(self.columns[-1][1], self.columns[1][1])
        # Column 2k of the lift is shift k's relative y, column 2k + 1 its relative x (SRNO's order).
        row_weight = torch.stack((weight[:, 0] + weight[:, 2], weight[:, 4] + weight[:, 6]))
        column_weight = torch.stack((weight[:, 1] + weight[:, 5], weight[:, 3] + weight[:, 7]))
        row_rel = torch.stack((self.rows[-1][1], self.rows[1][1]), dim=-1)
        column_rel = torch.stack((self.columns[-1][1], self.columns[1][1]), dim=-1)
        #: (B·H, w′) and (B·W, w′): the coordinate terms of every output row and column.
        self.row_terms = torch.matmul(row_rel, row_weight).reshape(-1, operator).to(self.dtype)
        self.column_terms = torch.matmul(column_rel, column_weight).reshape(-1, operator).to(self.dtype)
        rel_cell = cell * torch.tensor([height, width_px], dtype=cell.dtype, device=cell.device)
        cell_weight = weight[:, 8 + 4 * channels :]
        #: (B, 1, w′): the cell term plus the bias.
        self.constant = torch.addmm(decoder.lift.bias[:operator], rel_cell, cell_weight.t())[:, None].to(self.dtype)

    def positions(self, start: int, stop: int) -> tuple[torch.Tensor, torch.Tensor]:
        positions = torch.arange(start, stop, device=self.ys.device)
        return positions // self.out_width, positions % self.out_width

    def __call__(self, start: int, stop: int) -> torch.Tensor:
        """Lifted tokens of flat queries ``start:stop`` of every image: (B, n, w′)."""
        row_of, column_of = self.positions(start, stop)
        count = stop - start
        images = torch.arange(self.batch, device=row_of.device)[:, None]
        height, width_px = self.lr_size
        x = self.row_terms.index_select(0, (images * self.ys.shape[-1] + row_of).reshape(-1))
        x.add_(self.column_terms.index_select(0, (images * self.out_width + column_of).reshape(-1)))
        x = x.view(self.batch, count, -1).add_(self.constant)
        for k, (sy, sx) in enumerate(_SHIFTS):
            pixel = (
                images * (height * width_px)
                + self.rows[sy][0][:, row_of] * width_px
                + self.columns[sx][0][:, column_of]
            )
            gathered = self.tables.index_select(0, (pixel * 4 + k).reshape(-1)).view(self.batch, count, -1)
            blend = self.row_blend[sy][:, row_of] * self.column_blend[sx][:, column_of]
            x.addcmul_(gathered, blend[..., None].to(self.dtype))
        return x

    def sample_points(self, start: int, stop: int) -> torch.Tensor:
        """(x, y) of flat queries ``start:stop`` as ``grid_sample`` takes them: (B, 1, n, 2)."""
        row_of, column_of = self.positions(start, stop)
        return torch.stack((self.xs[:, column_of], self.ys[:, row_of]), dim=-1)[:, None]


def axis_blend(rel_minus: torch.Tensor, rel_plus: torch.Tensor) -> dict[int, torch.Tensor]:
    """One axis's factor of the ensemble's opposite-area weights: shift ±1 gets |rel of the other| / sum.

    SRNO weights shift (sy, sx) by the area |ry·rx| of the opposite shift over the sum of all four, each
    area plus 1e-9. Without the 1e-9 that is exactly the product of one factor per axis, since the sum of
    the areas is (|ry₋| + |ry₊|)(|rx₋| + |rx₊|). The factors are the limit SRNO's guard aims at: where both
    shifts of an axis clamp to the last LR cell and the query sits on its centre (at an odd integer scale
    s, output row and column sN − (s + 1)/2 do) the axis sum is 0, and SRNO's weights fall back to 1/4
    each, or to whatever 1-ulp noise in its coordinates decides, mixing in the wrong neighbour along the
    other axis; here that axis gives 1/2 to each shift (the same cell) and the other keeps its linear weights.
    """
    minus, plus = rel_minus.abs(), rel_plus.abs()
    total = minus + plus
    degenerate = total == 0
    safe_total = torch.where(degenerate, torch.ones_like(total), total)
    half = torch.full_like(total, 0.5)
    return {
        -1: torch.where(degenerate, half, plus / safe_total),
        1: torch.where(degenerate, half, minus / safe_total),
    }


class SRNOGridDecoding:
    """Chunked inference on an output grid: memory bounded by the chunk, not the output size.

    Built once per (prepared features, grid). Construction runs one accumulation pass per layer over the
    whole grid, :data:`PASS_BLOCK_QUERIES` queries at a time: pass l rebuilds each block's tokens (the
    lift, then layers 0..l−1 folded), projects k and v, and sums LN(k)ᵀ LN(v); with the sum complete,
    layer l folds into one matrix per image. :meth:`decode` then runs any chunk through the lift, every
    folded layer and the head. Holds no state between calls besides these per-grid tensors.
    """

    def __init__(
        self,
        decoder: SRNODecoder,
        prepared: SRNOPrepared,
        ys: torch.Tensor,
        xs: torch.Tensor,
        cell: torch.Tensor,
        width: float,
        compute_dtype: torch.dtype = torch.float32,
    ) -> None:
        batch = prepared.lr.shape[0]
        device = prepared.lr.device
        ys = per_image(ys.to(device=device, dtype=torch.float32), batch, "ys")
        xs = per_image(xs.to(device=device, dtype=torch.float32), batch, "xs")
        cell = per_image(cell.to(device=device, dtype=torch.float32), batch, "cell")
        self.decoder, self.width, self.dtype = decoder, width, compute_dtype
        self.heads, _, _ = decoder.sizes(width)
        self.lr = prepared.lr
        self.lift = GridLift(decoder, prepared, ys, xs, cell, width, dtype=torch.float32)
        self.batch = batch
        self.queries = self.lift.queries
        self.layers: list[FoldedLayer] = []
        with torch.no_grad():
            for layer in decoder.layers:
                self.layers.append(layer.folded(self._kernel(layer), compute_dtype))

    def _kernel(self, layer: GalerkinLayer) -> torch.Tensor:
        """LN(k)ᵀ LN(v) / N of ``layer`` over the whole grid, summed block by block: (B, H′, d, d)."""
        weight, bias = layer.kv_projection(self.heads, self.dtype)
        kernel = None
        step = max(1, PASS_BLOCK_QUERIES // self.batch)
        for start in range(0, self.queries, step):
            x = self._tokens(start, min(start + step, self.queries))
            kv = F.linear(x.to(self.dtype), weight, bias).float().view(self.batch, -1, self.heads, 2, layer.head_dim)
            block = layer.kernel(kv[..., 0, :], kv[..., 1, :])
            kernel = block if kernel is None else kernel.add_(block)
        assert kernel is not None
        return kernel / self.queries

    def _tokens(self, start: int, stop: int) -> torch.Tensor:
        """Tokens of flat queries ``start:stop`` after every layer folded so far: (B, n, w′) float32."""
        x = self.lift(start, stop)
        for layer in self.layers:
            x = layer(x)
        return x

    def decode(self, start: int, stop: int, out: torch.Tensor | None = None) -> torch.Tensor:
        if not 0 <= start < stop <= self.queries:
            raise ValueError(f"query range must lie within [0, {self.queries}], got {start}:{stop}")
        x = self._tokens(start, stop).to(self.dtype)
        rgb = self.decoder.rgb(x, self.lr, self.lift.sample_points(start, stop), self.width)
        if out is None:
            return rgb.contiguous()
        out.copy_(rgb)
        return out
