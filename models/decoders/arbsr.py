"""ArbSR (Wang et al., ICCV 2021): scale-aware adaption inside the backbone plus a scale-aware upsampler.

Two plug-ins, as ``The-Learning-And-Vision-Atelier-LAVA/ArbSR`` ``model/arbrcan.py`` builds them:

- **Scale-aware feature adaption** (``SA_adapt``), after every K backbone stages (the encoder calls
  :meth:`ArbSRDecoder.encoder_hook` after each stage): ``x + conv_s(x) · mask(x)``. ``conv_s`` is a 3×3
  convolution whose kernel is a softmax-routed mix of E expert kernels, routed by (1/s_h, 1/s_w)
  (``SA_conv``); ``mask`` is a spatial gate: 3×3 conv, 2×2 average pool, 3×3 convs at half resolution,
  bilinear ×2 upsampling, 3×3 conv to one channel, sigmoid, with a normalisation after every conv.
- **Scale-aware upsampling** (``SA_upsample``): for every output pixel an MLP of (1/s_w, 1/s_h, the pixel's
  offset inside its LR pixel) predicts a 2-d sampling offset and sigmoid routing weights over E expert
  1×1 "compress" (C → C/8) and "expand" (C/8 → C) filters; the features are sampled bilinearly at the
  pixel's LR position plus the offset, filtered by the routed compress-expand pair, added to the sample,
  and a 3×3 tail convolution at output resolution makes RGB.

Departures from the public code (each is a choice the serving contract forces or a pure reordering; the
public-code check in ``tools/public_code/arbsr.py`` compares the functions):

- Offsets are clamped to ±``max_offset`` LR pixels. ArbSR's are unbounded, so an output pixel could read
  any feature and no finite halo would make tiles exact. Within the bound the function is ArbSR's.
- BatchNorm in the mask branch is a learned per-channel scale and shift, i.e. BatchNorm as it runs in eval
  with its statistics folded in. Batch statistics would couple the images of a batch (and the tiles of an
  image) and are noisy at our batch sizes; a trained ArbSR's BatchNorm maps onto it exactly.
- Odd sizes: the 2×2 pool needs an even map. The mask branch replicates the last row/column before
  pooling and crops after upsampling (ArbSR's code fails on odd sizes). Pool windows must also start at
  even coordinates in a tile as in the whole image, so the decoder declares ``alignment = 2``.
- Output positions come from the grid the decoder is given (LR position = (y + 1)·h/2 in pixel-edge
  units), not from a nominal scale; for a whole image at an integer-ratio size this is ArbSR's
  (i + 0.5)/s. The 1/s inputs come from the conditioning scale. Sampling is bilinear with zero padding at
  pixel centres (ArbSR's ``grid_sample`` under PyTorch 1.1, align_corners=True with its (w - 1)
  normalisation); positions are computed in float64 per row and column (float32 fractions per pixel) so
  tiles and whole images sample the same points to float32 precision.
- The compress filters are applied per LR pixel before sampling (sampling is linear, so this is the same
  function) and each expert's output is mixed by the routing weights, instead of mixing the experts'
  weights per output pixel and applying them: 2·(E + 1)·C·C/8 → E·C·C/8 MACs per output pixel (plus
  E·C·C/8 per LR pixel). The embedding's first layer is separable (a row term plus a column term), so
  it costs no per-pixel products.
- The tail predicts in the encoder's [-1, 1] units (our encoders normalise their input, LIIF-style) and is
  mapped to [0, 1]; ArbSR adds the dataset mean back instead.

The tail convolution runs at output resolution, so an output pixel also depends on its neighbouring
output rows and columns: the grid decoder makes HR features in row chunks with a one-row halo, and the
halo row or column beyond the LR extent is zero (the tail's zero padding in the whole-image pass).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from models.geometry import row_segments
from models.parts import Decoder, Encoder, GridDecoding, StageHook, per_image
from models.registry import PartConfig, register_decoder

#: ArbSR's tolerance when it finds the LR pixel of an output pixel: a position within this below an LR
#: pixel edge counts as past it, so float rounding never moves an exactly-on-edge pixel to the left one.
_EDGE_EPSILON = 1e-3
#: Zero pixels around the prepared table (the most a clamped 2 × 2 bilinear footprint needs).
_BORDER = 2


@dataclass(frozen=True)
class ArbSRConfig(PartConfig):
    """ArbSR's plug-in module: adaption blocks every ``adapt_every`` stages and the scale-aware upsampler."""

    #: K: an adaption block after every K encoder stages (stages K, 2K, ...; floor(n_stages / K) blocks).
    #: 4 for EDSR-baseline's 16 blocks (4 blocks), as ArbRCAN adapts once per residual group.
    adapt_every: int = 4
    #: Experts in each scale-aware convolution and in the upsampler's compress/expand filters.
    experts: int = 4
    #: Hidden size of the adaption convolution's routing MLP (2 → hidden → experts).
    routing_hidden: int = 64
    #: Width of the upsampler's embedding MLP (4 → dim → dim, then the routing and offset heads).
    embed_dim: int = 64
    #: The upsampler compresses C features to max(1, C // compress_ratio) between its expert filters.
    compress_ratio: int = 8
    #: Channels of the adaption blocks' mask branch.
    mask_channels: int = 16
    #: 3×3 convolutions at half resolution in the mask branch (ArbSR: 2). Each widens the radius by 2.
    mask_depth: int = 2
    #: Bound on the learned sampling offsets, in LR pixels. Half-integers make the declared radius
    #: ceil(max_offset + 1.5) reachable at every scale >= 1.
    max_offset: float = 0.5

    def __post_init__(self) -> None:
        counts = {
            "adapt_every": self.adapt_every,
            "experts": self.experts,
            "routing_hidden": self.routing_hidden,
            "embed_dim": self.embed_dim,
            "compress_ratio": self.compress_ratio,
            "mask_channels": self.mask_channels,
        }
        for name, value in counts.items():
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
        if not isinstance(self.mask_depth, int) or isinstance(self.mask_depth, bool) or self.mask_depth < 0:
            raise ValueError(f"mask_depth must be an integer >= 0, got {self.mask_depth!r}")
        if not isinstance(self.max_offset, int | float) or not 0 <= self.max_offset < math.inf:
            raise ValueError(f"max_offset must be a finite number >= 0, got {self.max_offset!r}")


