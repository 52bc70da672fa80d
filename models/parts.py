"""The contract between :class:`models.anysr.AnySR` and its parts, so nothing outside a part names it.

An AnySR model is a backbone (:class:`Encoder`) that runs at any of its widths and an arbitrary-scale
upsampler (:class:`Decoder`). Everything the rest of the project needs to know about a part it asks the
part: the FLOPs model (:meth:`Encoder.macs`, :meth:`Decoder.macs`), training's prefix restore
(:meth:`~Encoder.used_regions`), the tile planner (:attr:`~Encoder.receptive_radius`,
:attr:`~Encoder.alignment`, :attr:`Decoder.is_global`), the server's runner (:meth:`Decoder.grid_decoder`)
and ``anysr info``. A wrong answer is caught by the registry-driven tests (tests/models/test_zoo.py),
which hold every registered combination to the measured FLOPs, to whole-image inference when tiled,
and to the gradients of a narrow-width step.

Conventions every part follows:

- Images are float tensors in [0, 1], (B, 3, h, w); a decoder returns RGB in [0, 1] (not clamped).
- ``scale`` is a (B, 2) float tensor of (s_h, s_w), the scale the model is conditioned on.
- Output coordinates are LIIF's: (y, x) in [-1, 1] over the LR image's extent, pixel centres at
  -1 + (2i + 1)/n; ``cell`` is the output pixel's size in the same units.
- A part keeps no per-call state on the module (unlike LIIF's ``self.feat``), so one instance can serve
  concurrent callers, and never picks a device.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar, Literal, Protocol

import torch
from torch import nn

from models.registry import PartConfig
from models.widths import check_width

#: One rectangular region of a parameter tensor, e.g. ``(slice(0, 44), slice(None))``.
Box = tuple[slice, ...]
#: Parameter name → the boxes of it a width reads (disjoint). Parameters not listed are read whole.
Regions = dict[str, tuple[Box, ...]]
#: Called by an encoder after each of its stages with (stage index, features); returns the features to go on
#: with. How a decoder that also adapts the backbone (ArbSR's scale-aware adaption) plugs in.
StageHook = Callable[[int, torch.Tensor], torch.Tensor]
#: What a decoder's ``prepare`` returns: whatever its decoding needs (a tensor for LIIF, a tuple for SRNO).
Prepared = Any
QueryMode = Literal["points", "grid"]


def prefixed(prefix: str, regions: Regions) -> Regions:
    """``regions`` with ``prefix.`` in front of every name (a part's regions as the model names them)."""
    return {f"{prefix}.{name}": boxes for name, boxes in regions.items()}


class GridDecoding(Protocol):
    """A prepared decode of one output grid (row-major), run in chunks so memory is bounded by the chunk."""

    #: Queries per image (H · W).
    queries: int

    def decode(self, start: int, stop: int, out: torch.Tensor | None = None) -> torch.Tensor:
        """RGB in [0, 1] (not clamped) of flat queries ``start:stop`` of every image: (B, 3, n) float32.

        ``out`` (B, 3, n) float32, if given, receives the result and is returned.
        """
        ...


class Encoder(nn.Module):
    """A backbone that extracts LR features at any of its widths; features keep ``out_dim`` channels at
    every width, so any decoder plugs in unchanged."""

    config: PartConfig
    #: Channels of the features (and at every stage hook).
    out_dim: int
    #: Widths this backbone runs at, narrowest first, ending at 1.0.
    widths: tuple[float, ...]
    #: Number of stage hooks (one after each block), for decoders that adapt the backbone.
    n_stages: int
    #: Window starts of a tiled run must be multiples of this (2 for an encoder that pools 2×2).
    alignment: ClassVar[int] = 1

    def forward(
        self, lr: torch.Tensor, width: float, scale: torch.Tensor, hook: StageHook | None = None
    ) -> torch.Tensor:  # pragma: no cover - every encoder overrides it
        """Features (B, out_dim, h, w) of ``lr`` (B, 3, h, w) in [0, 1] at ``width``."""
        raise NotImplementedError

    def macs(self, lr_size: tuple[int, int], width: float) -> int:  # pragma: no cover - overridden
        """Multiply-accumulates of every convolution and matrix product one image of ``lr_size`` runs."""
        raise NotImplementedError

    @property
    def receptive_radius(self) -> int:  # pragma: no cover - overridden
        """LR pixels each side a feature depends on (a stack of n 3×3 convolutions reaches n)."""
        raise NotImplementedError

    def used_regions(self, width: float) -> Regions:  # pragma: no cover - overridden
        """The parts of each sliced parameter a forward pass at ``width`` reads (names relative to the part)."""
        raise NotImplementedError

    def check_width(self, width: float) -> float:
        return check_width(width, self.widths)


class Decoder(nn.Module):
    """An arbitrary-scale upsampler: decodes RGB at any output coordinates from the encoder's features.

    Decoders are built as ``cls(config, encoder)``, so they size themselves from ``encoder.out_dim`` (and
    may hook ``encoder.n_stages``). The width reaches the decoder too: a decoder with a hidden size to
    slice (the "slim" option) runs the same width prefix the encoder does.
    """

    config: PartConfig
    #: ``points``: decodes any set of coordinates, so it trains on sampled queries (LIIF's way); ``grid``:
    #: needs a whole output grid (SRNO's attention integrates over it), so it trains on whole HR crops.
    query_mode: ClassVar[QueryMode] = "points"
    #: True when an output pixel depends on the whole image, not a neighbourhood: the server then runs the
    #: image whole (up to a pixel limit) instead of in tiles.
    is_global: ClassVar[bool] = False
    #: As :attr:`Encoder.alignment`, for decoders that change the backbone through a stage hook.
    alignment: ClassVar[int] = 1

    def prepare(
        self, features: torch.Tensor, lr: torch.Tensor, width: float, scale: torch.Tensor
    ) -> Prepared:  # pragma: no cover - overridden
        """The per-LR-pixel work, done once per image before any query is decoded."""
        raise NotImplementedError

    def query(
        self, prepared: Prepared, coord: torch.Tensor, cell: torch.Tensor, width: float
    ) -> torch.Tensor:  # pragma: no cover - points decoders override it
        """RGB in [0, 1] at ``coord`` (B, Q, 2) with ``cell`` (B, Q, 2): (B, Q, 3). Differentiable."""
        raise NotImplementedError(f"{type(self).__name__} decodes whole grids only (query_mode 'grid')")

    def render(
        self, prepared: Prepared, ys: torch.Tensor, xs: torch.Tensor, cell: torch.Tensor, width: float
    ) -> torch.Tensor:
        """The whole output grid, differentiably: rows ``ys`` (B, H), columns ``xs`` (B, W), ``cell`` (B, 2)
        → (B, 3, H, W). Grid decoders train through this; the default asks :meth:`query`."""
        batch, height, width_px = ys.shape[0], ys.shape[1], xs.shape[1]
        coord = torch.stack(
            (ys[:, :, None].expand(batch, height, width_px), xs[:, None, :].expand(batch, height, width_px)), dim=-1
        ).reshape(batch, height * width_px, 2)
        cells = cell[:, None, :].expand(batch, height * width_px, 2)
        rgb = self.query(prepared, coord, cells, width)
        return rgb.transpose(1, 2).reshape(batch, 3, height, width_px)

    def grid_decoder(
        self,
        prepared: Prepared,
        ys: torch.Tensor,
        xs: torch.Tensor,
        cell: torch.Tensor,
        width: float,
        compute_dtype: torch.dtype = torch.float32,
    ) -> GridDecoding:
        """Inference on an output grid, chunk by chunk. The default runs :meth:`query` on each chunk's
        coordinates; decoders override it with a faster path that computes the same function."""
        return QueryGridDecoding(self, prepared, ys, xs, cell, width)

    def macs(self, lr_size: tuple[int, int], out_size: tuple[int, int], width: float) -> int:  # pragma: no cover
        """Multiply-accumulates of decoding one image of ``lr_size`` to ``out_size`` as
        :meth:`grid_decoder` runs it (plus any stage hook's work in the backbone)."""
        raise NotImplementedError

    @property
    def receptive_radius(self) -> int:  # pragma: no cover - overridden
        """LR pixels each side of its LR cell an output pixel reads from the features (and, for a stage
        hook, the extra radius the hook adds to the backbone)."""
        raise NotImplementedError

    def used_regions(self, width: float) -> Regions:
        """As :meth:`Encoder.used_regions`; a decoder that slices nothing reads every parameter whole."""
        return {}

    def encoder_hook(self, scale: torch.Tensor, width: float) -> StageHook | None:
        """A hook the encoder calls after each stage, or None (the default: the backbone is left alone)."""
        return None


class QueryGridDecoding:
    """:class:`GridDecoding` for any points decoder: each chunk's coordinates built and queried."""

    def __init__(
        self,
        decoder: Decoder,
        prepared: Prepared,
        ys: torch.Tensor,
        xs: torch.Tensor,
        cell: torch.Tensor,
        width: float,
    ) -> None:
        self.decoder = decoder
        self.prepared = prepared
        self.ys, self.xs, self.cell = ys, xs, cell
        self.width = width
        self.batch = ys.shape[0]
        self.out_width = xs.shape[1]
        self.queries = ys.shape[1] * self.out_width

    def decode(self, start: int, stop: int, out: torch.Tensor | None = None) -> torch.Tensor:
        if not 0 <= start < stop <= self.queries:
            raise ValueError(f"query range must lie within [0, {self.queries}], got {start}:{stop}")
        positions = torch.arange(start, stop, device=self.ys.device)
        rows, columns = positions // self.out_width, positions % self.out_width
        coord = torch.stack((self.ys[:, rows], self.xs[:, columns]), dim=-1)
        cells = self.cell[:, None, :].expand(self.batch, stop - start, 2)
        rgb = self.decoder.query(self.prepared, coord, cells, self.width).transpose(1, 2).float()
        if out is None:
            return rgb.contiguous()
        out.copy_(rgb)
        return out


def per_image(values: torch.Tensor, batch: int, name: str) -> torch.Tensor:
    """(n,) shared by the batch → (B, n); (B, n) passes through; anything else is an error naming ``name``."""
    if values.dim() == 1:
        return values[None].expand(batch, -1)
    if values.dim() == 2 and values.shape[0] == batch:
        return values
    raise ValueError(f"{name} must have shape (n,) or ({batch}, n), got {tuple(values.shape)}")
