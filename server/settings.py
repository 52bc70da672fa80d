"""The server's one settings object: environment variables ``ANYSR_*``, overridden by ``anysr serve`` flags.

Every field has a description (``anysr serve --help`` and docs/serving.md print them) and is checked
when the object is built, so a bad value stops start-up with a message naming the value and the
allowed range. ``create_app`` turns these into the small frozen dataclasses the layers below take
(``SchedulerPolicy``, ``BatchLimits``, ``RunnerConfig``, ...); nothing below the app imports this.
Whether the weights file exists is checked by ``anysr serve`` before it starts (tests inject models).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from server.codec import PILLOW_FORMATS
from server.scheduler import parse_policy

DEFAULT_WEIGHTS = Path("weights/anysr-edsr-liif.safetensors")
_DEVICE_PATTERN = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")
_HEX_COLOUR = re.compile(r"^[0-9a-f]{6}$")
_TOKEN = re.compile(r"^[A-Za-z0-9-]{1,64}$")


def _split_list(value: Any) -> Any:
    """Accept ``"a,b"`` (env vars, flags) as well as sequences."""
    if isinstance(value, str):
        return tuple(part.strip() for part in value.split(",") if part.strip())
    return value


class Settings(BaseSettings):
    """All knobs of ``anysr serve``."""

    model_config = SettingsConfigDict(env_prefix="ANYSR_", extra="forbid", env_parse_none_str="none")

    # -- network ---------------------------------------------------------------------------------
    host: str = Field("127.0.0.1", description="Interface to bind.")
    port: int = Field(8000, ge=1, le=65535, description="TCP port to bind.")
    log_level: Literal["debug", "info", "warning", "error"] = Field("info", description="Log level.")

    # -- model -----------------------------------------------------------------------------------
    weights: Path = Field(
        DEFAULT_WEIGHTS,
        description="Safetensors weights file (the spec travels inside it). A relative path is looked up in "
        "data_dir, then the working directory, then the source tree the package runs from.",
    )
    data_dir: Path | None = Field(
        None, description="Directory searched first for a relative weights path (none = skip this step)."
    )
    allow_untrained: bool = Field(
        False,
        description="If the weights file is missing, serve a randomly initialised model (smoke tests only; "
        "labelled in logs and /v1/model).",
    )
    device: str = Field("auto", description="auto (CUDA if available, else CPU), cpu, cuda or cuda:N.")
    precision: Literal["auto", "fp32", "bf16", "fp16"] = Field(
        "auto",
        description="auto = bf16 on CUDA; on a CPU, bf16 where it has native bf16 and a start-up probe finds "
        "bf16 at least 1.2x faster and within 57 dB of fp32, else fp32; fp16 only on CUDA.",
    )
    torch_threads: int | None = Field(None, ge=1, description="torch intra-op threads (none = torch default).")
    widths: Annotated[tuple[float, ...] | None, NoDecode] = Field(
        None,
        description="Widths the scheduler may choose, comma-separated, from the model's own (EDSR-baseline: "
        "0.5, 0.7, 0.9, 1.0; RDN: 0.7, 0.8, 0.9, 1.0); none = all of the model's.",
    )

    # -- scheduler -------------------------------------------------------------------------------
    policy: str = Field("adaptive", description="adaptive, scale-groups or fixed:W.")
    moderate_utilisation: float | None = Field(
        0.6, gt=0, le=1, description="Device utilisation (0-1) from which load is moderate (none = ignore)."
    )
    heavy_utilisation: float | None = Field(
        0.9, gt=0, le=1, description="Device utilisation (0-1) from which load is heavy (none = ignore)."
    )
    moderate_queue_s: float = Field(0.5, gt=0, description="Queued work (predicted seconds) that counts as moderate.")
    heavy_queue_s: float = Field(2.0, gt=0, description="Queued work (predicted seconds) that counts as heavy.")
    overload_queue_s: float | None = Field(
        4.0,
        gt=0,
        description="Queued work (predicted seconds) from which adaptive serves every scale at the narrowest width "
        "(none = never).",
    )
    min_gpu_free_bytes: int = Field(1 << 30, ge=0, description="Free GPU memory below which load is heavy.")
    hysteresis: float = Field(
        0.1, ge=0, lt=1, description="Relative margin below a threshold before the load level drops."
    )
    load_sample_interval_s: float = Field(0.5, gt=0, description="Seconds between load samples.")
    load_smoothing: float = Field(0.3, gt=0, le=1, description="EWMA weight of each new load sample.")
    throughput_smoothing: float = Field(
        0.2, gt=0, le=1, description="EWMA weight of each batch's FLOP/s (and of each request's calibration)."
    )
    max_queue_s: float | None = Field(
        60.0,
        gt=0,
        description="Most predicted seconds of device work the queue may hold with a new request added (503 "
        "queue_full beyond; none = no cap).",
    )
    queue_order: Literal["fair", "fifo"] = Field(
        "fair",
        description="fair: tiles of concurrent requests interleave (start-time fair queuing); fifo: whole "
        "requests in arrival order.",
    )

    # -- tiling and batching ---------------------------------------------------------------------
    tile_size: int = Field(256, ge=8, description="LR pixels per tile side, before the halo; smaller images run whole.")
    tile_halo: int | None = Field(
        None, ge=0, description="LR pixels of overlap per tile side (none = the model's receptive radius: exact)."
    )
    max_batch_tiles: int | None = Field(
        None,
        ge=1,
        description="Most tiles in one batch; unset: 8 on CUDA, 1 on CPU (batching gains nothing there and "
        "multiplies activation memory).",
    )
    max_batch_pixels: int = Field(1 << 20, ge=1, description="Most LR pixels in one batch.")
    max_batch_wait_ms: float = Field(2.0, ge=0, description="Longest a tile waits for its batch to fill.")
    max_queue_tiles: int = Field(256, ge=1, description="Most tiles queued or running; beyond it requests get 503.")
    query_chunk: int = Field(
        65536,
        ge=1,
        description="Decoder queries per step across a batch (bounds memory); the runner decodes in cache-sized "
        "blocks of at most 4,096 within it.",
    )
    warmup_size: int = Field(48, ge=8, description="LR side of the warm-up image run at every width.")

    # -- limits ----------------------------------------------------------------------------------
    max_body_bytes: int = Field(32 << 20, ge=1, description="Largest request body.")
    max_input_pixels: int = Field(2048 * 2048, ge=1, description="Largest input image (h·w).")
    max_output_pixels: int = Field(4096 * 4096, ge=1, description="Largest output image (H·W).")
    max_whole_image_pixels: int = Field(
        2048 * 2048,
        ge=1,
        description="Largest output (H·W) of a model whose decoder is global (e.g. SRNO's attention over the "
        "whole output): such a model runs every request as one whole-image tile, so this bounds its time.",
    )
    min_scale: float = Field(1.0, ge=1.0, description="Scales must be greater than this.")
    max_scale: float = Field(8.0, gt=1.0, le=64.0, description="Scales must be at most this.")
    input_formats: Annotated[tuple[str, ...], NoDecode] = Field(
        ("png", "jpeg", "webp"), description="Accepted input formats, comma-separated."
    )
    output_formats: Annotated[tuple[str, ...], NoDecode] = Field(
        ("png", "jpeg", "webp"), description="Allowed output formats, comma-separated."
    )
    default_quality: int = Field(90, ge=1, le=100, description="JPEG/WebP quality when the request gives none.")
    png_compress_level: int = Field(1, ge=0, le=9, description="PNG zlib level (1: fast, 9: smallest).")
    request_timeout_s: float = Field(60.0, gt=0, description="Longest a request may wait for its tiles (504 after).")
    max_requests_per_client: int = Field(16, ge=1, description="In-flight upscales per client address (429 beyond).")
    drain_timeout_s: float = Field(30.0, ge=0, description="On SIGTERM, how long in-flight requests may finish.")
    jpeg_background: str = Field(
        "ffffff", description="RRGGBB hex colour that transparent images are composited onto for JPEG output."
    )

    # -- connections -----------------------------------------------------------------------------
    header_timeout_s: float = Field(
        10.0, gt=0, description="Longest a client may take to send a request's headers; then the connection closes."
    )
    body_timeout_s: float = Field(
        30.0, gt=0, description="Longest a request body may take to arrive, from the end of the headers (408 after)."
    )
    max_connections: int = Field(
        256, ge=1, description="Most open connections; a connection beyond gets a JSON 503 and is closed."
    )
    forwarded_allow_ips: str | None = Field(
        None,
        description="Proxies whose X-Forwarded-For/-Proto are trusted, comma-separated IPs or networks, * for any "
        "(none = trust no proxy: the client address is the connection's).",
    )

    # -- access ----------------------------------------------------------------------------------
    api_keys: Annotated[tuple[str, ...], NoDecode] = Field(
        (), description="API keys, comma-separated; when any key is set (here or in api_keys_file), one is required."
    )
    api_keys_file: Path | None = Field(None, description="File of API keys, one per line (# comments).")
    api_key_header: str = Field("X-API-Key", description="Request header that carries the API key.")
    public_admin: bool = Field(
        True, description="/healthz, /readyz and /metrics answer without an API key (false: they need one too)."
    )
    admin_port: int | None = Field(
        None,
        ge=1,
        le=65535,
        description="Serve /healthz, /readyz and /metrics on this port (no API key), and not on the main port.",
    )
    max_requests_per_key: int = Field(16, ge=1, description="In-flight upscales per API key (429 beyond).")
    cors_origins: Annotated[tuple[str, ...], NoDecode] = Field(
        (), description="Origins allowed by CORS, comma-separated, * for any (none: CORS off)."
    )

    @field_validator("widths", mode="before")
    @classmethod
    def _parse_widths(cls, value: Any) -> Any:
        value = _split_list(value)
        if isinstance(value, tuple | list):
            return tuple(float(item) for item in value)
        return value

    @field_validator("widths")
    @classmethod
    def _check_widths(cls, value: tuple[float, ...] | None) -> tuple[float, ...] | None:
        if value is None:
            return None
        if not value:
            raise ValueError("widths needs at least one of the model's widths (or leave it unset for all)")
        if any(not 0.0 < width <= 1.0 for width in value):
            raise ValueError(f"widths must be numbers in (0, 1], got {list(value)}")
        return tuple(sorted(set(value)))

    @field_validator("input_formats", "output_formats", mode="before")
    @classmethod
    def _parse_formats(cls, value: Any) -> Any:
        value = _split_list(value)
        if isinstance(value, tuple | list):
            return tuple(str(item).lower() for item in value)
        return value

    @field_validator("input_formats", "output_formats")
    @classmethod
    def _check_formats(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        allowed = tuple(PILLOW_FORMATS)
        unknown = [item for item in value if item not in allowed]
        if unknown or not value:
            raise ValueError(f"formats must be a non-empty subset of {allowed}, got {value}")
        return tuple(dict.fromkeys(value))

    @field_validator("api_keys", "cors_origins", mode="before")
    @classmethod
    def _parse_lists(cls, value: Any) -> Any:
        return _split_list(value)

    @field_validator("jpeg_background")
    @classmethod
    def _check_background(cls, value: str) -> str:
        value = value.strip().lstrip("#").lower()
        if not _HEX_COLOUR.match(value):
            raise ValueError(f"jpeg_background must be an RRGGBB hex colour such as ffffff, got {value!r}")
        return value

    @field_validator("api_key_header")
    @classmethod
    def _check_key_header(cls, value: str) -> str:
        if not _TOKEN.match(value):
            raise ValueError(f"api_key_header must be a header name such as X-API-Key, got {value!r}")
        return value

    @field_validator("device")
    @classmethod
    def _check_device(cls, value: str) -> str:
        if not _DEVICE_PATTERN.match(value):
            raise ValueError(f"device must be auto, cpu, cuda or cuda:N, got {value!r}")
        return value

    @field_validator("policy")
    @classmethod
    def _check_policy(cls, value: str) -> str:
        parse_policy(value)
        return value.strip().lower()

    @model_validator(mode="after")
    def _check_consistency(self) -> Settings:
        if (self.moderate_utilisation is None) != (self.heavy_utilisation is None):
            raise ValueError("moderate_utilisation and heavy_utilisation must both be set or both be none")
        if self.moderate_utilisation is not None and self.heavy_utilisation is not None:
            if self.moderate_utilisation >= self.heavy_utilisation:
                raise ValueError(
                    f"moderate_utilisation ({self.moderate_utilisation}) must be below heavy_utilisation "
                    f"({self.heavy_utilisation})"
                )
        if self.moderate_queue_s >= self.heavy_queue_s:
            raise ValueError(
                f"moderate_queue_s ({self.moderate_queue_s}) must be below heavy_queue_s ({self.heavy_queue_s})"
            )
        if self.overload_queue_s is not None and self.overload_queue_s <= self.heavy_queue_s:
            raise ValueError(
                f"overload_queue_s ({self.overload_queue_s}) must be above heavy_queue_s ({self.heavy_queue_s})"
            )
        if self.max_scale <= self.min_scale:
            raise ValueError(f"max_scale ({self.max_scale}) must be greater than min_scale ({self.min_scale})")
        mode, fixed = parse_policy(self.policy)
        if mode == "fixed" and self.widths is not None and fixed not in self.widths:
            raise ValueError(f"policy {self.policy!r} uses a width outside the served widths {self.widths}")
        if self.admin_port is not None and self.admin_port == self.port:
            raise ValueError(f"admin_port ({self.admin_port}) must differ from port ({self.port})")
        if self.api_keys_file is not None and not self.api_keys_file.is_file():
            raise ValueError(f"api_keys_file {self.api_keys_file} is not a file")
        if self.max_output_pixels < self.max_input_pixels:
            raise ValueError(
                f"max_output_pixels ({self.max_output_pixels}) must be at least max_input_pixels "
                f"({self.max_input_pixels}): every upscale is larger than its input"
            )
        return self

    def background_rgb(self) -> tuple[float, float, float]:
        """``jpeg_background`` as RGB in [0, 1]."""
        value = self.jpeg_background
        return (int(value[0:2], 16) / 255, int(value[2:4], 16) / 255, int(value[4:6], 16) / 255)