class ChannelAffine(nn.Module):
    """BatchNorm2d as it runs in eval, statistics folded in: ``x · weight + bias`` per channel."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.weight[:, None, None] + self.bias[:, None, None]


def expert_bank(experts: int, *shape: int) -> torch.Tensor:
    """E expert weights of ``shape``, each initialised as ArbSR does (as one conv weight of that shape)."""
    bank = torch.empty(experts, *shape)
    for expert in bank:
        nn.init.kaiming_uniform_(expert, a=math.sqrt(5))
    return bank


class ScaleAwareConv(nn.Module):
    """ArbSR's ``SA_conv``: a bias-free 3×3 convolution whose kernel mixes E experts, softmax-routed by
    (1/s_h, 1/s_w). Each image of a batch gets its own kernel (one grouped convolution)."""

    def __init__(self, channels: int, experts: int, hidden: int) -> None:
        super().__init__()
        self.channels = channels
        self.experts = experts
        self.routing = nn.Sequential(nn.Linear(2, hidden), nn.ReLU(), nn.Linear(hidden, experts))
        # The experts stacked along the output channels, (E·C, C, 3, 3): a 4-d tensor like any conv weight
        # (a 5-d one would break ``Module.to(memory_format=torch.channels_last)``).
        self.weight = nn.Parameter(expert_bank(experts, channels, channels, 3, 3).flatten(0, 1))

    def forward(self, x: torch.Tensor, inverse_scale: torch.Tensor) -> torch.Tensor:
        batch, channels, height, width = x.shape
        routing = torch.softmax(self.routing(inverse_scale.to(x.dtype)), dim=1)  # (B, E)
        bank = self.weight.reshape(self.experts, -1).to(routing.dtype)
        kernels = (routing @ bank).view(batch * channels, channels, 3, 3)
        out = F.conv2d(x.reshape(1, batch * channels, height, width), kernels, padding=1, groups=batch)
        return out.view(batch, channels, height, width)

    def macs(self, lr_size: tuple[int, int]) -> int:
        """Routing MLP and kernel mixing once per image, the convolution per pixel."""
        hidden = self.routing[0].out_features
        kernel = self.weight.numel() // self.experts
        per_image = 2 * hidden + hidden * self.experts + self.experts * kernel
        return per_image + kernel * lr_size[0] * lr_size[1]


class MaskBranch(nn.Module):
    """ArbSR's spatial gate: conv, pool 2×2, ``depth`` convs at half resolution, bilinear ×2, conv to 1, sigmoid.

    Each conv is followed by the folded BatchNorm (:class:`ChannelAffine`) and, but for the last, a ReLU.
    Odd sizes are padded by replicating the last row/column before pooling and cropped after upsampling.
    """

    def __init__(self, channels: int, mask_channels: int, depth: int) -> None:
        super().__init__()
        self.entry = nn.Conv2d(channels, mask_channels, 3, padding=1)
        self.entry_norm = ChannelAffine(mask_channels)
        self.middle = nn.ModuleList(nn.Conv2d(mask_channels, mask_channels, 3, padding=1) for _ in range(depth))
        self.middle_norms = nn.ModuleList(ChannelAffine(mask_channels) for _ in range(depth))
        self.exit = nn.Conv2d(mask_channels, 1, 3, padding=1)
        self.exit_norm = ChannelAffine(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[-2:]
        y = F.relu(self.entry_norm(self.entry(x)))
        if height % 2 or width % 2:
            y = F.pad(y, (0, width % 2, 0, height % 2), mode="replicate")
        y = F.avg_pool2d(y, 2)
        for conv, norm in zip(self.middle, self.middle_norms):
            y = F.relu(norm(conv(y)))
        y = F.interpolate(y, scale_factor=2, mode="bilinear", align_corners=False)[..., :height, :width]
        return torch.sigmoid(self.exit_norm(self.exit(y)))

    @property
    def reach(self) -> int:
        """LR pixels each side an output reads: ±1 for each full-resolution conv, 2 more for the pool's and
        the upsampling's half-resolution cells, 2 per half-resolution conv (with windows starting even)."""
        return 4 + 2 * len(self.middle)

    def macs(self, lr_size: tuple[int, int]) -> int:
        height, width = lr_size
        mask, channels = self.entry.out_channels, self.entry.in_channels
        half = math.ceil(height / 2) * math.ceil(width / 2)
        return (channels * mask * 9 + mask * 9) * height * width + len(self.middle) * mask * mask * 9 * half


