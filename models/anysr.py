"""The shared-weight AnySR model: a registered encoder and decoder, runnable at any of the encoder's widths.

Images are float tensors in [0, 1], (B, 3, h, w). The model picks no device and keeps no per-call
state on the module, so one instance can serve concurrent callers. Everything architecture-specific is
asked of the parts (:mod:`models.parts`); this module only composes them and owns the inference loop
every caller shares: the server's runner, ``anysr upscale``, evaluation and the benchmarks all go
through :meth:`AnySR.grid_decoding` (or :meth:`AnySR.upscale`, which loops over it).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from models.coords import make_cell, make_coord
from models.parts import Decoder, Encoder, GridDecoding, Prepared, QueryMode, Regions, per_image, prefixed
from models.registry import entry, resolve_spec
from models.spec import ModelSpec
from models.widths import check_width, width_for_scale

ScaleLike = tuple[float, float] | torch.Tensor
COMPUTE_DTYPES = (torch.float32, torch.bfloat16, torch.float16)

#: Queries (over the batch) :meth:`AnySR.upscale` decodes at once: at 256 hidden units two fp32 scratch
#: activations of this many rows take 8 MiB, small enough to stay in a CPU's last-level cache.
DEFAULT_BLOCK_QUERIES = 4096


def scale_tensor(scale: ScaleLike, batch: int, device: torch.device) -> torch.Tensor:
    """(B, 2) tensor of (s_h, s_w) from a pair (shared by the batch) or an existing (B, 2) tensor."""
    if isinstance(scale, torch.Tensor):
        if scale.shape != (batch, 2):
            raise ValueError(f"scale tensor must have shape ({batch}, 2), got {tuple(scale.shape)}")
        return scale.to(device=device, dtype=torch.float32)
    return torch.tensor([list(scale)], dtype=torch.float32, device=device).expand(batch, 2)


class AnySR(nn.Module):
    """One set of weights, several subnets. ``width`` selects the prefix every sliced layer uses."""

    encoder: Encoder
    decoder: Decoder

    def __init__(self, spec: ModelSpec) -> None:
        super().__init__()
        spec = resolve_spec(spec)
        #: The resolved spec (every argument filled in): what a checkpoint of this model records.
        self.spec = spec
        encoder_entry = entry("encoder", spec.encoder.name)
        decoder_entry = entry("decoder", spec.decoder.name)
        self.encoder = encoder_entry.cls(encoder_entry.make_config(spec.encoder.args))
        self.decoder = decoder_entry.cls(decoder_entry.make_config(spec.decoder.args), self.encoder)

    # -- what the model is -------------------------------------------------------------------------

    @property
    def widths(self) -> tuple[float, ...]:
        """The widths this model runs at, narrowest first (the encoder's; the last is 1.0)."""
        return self.encoder.widths

    def check_width(self, width: float) -> float:
        """``width`` as one of :attr:`widths`, or ``ValueError`` naming them."""
        return check_width(width, self.widths)

    def width_for_scale(self, scale_h: float, scale_w: float | None = None) -> float:
        """The scale-group width (the paper's †) for a scale, from this model's widths."""
        return width_for_scale(scale_h, scale_w, self.widths)

    @property
    def receptive_radius(self) -> int:
        """LR pixels each side of its LR cell an output pixel depends on: the halo exact tiling needs."""
        return self.encoder.receptive_radius + self.decoder.receptive_radius

    @property
    def alignment(self) -> int:
        """Tile windows must start at multiples of this for tiles to equal the whole image."""
        return math.lcm(self.encoder.alignment, self.decoder.alignment)

    @property
    def is_global(self) -> bool:
        """True when an output pixel depends on the whole image (then it is not tiled)."""
        return self.decoder.is_global

    @property
    def query_mode(self) -> QueryMode:
        """How the decoder trains: on sampled ``points`` or on whole ``grid`` crops."""
        return self.decoder.query_mode

    def used_regions(self, width: float) -> Regions:
        """Regions of the sliced parameters a forward pass at ``width`` reads, by state-dict name."""
        width = self.check_width(width)
        return {
            **prefixed("encoder", self.encoder.used_regions(width)),
            **prefixed("decoder", self.decoder.used_regions(width)),
        }

    # -- the passes ------------------------------------------------------------------------------

    def prepare(self, lr: torch.Tensor, width: float, scale: ScaleLike) -> Prepared:
        """Encode ``lr`` and do the decoder's per-LR-pixel work: what every decode starts from."""
        width = self.check_width(width)
        scales = scale_tensor(scale, lr.shape[0], lr.device)
        features = self.encoder(lr, width, scales, self.decoder.encoder_hook(scales, width))
        return self.decoder.prepare(features, lr, width, scales)

    def query(self, prepared: Prepared, coord: torch.Tensor, cell: torch.Tensor, width: float) -> torch.Tensor:
        """RGB in [0, 1] units (not clamped) at ``coord`` (B, Q, 2) with ``cell`` (B, Q, 2): (B, Q, 3)."""
        return self.decoder.query(prepared, coord, cell, self.check_width(width))

    def forward(
        self,
        lr: torch.Tensor,
        coord: torch.Tensor,
        cell: torch.Tensor,
        width: float,
        scale: ScaleLike,
        grid: tuple[int, int] | None = None,
    ) -> torch.Tensor:
        """Training path: queries of one batch at one width; returns (B, Q, 3) in [0, 1] units.

        ``grid`` = (H, W) says the queries are a whole row-major H × W grid, which is what a ``grid``
        decoder needs (:attr:`query_mode`); a ``points`` decoder takes any queries.
        """
        prepared = self.prepare(lr, width, scale)
        if self.query_mode == "points":
            return self.query(prepared, coord, cell, width)
        if grid is None:
            raise ValueError(f"the {self.spec.decoder.name} decoder decodes whole grids: pass grid=(H, W)")
        batch = lr.shape[0]
        points = coord.view(batch, grid[0], grid[1], 2)
        ys, xs = points[:, :, 0, 0], points[:, 0, :, 1]
        rgb = self.decoder.render(prepared, ys, xs, cell[:, 0], self.check_width(width))
        return rgb.flatten(2).transpose(1, 2)

    def grid_decoding(
        self,
        lr: torch.Tensor,
        width: float,
        scale: ScaleLike,
        ys: torch.Tensor,
        xs: torch.Tensor,
        cell: torch.Tensor,
        *,
        compute_dtype: torch.dtype = torch.float32,
    ) -> GridDecoding:
        """Inference on an output grid: encode ``lr`` once, return a decoder of its queries, chunk by chunk.

        ``ys`` (B, H) or (H,) and ``xs`` (B, W) or (W,) are the output rows' and columns' coordinates,
        ``cell`` (B, 2) or (2,) the output pixel size (see :mod:`models.parts`). ``compute_dtype`` bf16 or
        fp16 runs the encoder under autocast and lets the decoder run its products in that dtype (fast on
        GPUs and CPUs with bf16 units, slow on plain AVX2 CPUs). Call under ``torch.inference_mode``.
        """
        if compute_dtype not in COMPUTE_DTYPES:
            raise ValueError(f"compute_dtype must be one of {COMPUTE_DTYPES}, got {compute_dtype}")
        width = self.check_width(width)
        batch = lr.shape[0]
        ys = per_image(ys.to(lr.device, torch.float32), batch, "ys")
        xs = per_image(xs.to(lr.device, torch.float32), batch, "xs")
        cell = per_image(cell.to(lr.device, torch.float32), batch, "cell")
        use_autocast = compute_dtype != torch.float32
        with torch.autocast(device_type=lr.device.type, dtype=compute_dtype, enabled=use_autocast):
            prepared = self.prepare(lr, width, scale)
        return self.decoder.grid_decoder(prepared, ys, xs, cell, width, compute_dtype=compute_dtype)

    @torch.inference_mode()
    def upscale(
        self,
        lr: torch.Tensor,
        out_size: tuple[int, int],
        width: float,
        scale: tuple[float, float] | None = None,
        query_chunk: int = 65536,
        progress: Callable[[int, int], None] | None = None,
        *,
        compute_dtype: torch.dtype = torch.float32,
        block_queries: int = DEFAULT_BLOCK_QUERIES,
    ) -> torch.Tensor:
        """Whole-image inference: (B, 3, h, w) → (B, 3, H, W) clamped to [0, 1].

        ``scale`` defaults to (H / h, W / w). Queries run ``query_chunk`` at a time so memory is bounded
        by the chunk, not the output size; ``progress(done, total)`` is called after each chunk.
        ``block_queries`` caps the queries (over the batch) decoded at once inside a chunk, so the scratch
        activations stay cache-sized.
        """
        if query_chunk < 1 or block_queries < 1:
            raise ValueError(f"query_chunk and block_queries must be >= 1, got {query_chunk}, {block_queries}")
        batch, _, height, width_px = lr.shape
        out_h, out_w = out_size
        if out_h < 1 or out_w < 1:
            raise ValueError(f"output size must be at least 1x1, got {out_h}x{out_w}")
        if scale is None:
            scale = (out_h / height, out_w / width_px)
        # channels_last: oneDNN's 3x3 convolutions are much faster in NHWC on CPU, and prepared per-pixel
        # tables then come out as (B, h, w, C) rows, the layout the decoders gather from.
        lr = lr.contiguous(memory_format=torch.channels_last)
        grid = self.grid_decoding(
            lr,
            width,
            scale,
            make_coord(out_h, 1, device=lr.device)[:, 0],
            make_coord(1, out_w, device=lr.device)[:, 1],
            make_cell(out_h, out_w, 1, device=lr.device)[0],
            compute_dtype=compute_dtype,
        )
        total = out_h * out_w
        rgb = torch.empty(batch, 3, total, dtype=torch.float32, device=lr.device)
        block = max(1, min(query_chunk, block_queries // batch))
        for start in range(0, total, query_chunk):
            stop = min(start + query_chunk, total)
            for block_start in range(start, stop, block):
                block_stop = min(block_start + block, stop)
                grid.decode(block_start, block_stop, out=rgb[:, :, block_start:block_stop])
            if progress is not None:
                progress(stop, total)
        return rgb.clamp_(0, 1).view(batch, 3, out_h, out_w)


def build_model(spec: ModelSpec | None = None) -> AnySR:
    """The one constructor every caller uses (trainer, CLI, server)."""
    return AnySR(spec or ModelSpec())
