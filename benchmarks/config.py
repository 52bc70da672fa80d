"""The benchmark suite's settings: one frozen dataclass, with the full-size defaults and the ``--quick`` ones.

The parts take this object and read only their own fields; ``suite.py`` builds it from the command
line. Sizes are chosen so the full suite runs in tens of minutes on a 2-core CPU (the reasons are next
to each field); ``--quick`` shrinks every size so a smoke run, and the test, take seconds.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from models.spec import TINY_SPEC, ModelSpec
from models.widths import check_width

REPO = Path(__file__).resolve().parents[1]
PARTS = ("widths", "reference", "batching", "overhead", "memory", "fairness", "precision", "bf16_psnr")
#: Parts run when ``--only`` is not given: all but ``bf16_psnr``, a full Set5 + Set14 evaluation in two
#: precisions (most of an hour on two CPU cores; seconds on a GPU).
DEFAULT_PARTS = tuple(part for part in PARTS if part != "bf16_psnr")
MODEL_PARTS = ("widths", "reference", "batching")
DEFAULT_WEIGHTS = REPO / "weights" / "anysr-edsr-liif.safetensors"
#: ``--model-spec`` choices for the pure-model parts (the server parts serve the weights file's own spec).
MODEL_SPECS = {"product": ModelSpec(), "tiny": TINY_SPEC}
#: ``--dtype`` choices for the batching part: the server runner's precisions.
DTYPES = ("auto", "fp32", "bf16", "fp16")


@dataclass(frozen=True)
class SuiteConfig:
    """Everything the parts need. Sizes are LR (input) pixels per side unless the name says otherwise."""

    out_dir: Path = REPO / "benchmarks" / "results"
    doc_path: Path = REPO / "docs" / "benchmarks.md"
    quick: bool = False
    #: torch intra-op threads for the in-process parts and ``--torch-threads`` for the server (None: torch's).
    threads: int | None = None
    device: str = "cpu"
    #: Precision of the batching part and the overhead and memory servers (the server runner's choices:
    #: ``auto`` resolves as the server does); widths and reference run fp32.
    dtype: str = "auto"
    #: Architecture of the random-weight model parts: the product spec, or TINY_SPEC for tests.
    model_spec: str = "product"
    #: Timed rounds of the model parts; medians are reported.
    repeats: int = 3
    #: Square matrix sizes of the fp32/bf16 peak measured at the start of every run (None: the device's
    #: defaults in benchmarks/peak.py), and the least seconds of products per size.
    peak_sizes: tuple[int, ...] | None = None
    peak_min_seconds: float = 0.3

    # -- widths: 128² keeps the 32 cases (2 modes × 4 scales × 4 widths) near 2-3 minutes on 2 cores.
    widths_lr_size: int = 128
    widths_scales: tuple[float, ...] = (1.5, 2.0, 3.0, 4.0)
    widths_modes: tuple[str, ...] = ("slim", "paper")

    # -- reference: the plain LIIF path is several times slower, so the same small input.
    reference_lr_size: int = 128
    reference_scales: tuple[float, ...] = (2.0, 4.0)

    # -- batching: None = the server's default tile (256) on CUDA, 64 on CPU, where a batch of eight
    #    256-pixel tiles (window 329² with the halo) would take minutes per round.
    batch_tile: int | None = None
    batch_sizes: tuple[int, ...] = (1, 2, 4, 8)
    batch_scale: float = 2.0

    # -- server parts: the shipped weights, random ones only when allowed and the file is missing.
    weights: Path = DEFAULT_WEIGHTS
    allow_untrained: bool = False
    ready_timeout_s: float = 600.0
    overhead_size: int = 256
    overhead_scale: float = 2.0
    overhead_requests: int = 10
    overhead_warmup: int = 2
    memory_size: int = 2048
    memory_scale: float = 4.0
    #: 0.5 on CPU: full width would take over 20 minutes here; memory is bounded by tile and batch size
    #: and the output image, not by width, which changes only the channel count of per-batch buffers.
    memory_width: float = 0.5
    #: RSS sampling rate of the server process during the memory request.
    memory_sample_hz: float = 20.0
    # -- fairness: a small request is one whole tile (128² at ×2); a large one, 512², is cut into 16 tiles
    #    of 128 pixels (200² windows with the halo, 256² outputs), each about 1.5x the small request's
    #    cost, as a server that mixes sizes would be set up (tile cost near the small requests' cost);
    #    width 0.5 keeps the part to a few minutes on 2 CPU cores.
    fairness_small_size: int = 128
    fairness_large_size: int = 512
    fairness_scale: float = 2.0
    fairness_width: float = 0.5
    fairness_requests: int = 8
    fairness_large_concurrency: int = 1
    #: Pause after each small answer, so the next one arrives at another phase of the large tiles.
    fairness_gap_s: float = 0.3
    #: Seconds the large requests run before the first loaded small request.
    fairness_lead_s: float = 2.0
    #: Server tile size (None: the server's default of 256, which makes a large request's tiles 6x the small one).
    fairness_tile_size: int | None = 128

    # -- precision: default serving vs --precision fp32 vs the model alone, the 256² ×2 request.
    precision_size: int = 256
    precision_scale: float = 2.0
    precision_rounds: int = 9
    precision_warmup: int = 1

    # -- bf16_psnr: Set5 and Set14 whole (None: every image) at the benchmark scales.
    quality_scales: tuple[float, ...] = (2.0, 3.0, 4.0)
    quality_max_images: int | None = None

    @property
    def spec(self) -> ModelSpec:
        return MODEL_SPECS[self.model_spec]

    def resolved_batch_tile(self) -> int:
        if self.batch_tile is not None:
            return self.batch_tile
        return 256 if self.device.startswith("cuda") else 64


#: ``--quick``: every size tiny (a smoke run of the whole pipeline, and what the test runs).
QUICK_OVERRIDES = {
    "repeats": 1,
    "peak_sizes": (64, 128),
    "peak_min_seconds": 0.0,
    "widths_lr_size": 16,
    "reference_lr_size": 16,
    "batch_tile": 8,
    "batch_sizes": (1, 2, 4),
    "overhead_size": 64,
    "overhead_requests": 2,
    "overhead_warmup": 1,
    "memory_size": 128,
    "fairness_small_size": 32,
    "fairness_large_size": 96,
    "fairness_requests": 3,
    "fairness_tile_size": 32,
    "fairness_lead_s": 0.5,
    "precision_size": 32,
    "precision_rounds": 1,
    "quality_scales": (2.0,),
    "quality_max_images": 1,
}


def check(config: SuiteConfig) -> SuiteConfig:
    """Raise ValueError naming the first value out of range; return ``config`` unchanged otherwise."""
    if config.threads is not None and config.threads < 1:
        raise ValueError(f"threads must be >= 1, got {config.threads}")
    if config.repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {config.repeats}")
    if config.dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {DTYPES}, got {config.dtype!r}")
    if config.model_spec not in MODEL_SPECS:
        raise ValueError(f"model_spec must be one of {tuple(MODEL_SPECS)}, got {config.model_spec!r}")
    for name in ("widths_lr_size", "reference_lr_size", "overhead_size", "memory_size", "precision_size"):
        if getattr(config, name) < 4:
            raise ValueError(f"{name} must be at least 4 pixels, got {getattr(config, name)}")
    if config.batch_tile is not None and config.batch_tile < 1:
        raise ValueError(f"batch_tile must be >= 1, got {config.batch_tile}")
    if not config.batch_sizes or min(config.batch_sizes) < 1 or 1 not in config.batch_sizes:
        raise ValueError(f"batch_sizes must be positive and include 1 (the baseline), got {config.batch_sizes}")
    if config.dtype == "fp16" and not config.device.startswith("cuda"):
        raise ValueError(f"dtype fp16 needs a CUDA device, got device {config.device!r}; use fp32 or bf16")
    scales = (
        *config.widths_scales,
        *config.reference_scales,
        config.batch_scale,
        config.overhead_scale,
        config.memory_scale,
        config.fairness_scale,
        config.precision_scale,
        *config.quality_scales,
    )
    if min(scales) <= 1.0:
        raise ValueError(f"every scale must be greater than 1, got {scales}")
    try:
        check_width(config.memory_width)
    except ValueError as error:
        raise ValueError(f"memory_width: {error}") from None
    if config.overhead_requests < 1 or config.overhead_warmup < 0:
        raise ValueError(
            f"overhead needs >= 1 request and >= 0 warm-ups, got {config.overhead_requests} and "
            f"{config.overhead_warmup}"
        )
    if config.fairness_requests < 1 or config.fairness_large_concurrency < 1:
        raise ValueError(
            f"fairness needs >= 1 small request and >= 1 large one in flight, got {config.fairness_requests} and "
            f"{config.fairness_large_concurrency}"
        )
    if config.fairness_large_size <= config.fairness_small_size:
        raise ValueError(
            f"fairness_large_size ({config.fairness_large_size}) must exceed fairness_small_size "
            f"({config.fairness_small_size})"
        )
    if config.peak_sizes is not None and (not config.peak_sizes or min(config.peak_sizes) < 1):
        raise ValueError(f"peak_sizes must be positive, got {config.peak_sizes}")
    if config.precision_rounds < 1 or config.precision_warmup < 0:
        raise ValueError(
            f"precision needs >= 1 round and >= 0 warm-ups, got {config.precision_rounds} and {config.precision_warmup}"
        )
    if config.quality_max_images is not None and config.quality_max_images < 1:
        raise ValueError(f"quality_max_images must be >= 1, got {config.quality_max_images}")
    if config.memory_sample_hz <= 0:
        raise ValueError(f"memory_sample_hz must be positive, got {config.memory_sample_hz}")
    unknown = [mode for mode in config.widths_modes if mode not in ("slim", "paper")]
    if unknown:
        raise ValueError(f"widths_modes must be slim and/or paper, got {config.widths_modes}")
    return config


def quick(config: SuiteConfig) -> SuiteConfig:
    """``config`` with the quick sizes (an explicitly given field is the caller's business to reapply)."""
    return dataclasses.replace(config, quick=True, **QUICK_OVERRIDES)
