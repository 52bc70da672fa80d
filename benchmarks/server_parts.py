"""The suite's two server parts: overhead at low load, and peak memory for one 2048×2048 ×4 request.

Both start the real ``anysr serve`` as a subprocess with the shipped weights (``bench_server_overhead``
has the start/stop, image and request code), so what is measured is production's code path: HTTP,
decode, plan, scheduler, batcher, runner, stitch, PNG encode.

``memory`` raises the server's output limit (8192² is over the default ``max_output_pixels`` of 4096²)
and its request timeout, forces a width with ``X-AnySR-Budget: width=W`` (0.5 by default on CPU, where
full width takes over 20 minutes; the width changes only the channel count of per-batch buffers, while
the big buffers are the output image's), and samples the server's RSS at ~20 Hz from before the request
until it answers. Linux's own peak counter (VmHWM, reset just before the request) is recorded beside the
sampled peak, since sampling can miss a short spike.
"""

from __future__ import annotations

import time
from typing import Any

import httpx
import torch

from benchmarks.bench_server_overhead import (
    ServerLaunch,
    bench_image,
    describe_model,
    parse_timing,
    print_summary,
    running_server,
    summarise,
    time_requests,
)
from benchmarks.config import SuiteConfig
from benchmarks.rss import RssSampler, kernel_peak, reset_kernel_peak
from models.anysr import build_model
from models.spec import ModelSpec
from server.app import DEFAULT_BATCH_TILES
from server.settings import Settings
from server.tiling import plan_for_model

#: The issue's target for server overhead, as a fraction of model time.
OVERHEAD_TARGET = 0.10
#: Forced width of the overhead requests: fixed, so every request runs the same FLOPs.
OVERHEAD_WIDTH = 1.0
#: Seconds of idle sampling before the memory request (the idle RSS is their median).
IDLE_SAMPLING_S = 2.0
#: Generous limit for the one long memory request (tens of minutes at full width on a CPU).
MEMORY_TIMEOUT_S = 86_400.0


def _default(name: str) -> Any:
    return Settings.model_fields[name].default


def server_launch(config: SuiteConfig, extra_args: list[str]) -> ServerLaunch:
    """The shipped weights (or random ones where allowed and the file is missing), the suite's device/threads."""
    if not config.weights.is_file() and not config.allow_untrained:
        raise FileNotFoundError(
            f"weights file {config.weights} not found; pass --weights PATH, or --allow-untrained to serve "
            "random weights (same FLOPs, so the timings still hold)"
        )
    return ServerLaunch(
        weights=str(config.weights),
        allow_untrained=config.allow_untrained,
        torch_threads=config.threads,
        extra_args=("--device", config.device, "--precision", config.dtype, *extra_args),
        ready_timeout_s=config.ready_timeout_s,
    )


def _model_facts(model: dict[str, Any]) -> dict[str, Any]:
    keys = ("untrained", "source", "sha256", "parameters", "device", "precision", "tiling")
    return {key: model.get(key) for key in keys}


def run_overhead(config: SuiteConfig) -> tuple[dict[str, Any], dict[str, Any]]:
    """End-to-end latency minus model time for sequential requests: (config, results)."""
    size, scale = config.overhead_size, config.overhead_scale
    png, source = bench_image(size)
    # The default 60 s request timeout is shorter than one full-width request on a busy CPU.
    extra = ["--request-timeout-s", "3600"]
    launch = server_launch(config, extra)
    with running_server(launch) as server:
        model = describe_model(server.base, (size, size), scale)
        rows = time_requests(server.base, png, scale, OVERHEAD_WIDTH, config.overhead_requests, config.overhead_warmup)
        argv = server.argv
    summary = summarise(rows)
    print_summary(summary)
    settings = {
        "size": [size, size],
        "scale": scale,
        "width": OVERHEAD_WIDTH,
        "requests": config.overhead_requests,
        "warmup": config.overhead_warmup,
        "image": source,
        "input_png_bytes": len(png),
        "server_argv": argv[1:],
        "weights": str(config.weights),
        "allow_untrained": config.allow_untrained,
    }
    ratio = summary["overhead_ratio"]["median"]
    results = {
        "model": _model_facts(model),
        "summary": summary,
        "target_ratio": OVERHEAD_TARGET,
        "within_target": ratio <= OVERHEAD_TARGET,
        "requests": rows,
    }
    return settings, results


#: The request-sized buffers alive together while the response is encoded.
LIVE_AT_ENCODE = ("output_canvas_uint8", "pillow_encode_copy", "response_png")


