"""The shared-weight AnySR model: EDSR-baseline AnySR encoder + LIIF decoder, runnable at any width.

Images are float tensors in [0, 1], (B, 3, h, w). The model picks no device and keeps no per-call
state on the module (unlike LIIF's ``self.feat``), so one instance can serve concurrent callers.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from models.coords import make_cell, make_coord
from models.edsr_anysr import EDSRAnySREncoder
from models.liif import LIIFDecoder
from models.liif_grid import GridDecoder
from models.spec import ModelSpec
from models.widths import check_width

ScaleLike = tuple[float, float] | torch.Tensor

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
    """One set of weights, four subnets. ``width`` selects the prefix every sliced layer uses."""

    def __init__(self, spec: ModelSpec) -> None:
        super().__init__()
        self.spec = spec
        self.encoder = EDSRAnySREncoder(spec)
        self.decoder = LIIFDecoder(spec)

    def prepare(self, lr: torch.Tensor, width: float, scale: ScaleLike) -> torch.Tensor:
        """Encode ``lr`` and apply the decoder's per-LR-pixel projection: (B, h1, h, w)."""
        width = check_width(width)
        scales = scale_tensor(scale, lr.shape[0], lr.device)
        return self.decoder.prepare(self.encoder(lr, width, scales), width)

    def query(self, prepared: torch.Tensor, coord: torch.Tensor, cell: torch.Tensor, width: float) -> torch.Tensor:
        """RGB in [0, 1] units (not clamped) at ``coord`` (B, Q, 2) with ``cell`` (B, Q, 2): (B, Q, 3)."""
        return self.decoder.query(prepared, coord, cell, check_width(width)) * 0.5 + 0.5

    def forward(
        self, lr: torch.Tensor, coord: torch.Tensor, cell: torch.Tensor, width: float, scale: ScaleLike
    ) -> torch.Tensor:
        """Training path: sampled queries of one batch at one width; returns (B, Q, 3)."""
        return self.query(self.prepare(lr, width, scale), coord, cell, width)

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

        Same function as :meth:`query` on the output pixel grid, computed by :class:`GridDecoder` (the grid
        is separable, so the per-query work is mostly the MLP's matrix products). Speed knobs:
        ``block_queries`` caps the queries (over the batch) decoded at once inside a chunk, so the scratch
        activations stay cache-sized; ``compute_dtype=torch.bfloat16`` runs the encoder under autocast and
        the decoder's products in bf16 (fast on GPUs and CPUs with bf16 units, slow on plain AVX2 CPUs).
        """
        if compute_dtype not in (torch.float32, torch.bfloat16):
            raise ValueError(f"compute_dtype must be torch.float32 or torch.bfloat16, got {compute_dtype}")
        if query_chunk < 1 or block_queries < 1:
            raise ValueError(f"query_chunk and block_queries must be >= 1, got {query_chunk}, {block_queries}")
        batch, _, height, width_px = lr.shape
        out_h, out_w = out_size
        if out_h < 1 or out_w < 1:
            raise ValueError(f"output size must be at least 1x1, got {out_h}x{out_w}")
        if scale is None:
            scale = (out_h / height, out_w / width_px)
        # channels_last: oneDNN's 3x3 convolutions are much faster in NHWC on CPU, and the prepared
        # projection then comes out as (B, h, w, h1) rows, the layout the decoder gathers from.
        lr = lr.contiguous(memory_format=torch.channels_last)
        use_autocast = compute_dtype != torch.float32
        with torch.autocast(device_type=lr.device.type, dtype=compute_dtype, enabled=use_autocast):
            prepared = self.prepare(lr, width, scale)
        grid = GridDecoder(
            self.decoder,
            prepared,
            make_coord(out_h, 1, device=lr.device)[:, 0],
            make_coord(1, out_w, device=lr.device)[:, 1],
            make_cell(out_h, out_w, 1, device=lr.device)[0],
            check_width(width),
            compute_dtype=compute_dtype,
        )
        del prepared  # the grid keeps its own (B, h, w, h1) table; free the copy before decoding
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
        # Decoder units ([-1, 1]) to [0, 1], as :meth:`query` does.
        rgb.mul_(0.5).add_(0.5).clamp_(0, 1)
        return rgb.view(batch, 3, out_h, out_w)


def build_model(spec: ModelSpec | None = None) -> AnySR:
    """The one constructor every caller uses (trainer, CLI, server)."""
    return AnySR(spec or ModelSpec())
