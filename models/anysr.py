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
from models.spec import ModelSpec
from models.widths import check_width

ScaleLike = tuple[float, float] | torch.Tensor


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
    ) -> torch.Tensor:
        """Whole-image inference: (B, 3, h, w) → (B, 3, H, W) clamped to [0, 1].

        ``scale`` defaults to (H / h, W / w). Queries run ``query_chunk`` at a time so memory is bounded
        by the chunk, not the output size; ``progress(done, total)`` is called after each chunk.
        """
        batch, _, height, width_px = lr.shape
        out_h, out_w = out_size
        if scale is None:
            scale = (out_h / height, out_w / width_px)
        prepared = self.prepare(lr, width, scale)
        coord = make_coord(out_h, out_w, device=lr.device)
        cell = make_cell(out_h, out_w, coord.shape[0], device=lr.device)
        total = coord.shape[0]
        pieces = []
        for start in range(0, total, query_chunk):
            stop = min(start + query_chunk, total)
            chunk_coord = coord[None, start:stop].expand(batch, -1, -1)
            chunk_cell = cell[None, start:stop].expand(batch, -1, -1)
            pieces.append(self.query(prepared, chunk_coord, chunk_cell, width).float())
            if progress is not None:
                progress(stop, total)
        rgb = torch.cat(pieces, dim=1).clamp_(0, 1)
        return rgb.reshape(batch, out_h, out_w, 3).permute(0, 3, 1, 2).contiguous()


def build_model(spec: ModelSpec | None = None) -> AnySR:
    """The one constructor every caller uses (trainer, CLI, server)."""
    return AnySR(spec or ModelSpec())
