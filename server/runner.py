"""A model on one device: runs batches of tile jobs and warms every width up.

Called only from the batcher's inference thread (and once from the lifespan for warm-up), under
``torch.inference_mode``. The model does the work through its own inference API
(:meth:`models.anysr.AnySR.grid_decoding`), the same one ``anysr upscale`` and evaluation use, so
nothing here knows the architecture. The precision is resolved once, at construction
(:func:`models.precision.choose_precision`: by default bf16 on CUDA and on CPUs where a start-up probe
finds native bf16 faster and close to fp32, else fp32). On CPU: channels_last weights and inputs (3×3
convolutions run ~1.7× faster). On CUDA: pinned host buffers and non-blocking copies. The model keeps
no per-call state, so nothing here locks.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass

import torch

from models.anysr import DEFAULT_BLOCK_QUERIES, AnySR
from models.devices import resolve_device
from models.geometry import output_side
from models.precision import choose_precision
from models.spec import ModelSpec
from server.jobs import BatchKey, TileJob
from server.tiling import Tile, crop_window, plan_tiles, tile_query

logger = logging.getLogger("anysr.server.runner")


@dataclass(frozen=True)
class RunnerConfig:
    """How to run the model (built from settings by the app)."""

    #: ``auto`` (CUDA when available, else CPU), ``cpu``, ``cuda`` or ``cuda:N``.
    device: str = "cpu"
    #: ``auto`` (bf16 on CUDA; on CPU bf16 where a start-up probe shows it faster and close to fp32, else
    #: fp32: :func:`models.precision.choose_precision`), ``fp32``, ``bf16`` or ``fp16`` (CUDA only).
    precision: str = "fp32"
    #: Queries decoded per step across the whole batch; bounds decoder memory whatever the tile size.
    query_chunk: int = 65536
    #: torch intra-op threads (process-wide); None leaves torch's default.
    torch_threads: int | None = None


class ModelRunner:
    """Owns the model on its device. ``run_batch`` is the batcher's ``RunBatch``."""

    def __init__(self, model: AnySR, config: RunnerConfig) -> None:
        if config.query_chunk < 1:
            raise ValueError(f"query_chunk must be >= 1, got {config.query_chunk}")
        self.device = resolve_device(config.device)
        self.config = config
        self._configured_threads = threading.local()
        self._apply_thread_count()
        self._channels_last = self.device.type == "cpu"
        memory_format = torch.channels_last if self._channels_last else torch.contiguous_format
        self.model = model.eval().to(device=self.device, memory_format=memory_format)
        choice = choose_precision(self.model, self.device, config.precision)
        #: The precision the model runs in, and why (logged and shown in /v1/model).
        self.precision = choice.precision
        self.precision_reason = choice.reason
        self.precision_probe = choice.probe
        self.compute_dtype = choice.dtype

    @property
    def spec(self) -> ModelSpec:
        return self.model.spec

    def _apply_thread_count(self) -> None:
        """Apply ``torch_threads`` in the calling thread once (OpenMP keeps the setting per thread)."""
        if self.config.torch_threads is not None and not getattr(self._configured_threads, "done", False):
            torch.set_num_threads(self.config.torch_threads)
            self._configured_threads.done = True

    def _to_device(self, tensor: torch.Tensor) -> torch.Tensor:
        if self.device.type == "cuda":
            return tensor.pin_memory().to(self.device, non_blocking=True)
        return tensor

    def _decode(self, jobs: list[TileJob], quantise: bool) -> torch.Tensor:
        """Encode the batch once, then decode its queries ``query_chunk`` at a time: (B, Th·Tw, 3) on CPU.

        Query coordinates are built per chunk and each chunk's colours are written straight into the
        output buffer (uint8 when ``quantise``), so memory beyond the output itself is bounded by the
        chunk, whatever the output tile size (it grows with the scale).
        """
        self._apply_thread_count()
        key = jobs[0].key
        if any(job.key != key for job in jobs):
            raise ValueError(f"a batch must share one key, got {sorted({job.key for job in jobs})}")
        batch = len(jobs)
        out_h, out_w = key.out_shape
        queries = out_h * out_w
        lr = self._to_device(torch.stack([job.lr for job in jobs]))
        if self._channels_last:
            lr = lr.contiguous(memory_format=torch.channels_last)
        scale = self._to_device(torch.tensor([job.scale for job in jobs], dtype=torch.float32))
        cell = self._to_device(torch.tensor([job.cell for job in jobs], dtype=torch.float32))
        ys = self._to_device(torch.stack([job.coord_y for job in jobs]))
        xs = self._to_device(torch.stack([job.coord_x for job in jobs]))
        out = torch.empty((batch, queries, 3), dtype=torch.uint8 if quantise else torch.float32, device=self.device)
        # Decode in cache-sized blocks (as AnySR.upscale does): the decoder's scratch activations for a
        # block of DEFAULT_BLOCK_QUERIES rows fit a CPU's last-level cache, where 65,536 rows did not
        # (the served path ran ~16% behind the model's own in bf16). query_chunk still caps the block.
        step = max(1, min(self.config.query_chunk, DEFAULT_BLOCK_QUERIES) // batch)
        with torch.inference_mode():
            # A tile's queries form a grid: the model's grid decoding runs exactly the MACs that
            # models.flops counts (and the FLOPs header reports).
            grid = self.model.grid_decoding(lr, key.width, scale, ys, xs, cell, compute_dtype=self.compute_dtype)
            for start in range(0, queries, step):
                stop = min(start + step, queries)
                rgb = grid.decode(start, stop).transpose(1, 2)
                if quantise:
                    rgb = rgb.clamp_(0, 1).mul_(255).round_()
                out[:, start:stop] = rgb
        return out.cpu()

    def infer(self, jobs: list[TileJob]) -> torch.Tensor:
        """Run jobs that share a :class:`BatchKey`: (B, 3, Th, Tw) float32 on CPU, unclamped, [0, 1] units."""
        out_h, out_w = jobs[0].key.out_shape
        rgb = self._decode(jobs, quantise=False)
        return rgb.reshape(len(jobs), out_h, out_w, 3).permute(0, 3, 1, 2)

    def run_batch(self, jobs: list[TileJob]) -> list[torch.Tensor]:
        """Run a batch: one (Th, Tw, 3) tensor per job, in order (the batcher's RunBatch), quantised to uint8,
        or float32 in [0, 1] units, unclamped, for an ``exact`` key (16-bit or colour-converted images)."""
        out_h, out_w = jobs[0].key.out_shape
        pixels = self._decode(jobs, quantise=not jobs[0].key.exact)
        return list(pixels.reshape(len(jobs), out_h, out_w, 3).unbind(0))

    def warm_up(self, widths: tuple[float, ...], lr_size: int, scale: float = 2.0) -> dict[float, float]:
        """Run every width once untimed and once timed on a random ``lr_size``² image; FLOP/s per width.

        The first run of each width pays one-off costs (allocations, kernel selection), so only the
        second is timed; the result seeds the throughput estimate the deadline scheduler uses.
        """
        generator = torch.Generator().manual_seed(0)
        lr = torch.rand(3, lr_size, lr_size, generator=generator)
        out = output_side(lr_size, scale)
        plan = plan_tiles((lr_size, lr_size), (out, out), tile_size=lr_size, halo=0)
        tile = Tile(0, 0, 0, 0)
        ys, xs, cell = tile_query(plan, tile)
        rates = {}
        for width in widths:
            flops = plan.flops(self.model, width)
            seconds = 0.0
            for _ in range(2):
                job = TileJob(
                    key=BatchKey(width, plan.lr_tile_shape, plan.out_tile_shape),
                    lr=crop_window(lr, plan, tile),
                    coord_y=ys,
                    coord_x=xs,
                    cell=cell,
                    scale=(out / lr_size, out / lr_size),
                    flops=flops,
                )
                started = time.perf_counter()
                self.run_batch([job])
                seconds = time.perf_counter() - started
            rates[width] = flops / max(seconds, 1e-9)
            logger.info("warm-up width %.1f: %.2f GFLOP/s (%.1f ms)", width, rates[width] / 1e9, seconds * 1e3)
        return rates
