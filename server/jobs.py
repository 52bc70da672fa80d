"""The unit of work the batcher queues and the runner executes: one tile of one request.

A *job* is one tile (a small image is one whole-image tile); a *batch* is jobs run together. Only
jobs with the same :class:`BatchKey` can share a batch, because their tensors must stack. The scale
is not part of the key: the model takes a per-sample scale, so tiles of different scales with the
same shapes batch together.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import NamedTuple

import torch


class BatchKey(NamedTuple):
    """What must match for jobs to stack: the subnet width, the LR window and output tile shapes, and
    whether the output stays float (``exact``: 16-bit or colour-converted images) or is 8-bit."""

    width: float
    lr_shape: tuple[int, int]
    out_shape: tuple[int, int]
    exact: bool = False


@dataclass(frozen=True)
class TileResult:
    """One job's output and the batch it ran in (for the request's Server-Timing)."""

    #: (Th, Tw, 3) pixels (uint8, or float32 for exact keys), or None when written into the job's ``out`` view.
    pixels: torch.Tensor | None
    #: Identifies the batch, so a request counts a shared batch's compute time once.
    batch_id: int
    #: ``time.perf_counter()`` when the batch started and its duration in seconds.
    batch_started_s: float
    batch_compute_s: float


@dataclass(eq=False)
class TileJob:
    """One tile to run: its LR window, where to query, its cost, and the future its result goes to."""

    key: BatchKey
    #: LR window (3, Lh, Lw), float32 in [0, 1] (usually a view into the request's image).
    lr: torch.Tensor
    #: Query coordinates of the output rows (Th,) and columns (Tw,) in the window's [-1, 1] frame.
    coord_y: torch.Tensor
    coord_x: torch.Tensor
    #: Output pixel size (cy, cx) in the window's [-1, 1] units.
    cell: tuple[float, float]
    #: The request's scale (s_h, s_w), which the model's ASE blocks take as input.
    scale: tuple[float, float]
    #: FLOPs this tile runs (from models.flops).
    flops: int
    #: Where the result goes; None for jobs run directly (warm-up), which nobody can abandon.
    future: asyncio.Future[TileResult] | None = None
    #: (Th, Tw, 3) uint8 view of the request's output image: the batcher writes the tile's pixels there
    #: as soon as its batch finishes, so a request never holds its tiles and its image at once.
    out: torch.Tensor | None = None
    #: Request this tile belongs to (for logs).
    request_id: str = ""
    #: ``time.perf_counter()`` when queued; set by the batcher.
    submitted_s: float = 0.0
    started_s: float | None = field(default=None)
    #: Start tag (predicted seconds of virtual time) and arrival number: the queue runs in (tag, seq) order.
    #: Set by the batcher on submit (see ``server/admission.py`` for how tags make the queue fair).
    tag: float = 0.0
    seq: int = 0
    #: Which submit (request) the tile came with, and that request's deadline (``perf_counter`` time).
    request_seq: int = 0
    deadline_at_s: float | None = None

    @property
    def lr_pixels(self) -> int:
        return self.key.lr_shape[0] * self.key.lr_shape[1]

    @property
    def width(self) -> float:
        return self.key.width

    @property
    def abandoned(self) -> bool:
        """True once nobody waits for the result (the request was cancelled, timed out or failed)."""
        return self.future is not None and self.future.done()