def buffer_sizes(
    model: dict[str, Any], size: int, out_size: tuple[int, int], width: float, png_bytes: int, response_bytes: int
) -> dict[str, Any]:
    """Sizes in bytes of the buffers one request holds, to explain its peak (estimates from the code's shapes).

    Request-sized: the decoded input (float32 RGB), the output canvas (uint8; each batch writes its
    tiles into it and frees its own output), Pillow's copy for encoding (RGB is 4 bytes per pixel inside
    Pillow) and the PNG. Per batch: the encoder's feature map, the decoder's projection (float32) and
    the batch's uint8 output.
    """
    with torch.device("meta"):
        meta = build_model(ModelSpec.from_dict(model["spec"]))
    plan = plan_for_model(meta, (size, size), out_size, model["tiling"]["tile_size"], model["tiling"]["halo"])
    lr_h, lr_w = plan.lr_tile_shape
    tile_h, tile_w = plan.out_tile_shape
    max_tiles = _default("max_batch_tiles") or DEFAULT_BATCH_TILES.get(str(model["device"]).split(":")[0], 8)
    batch = min(max_tiles, max(1, _default("max_batch_pixels") // (lr_h * lr_w)), plan.count)
    # The decoder's per-LR-pixel table: LIIF-style decoders project to their first hidden layer; for the
    # others the features themselves are the table.
    hidden_sizes = getattr(meta.decoder, "hidden_sizes", None)
    hidden = hidden_sizes(width)[0] if hidden_sizes is not None else meta.encoder.out_dim
    out_pixels = out_size[0] * out_size[1]
    request = {
        "input_png": png_bytes,
        "decoded_input_float32": 3 * size * size * 4,
        "output_canvas_uint8": out_pixels * 3,
        "pillow_encode_copy": out_pixels * 4,
        "response_png": response_bytes,
    }
    per_batch = {
        "encoder_feature_map_float32": batch * meta.encoder.out_dim * lr_h * lr_w * 4,
        "decoder_projection_float32": batch * hidden * lr_h * lr_w * 4,
        "batch_output_uint8": batch * tile_h * tile_w * 3,
    }
    return {
        "tiles": plan.count,
        "lr_tile_shape": [lr_h, lr_w],
        "out_tile_shape": [tile_h, tile_w],
        "batch_tiles": batch,
        "request": request,
        "per_batch": per_batch,
        # At encode time the output image, Pillow's copy and the PNG are all alive.
        "live_at_encode_parts": LIVE_AT_ENCODE,
        "live_at_encode": sum(request[key] for key in LIVE_AT_ENCODE),
    }


def run_memory(config: SuiteConfig) -> tuple[dict[str, Any], dict[str, Any]]:
    """Server RSS before and during one large request: (config, results)."""
    size, scale, width = config.memory_size, config.memory_scale, config.memory_width
    png, source = bench_image(size)
    out_side = round(size * scale)
    out_size = (out_side, out_side)
    extra = [
        "--max-input-pixels",
        str(max(_default("max_input_pixels"), size * size)),
        "--max-output-pixels",
        str(max(_default("max_output_pixels"), out_side * out_side)),
        "--max-body-bytes",
        str(max(_default("max_body_bytes"), len(png) + (1 << 20))),
        "--request-timeout-s",
        str(MEMORY_TIMEOUT_S),
    ]
    launch = server_launch(config, extra)
    headers = {"content-type": "image/png", "x-anysr-budget": f"width={width}"}
    with running_server(launch) as server:
        model = describe_model(server.base, (size, size), scale)
        pid = server.process.pid
        sampler = RssSampler(pid, config.memory_sample_hz)
        origin = time.monotonic()
        sampler.start()
        try:
            time.sleep(IDLE_SAMPLING_S)
            kernel_reset = reset_kernel_peak(pid)
            sent = time.monotonic()
            response = httpx.post(
                f"{server.base}/upscale?scale={scale}",
                content=png,
                headers=headers,
                timeout=MEMORY_TIMEOUT_S,
                trust_env=False,
            )
            answered = time.monotonic()
            kernel_peak_bytes = kernel_peak(pid) if kernel_reset else None
        finally:
            sampler.stop()
        argv = server.argv
    if response.status_code != 200:
        raise RuntimeError(f"memory request failed with {response.status_code}: {response.text[:500]}")
    idle = sampler.between(origin, sent)
    during = sampler.between(sent, answered)
    if not idle or not during:
        raise RuntimeError(f"too few RSS samples (idle {len(idle)}, request {len(during)}); raise the sample rate")
    idle_rss = sorted(idle)[len(idle) // 2]
    peak_rss = max(during)
    buffers = buffer_sizes(model, size, out_size, width, len(png), len(response.content))
    timing = parse_timing(response.headers.get("server-timing", ""))
    print(
        f"memory: {size}x{size} x{scale:g} at width {response.headers.get('x-anysr-width')}: idle "
        f"{idle_rss / 2**20:.0f} MiB, peak {peak_rss / 2**20:.0f} MiB (+{(peak_rss - idle_rss) / 2**20:.0f} MiB), "
        f"{answered - sent:.1f} s",
        flush=True,
    )
    settings = {
        "size": [size, size],
        "scale": scale,
        "out_size": list(out_size),
        "width_requested": width,
        "width_header": f"X-AnySR-Budget: width={width}",
        "image": source,
        "sample_hz": config.memory_sample_hz,
        "idle_sampling_s": IDLE_SAMPLING_S,
        "server_argv": argv[1:],
        "weights": str(config.weights),
        "allow_untrained": config.allow_untrained,
    }
    results = {
        "model": _model_facts(model),
        "width_used": float(response.headers["x-anysr-width"]),
        "tiles": int(response.headers["x-anysr-tiles"]),
        "flops": int(response.headers["x-anysr-flops"]),
        "wall_s": answered - sent,
        "server_timing_s": timing,
        "idle_rss_bytes": idle_rss,
        "peak_rss_bytes": peak_rss,
        "peak_minus_idle_bytes": peak_rss - idle_rss,
        "kernel_peak_rss_bytes": kernel_peak_bytes,
        "samples": {"idle": len(idle), "request": len(during)},
        "rss_timeline": sampler.timeline(origin),
        "response_bytes": len(response.content),
        "buffers": buffers,
    }
    return settings, results