class AdaptionBlock(nn.Module):
    """ArbSR's ``SA_adapt``: ``x + conv_s(x) · mask(x)``."""

    def __init__(self, channels: int, config: ArbSRConfig) -> None:
        super().__init__()
        self.mask = MaskBranch(channels, config.mask_channels, config.mask_depth)
        self.adapt = ScaleAwareConv(channels, config.experts, config.routing_hidden)

    def forward(self, x: torch.Tensor, inverse_scale: torch.Tensor) -> torch.Tensor:
        return x + self.adapt(x, inverse_scale) * self.mask(x)

    @property
    def reach(self) -> int:
        return max(self.mask.reach, 1)

    def macs(self, lr_size: tuple[int, int]) -> int:
        return self.mask.macs(lr_size) + self.adapt.macs(lr_size)


class ScaleAwareUpsampler(nn.Module):
    """The parameters of ArbSR's ``SA_upsample`` (the decoding itself is :meth:`ArbSRDecoder.hr_features`)."""

    def __init__(self, channels: int, config: ArbSRConfig) -> None:
        super().__init__()
        compressed = max(1, channels // config.compress_ratio)
        # Embedding of (1/s_w, 1/s_h, relative y, relative x), ArbSR's input order.
        self.embed1 = nn.Linear(4, config.embed_dim)
        self.embed2 = nn.Linear(config.embed_dim, config.embed_dim)
        self.routing = nn.Linear(config.embed_dim, config.experts)
        #: (dx, dy) in LR pixels, ArbSR's channel order.
        self.offset = nn.Linear(config.embed_dim, 2)
        self.compress = nn.Parameter(expert_bank(config.experts, compressed, channels))
        self.expand = nn.Parameter(expert_bank(config.experts, channels, compressed))


class Prepared(NamedTuple):
    """What decoding an image needs: per LR pixel, the features and each expert's compressed features."""

    #: (B, h + 2p, w + 2p, C + E·C/8) float32, one row per LR pixel (the layout the bilinear gathers read),
    #: with a zero border of p = 2 pixels, so sampling needs no bounds checks (see :meth:`hr_features`).
    table: torch.Tensor
    #: (B, 2): (1/s_h, 1/s_w).
    inverse_scale: torch.Tensor
    #: The zero border's width.
    border: int


@register_decoder(
    "arbsr",
    config=ArbSRConfig,
    tiny={
        "adapt_every": 2,
        "experts": 2,
        "routing_hidden": 8,
        "embed_dim": 16,
        "compress_ratio": 4,
        "mask_channels": 4,
        "mask_depth": 2,
    },
    summary="ArbSR: scale-aware adaption blocks in the backbone, offset + routed-expert upsampler, HR tail conv",
)
class ArbSRDecoder(Decoder):
    """Adaption blocks (run inside the encoder through its stage hook), the scale-aware upsampler, the tail."""

    query_mode = "grid"
    #: The mask branch pools 2×2: tile windows start at even LR coordinates so the pool cells coincide.
    alignment = 2

    def __init__(self, config: ArbSRConfig, encoder: Encoder) -> None:
        super().__init__()
        self.config = config
        if config.adapt_every > encoder.n_stages:
            raise ValueError(
                f"arbsr: adapt_every={config.adapt_every} exceeds the encoder's {encoder.n_stages} stages "
                "(no adaption block would run)"
            )
        self.channels = encoder.out_dim
        self.adapters = nn.ModuleList(
            AdaptionBlock(self.channels, config) for _ in range(encoder.n_stages // config.adapt_every)
        )
        self.upsampler = ScaleAwareUpsampler(self.channels, config)
        self.tail = nn.Conv2d(self.channels, 3, 3, padding=1)

    # -- the backbone adaption -------------------------------------------------------------------

    def encoder_hook(self, scale: torch.Tensor, width: float) -> StageHook | None:
        inverse_scale = 1.0 / scale
        every = self.config.adapt_every

        def adapt(stage: int, features: torch.Tensor) -> torch.Tensor:
            done = stage + 1
            if done % every or done // every > len(self.adapters):
                return features
            return self.adapters[done // every - 1](features, inverse_scale)

        return adapt

    # -- decoding --------------------------------------------------------------------------------

    def prepare(self, features: torch.Tensor, lr: torch.Tensor, width: float, scale: torch.Tensor) -> Prepared:
        """Features plus every expert's compress filter applied per LR pixel (sampling is linear, so
        compressing before sampling is ArbSR's compress-after-sampling)."""
        compress = self.upsampler.compress  # (E, C/8, C)
        compressed = F.conv2d(features, compress.flatten(0, 1)[:, :, None, None].to(features.dtype))
        table = torch.cat((features, compressed), dim=1).float()
        table = F.pad(table, (_BORDER,) * 4).permute(0, 2, 3, 1).contiguous()
        return Prepared(table, (1.0 / scale).float(), _BORDER)

    def hr_features(
        self, prepared: Prepared, ys: torch.Tensor, xs: torch.Tensor, compute_dtype: torch.dtype = torch.float32
    ) -> torch.Tensor:
        """Upsampled features (before the tail) at rows ``ys`` (B, R) × columns ``xs`` (B, W): (B, R, W, C).

        Rows or columns outside the LR extent (|coordinate| >= 1: the halo beyond an image border) are zero,
        as the tail's zero padding makes them in the whole-image pass.
        """
        table, inverse_scale, pad = prepared
        batch, padded_h, padded_w, _ = table.shape
        height, width = padded_h - 2 * pad, padded_w - 2 * pad
        up = self.upsampler
        experts, compressed = up.compress.shape[:2]
        channels = self.channels
        rows, columns = ys.shape[1], xs.shape[1]

        # Per row and column: the LR position in pixel-edge units (pixel k spans [k, k + 1)), in float64 so
        # that a tile and the whole image, whose coordinates differ by whole LR pixels, agree; ArbSR's
        # relative offset inside the LR pixel; the sampling centre (pixel k's centre at k) split into an
        # integer and a float32 fraction, so per-pixel arithmetic stays float32 and exact enough.
        pos_y, pos_x = (ys.double() + 1) * (height / 2), (xs.double() + 1) * (width / 2)
        rel_y = (pos_y - torch.floor(pos_y + _EDGE_EPSILON) - 0.5).float()
        rel_x = (pos_x - torch.floor(pos_x + _EDGE_EPSILON) - 0.5).float()
        whole_y, whole_x = torch.floor(pos_y - 0.5), torch.floor(pos_x - 0.5)
        frac_y, frac_x = (pos_y - 0.5 - whole_y).float(), (pos_x - 0.5 - whole_x).float()

        # Embedding layer 1 on (1/s_w, 1/s_h, rel_y, rel_x) is separable: image, row and column terms.
        w1 = up.embed1.weight.float()
        image_term = up.embed1.bias.float() + inverse_scale[:, 1:2] * w1[:, 0] + inverse_scale[:, 0:1] * w1[:, 1]
        row_term = rel_y[..., None] * w1[:, 2]  # (B, R, D)
        column_term = rel_x[..., None] * w1[:, 3] + image_term[:, None, :]  # (B, W, D)
        hidden = (row_term[:, :, None, :] + column_term[:, None, :, :]).relu_()
        hidden = hidden.reshape(batch * rows * columns, -1).to(compute_dtype)
        hidden = F.relu(F.linear(hidden, up.embed2.weight.to(compute_dtype), up.embed2.bias.to(compute_dtype)))
        routing = F.linear(hidden, up.routing.weight.to(compute_dtype), up.routing.bias.to(compute_dtype))
        routing = torch.sigmoid(routing.float())  # (N, E)
        bound = float(self.config.max_offset)
        offset = F.linear(hidden, up.offset.weight.to(compute_dtype), up.offset.bias.to(compute_dtype)).float()
        offset = offset.clamp(-bound, bound).view(batch, rows, columns, 2)  # (dx, dy)

        # Bilinear sampling at the offset centres, zero outside the LR image (the table's zero border).
        at_y = frac_y[:, :, None] + offset[..., 1]
        at_x = frac_x[:, None, :] + offset[..., 0]
        step_y, step_x = torch.floor(at_y), torch.floor(at_x)
        top = (whole_y.long() + pad)[:, :, None] + step_y.long()
        left = (whole_x.long() + pad)[:, None, :] + step_x.long()
        # A corner outside the image is moved to the table's edge: with a zero border of 2 pixels, all four
        # pixels it reads there are zero, as the true ones (outside the image) are.
        corner = top.clamp_(0, padded_h - 2) * padded_w + left.clamp_(0, padded_w - 2)
        corner += (torch.arange(batch, device=table.device) * (padded_h * padded_w))[:, None, None]
        sampled = bilinear(table.view(-1, table.shape[-1]), corner.view(-1), padded_w, at_y - step_y, at_x - step_x)

        # Expert filters: mix each expert's compressed sample, then expand with every expert at once.
        mixed = (sampled[:, channels:].view(-1, experts, compressed) * routing[:, :, None]).sum(1)  # (N, C/8)
        weighted = (routing[:, :, None] * mixed[:, None, :]).flatten(1)  # (N, E·C/8): expert e's share
        expand = up.expand.permute(1, 0, 2).reshape(channels, experts * compressed)  # (C, E·C/8)
        out = torch.addmm(
            sampled[:, :channels].to(compute_dtype), weighted.to(compute_dtype), expand.t().to(compute_dtype)
        )

        inside = ((ys > -1) & (ys < 1))[:, :, None] & ((xs > -1) & (xs < 1))[:, None, :]
        return out.float().view(batch, rows, columns, channels).mul_(inside[..., None])

    def tail_rgb(self, features: torch.Tensor, compute_dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """The tail 3×3 convolution on HR features (B, R, W, C) that carry their one-pixel halo:
        (B, 3, R - 2, W - 2) in [0, 1]."""
        weight, bias = self.tail.weight.to(compute_dtype), self.tail.bias.to(compute_dtype)
        return F.conv2d(features.permute(0, 3, 1, 2).to(compute_dtype), weight, bias).float() * 0.5 + 0.5

    def render(
        self, prepared: Prepared, ys: torch.Tensor, xs: torch.Tensor, cell: torch.Tensor, width: float
    ) -> torch.Tensor:
        ys_halo, xs_halo = with_halo(ys, cell[:, 0]), with_halo(xs, cell[:, 1])
        return self.tail_rgb(self.hr_features(prepared, ys_halo, xs_halo))

    def grid_decoder(
        self,
        prepared: Prepared,
        ys: torch.Tensor,
        xs: torch.Tensor,
        cell: torch.Tensor,
        width: float,
        compute_dtype: torch.dtype = torch.float32,
    ) -> GridDecoding:
        return ArbSRGridDecoding(self, prepared, ys, xs, cell, compute_dtype)

    # -- what the part declares ------------------------------------------------------------------

    def macs(self, lr_size: tuple[int, int], out_size: tuple[int, int], width: float) -> int:
        """MACs as the grid decoder runs them (rows decoded in order).

        Adaption blocks: their convolutions per LR pixel, routing and kernel mixing per image. Upsampler:
        the E compress filters per LR pixel; per HR feature position, the embedding's second layer, the
        routing and offset heads and the expand product; the HR features cover the output plus a one-pixel
        halo ((H + 2)·(W + 2) positions, the halo zeroed beyond an image border); the tail per output
        pixel. Not counted: the separable first embedding layer, sampling, the expert mix, activations.
        """
        height, width_px = lr_size
        out_h, out_w = out_size
        up = self.upsampler
        experts, compressed = up.compress.shape[:2]
        embed = up.embed2.in_features
        total = sum(block.macs(lr_size) for block in self.adapters)
        total += experts * compressed * self.channels * height * width_px
        per_position = embed * embed + embed * experts + embed * 2 + self.channels * experts * compressed
        total += per_position * (out_h + 2) * (out_w + 2)
        return total + self.channels * 9 * 3 * out_h * out_w

    @property
    def receptive_radius(self) -> int:
        """Each adaption block adds its mask's reach (4 + 2·mask_depth); the upsampler reads bilinear
        neighbours of positions up to max_offset + 1 LR pixels past its LR pixel's edges (the tail's
        neighbouring output rows sit at most one LR pixel away for scales >= 1): ceil(max_offset + 1.5)."""
        adapters = sum(block.reach for block in self.adapters)
        return adapters + math.ceil(self.config.max_offset + 1.5)


def with_halo(coords: torch.Tensor, spacing: torch.Tensor) -> torch.Tensor:
    """(B, n) coordinates with one more on each side, ``spacing`` (B,) apart: (B, n + 2)."""
    step = spacing[:, None].to(coords.dtype)
    return torch.cat((coords[:, :1] - step, coords, coords[:, -1:] + step), dim=1)


def bilinear(
    rows: torch.Tensor, corner: torch.Tensor, row_length: int, weight_y: torch.Tensor, weight_x: torch.Tensor
) -> torch.Tensor:
    """Bilinear interpolation from a flat table of pixel rows (n, K): ``corner`` (N,) is each sample's top-left
    pixel, ``weight_y``/``weight_x`` (any shape of N elements) its distance past it. (N, K); differentiable in
    the table and in the weights."""
    index = torch.stack((corner, corner + 1, corner + row_length, corner + row_length + 1))
    corners = rows.index_select(0, index.view(-1)).view(4, corner.shape[0], rows.shape[1])
    below, right = weight_y.reshape(-1, 1), weight_x.reshape(-1, 1)
    above, left = 1 - below, 1 - right
    return (
        corners[0] * (above * left)
        + corners[1] * (above * right)
        + corners[2] * (below * left)
        + corners[3] * (below * right)
    )


class ArbSRGridDecoding:
    """Chunked inference on an output grid: HR feature rows (with their column halo) are made once, kept
    while a later chunk may need them as a halo row, and the tail runs on each chunk's rows.

    Memory is bounded by the chunk plus three rows of features. Decoding chunks in row-major order (as
    every caller does) computes each HR row once, which is what :meth:`ArbSRDecoder.macs` counts; any
    other order gives the same result with recomputed rows.
    """

    def __init__(
        self,
        decoder: ArbSRDecoder,
        prepared: Prepared,
        ys: torch.Tensor,
        xs: torch.Tensor,
        cell: torch.Tensor,
        compute_dtype: torch.dtype = torch.float32,
    ) -> None:
        self.decoder = decoder
        self.prepared = prepared
        self.compute_dtype = compute_dtype
        batch = prepared.table.shape[0]
        device = prepared.table.device
        ys = per_image(ys.to(device, torch.float32), batch, "ys")
        xs = per_image(xs.to(device, torch.float32), batch, "xs")
        cell = per_image(cell.to(device, torch.float32), batch, "cell")
        self.batch = batch
        self.out_width = xs.shape[1]
        self.queries = ys.shape[1] * self.out_width
        #: Row and column coordinates with the one-pixel halo: row r of the grid is halo row r + 1.
        self.ys_halo = with_halo(ys, cell[:, 0])
        self.xs_halo = with_halo(xs, cell[:, 1])
        #: Halo row index → its HR features (B, W + 2, C).
        self._rows: dict[int, torch.Tensor] = {}

    def decode(self, start: int, stop: int, out: torch.Tensor | None = None) -> torch.Tensor:
        if not 0 <= start < stop <= self.queries:
            raise ValueError(f"query range must lie within [0, {self.queries}], got {start}:{stop}")
        width = self.out_width
        first, last = start // width, (stop - 1) // width
        self._ensure_rows(first, last + 2)
        if out is None:
            out = torch.empty(self.batch, 3, stop - start, dtype=torch.float32, device=self.ys_halo.device)
        filled = 0
        for row_start, row_stop, column_start, column_stop in row_segments(start, stop, width):
            block = torch.stack([self._rows[row] for row in range(row_start, row_stop + 2)], dim=1)
            rgb = self.decoder.tail_rgb(block[:, :, column_start : column_stop + 2], self.compute_dtype)
            count = (row_stop - row_start) * (column_stop - column_start)
            out[:, :, filled : filled + count] = rgb.flatten(2)
            filled += count
        return out

    def _ensure_rows(self, first: int, last: int) -> None:
        """Have halo rows ``first..last`` (inclusive) computed; forget rows before ``first``."""
        for row in [row for row in self._rows if row < first]:
            del self._rows[row]
        missing = [row for row in range(first, last + 1) if row not in self._rows]
        if not missing:
            return
        index = torch.tensor(missing, device=self.ys_halo.device)
        features = self.decoder.hr_features(
            self.prepared, self.ys_halo[:, index], self.xs_halo, self.compute_dtype
        )  # (B, len(missing), W + 2, C)
        for position, row in enumerate(missing):
            self._rows[row] = features[:, position]
