"""Render the GPU benchmark's results.json as Markdown: what docs/benchmarks.md's GPU section is built from.

Pure: results in, text out. Each section renders what it has; a skipped or failed section says so, so
a partial run still reads. The issue's targets are checked where their numbers are: 100 output MP/s at
×2 full width bf16, a batching gain of 3x for 64² tiles, bf16 within 0.05 dB of fp32.
"""

from __future__ import annotations

from typing import Any

#: The issue's targets on one H100 or H200.
TARGET_MPX_PER_S = 100.0
TARGET_BATCH_GAIN = 3.0


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{value:.0%}"


def _num(value: Any, digits: int = 2) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def environment(result: dict[str, Any]) -> list[str]:
    card = result.get("card") or {}
    nvml = result.get("nvml") or {}
    lines = [
        f"- Card: {card.get('name', 'none (CPU run)')}"
        + (
            f", {card['memory_bytes'] / 2**30:.0f} GiB, {card['multiprocessors']} SMs, sm_{card['capability']}"
            if card
            else ""
        ),
        f"- Driver: {nvml.get('driver', nvml.get('reason', '–'))}; CUDA (torch build) {result.get('torch_cuda')}; "
        f"cuDNN {result.get('cudnn')}; torch {result.get('torch')}; Python {result.get('python')}",
        f"- TF32: matmul {result['tf32']['matmul']}, cuDNN {result['tf32']['cudnn']} (fp32 rows below run with these)",
        f"- Host CPU: {result.get('cpu_model')} ({', '.join(result.get('cpu_matrix_flags', [])) or 'no matrix flags'}), "
        f"{result.get('torch_threads')} torch threads; commit `{(result.get('commit') or 'unknown')[:10]}`"
        + (" (dirty)" if result.get("dirty") else ""),
        f"- Model: {result.get('model')}",
    ]
    return lines


def peak(result: dict[str, Any]) -> list[str]:
    return [
        f"- Matrix-product peak (`torch.mm`, fastest size): fp32 {result['fp32']['gflops_per_s'] / 1e3:.1f} TFLOP/s "
        f"({result['fp32']['size']}²), bf16 {result['bf16']['gflops_per_s'] / 1e3:.1f} TFLOP/s ({result['bf16']['size']}²)"
    ]


def throughput(result: dict[str, Any]) -> list[str]:
    rows = [
        [
            row["precision"],
            f"×{row['scale']:g}",
            f"{row['width']:.1f}",
            f"{row['out_size'][0]}×{row['out_size'][1]}",
            f"{row['time_s'] * 1e3:.1f}",
            f"{row['output_mpx_per_s']:.1f}",
            f"{row['gflops_per_s'] / 1e3:.2f}",
            _pct(row.get("share_of_peak")),
            f"{row['time_ratio']:.3f}",
            f"{row['flops_ratio']:.3f}",
        ]
        for row in result["rows"]
    ]
    header = [
        "precision",
        "scale",
        "width",
        "output",
        "ms",
        "output MP/s",
        "TFLOP/s",
        "of peak",
        "time ratio",
        "FLOPs ratio",
    ]
    sweep = [
        [str(row["block_queries"]), f"{row['time_s'] * 1e3:.1f}", f"{row['output_mpx_per_s']:.1f}"]
        for row in result["block_sweep"]
    ]
    target = [
        row for row in result["rows"] if row["precision"] == "bf16" and row["scale"] == 2.0 and row["width"] == 1.0
    ]
    best = max((row["output_mpx_per_s"] for row in result["block_sweep"]), default=None)
    lines = [
        f"`AnySR.upscale` (decoder block {result['block_queries']} queries), median of the timed runs:",
        "",
        *_table(header, rows),
        "",
        "Decoder block size at ×2, width 1.0, bf16:",
        "",
        *_table(["block queries", "ms", "output MP/s"], sweep),
        "",
    ]
    if target:
        rate = target[0]["output_mpx_per_s"]
        verdict = "met" if max(rate, best or 0) >= TARGET_MPX_PER_S else "not met"
        lines.append(
            f"- Target ≥ {TARGET_MPX_PER_S:g} output MP/s at ×2 full width bf16: {rate:.1f} MP/s at the server's "
            f"block size, {_num(best, 1)} at the best block size: **{verdict}**."
        )
    return lines


def batching(result: dict[str, Any]) -> list[str]:
    lines = []
    for tile, entry in result.items():
        settings = entry["settings"]
        rows = [
            [
                str(row["batch"]),
                f"{row['time_s'] * 1e3:.1f}",
                f"{row['tiles_per_s']:.1f}",
                f"{row['output_mpx_per_s']:.1f}",
                _pct(row.get("share_of_peak")),
                f"{row['gain_vs_batch_1']:.2f}×",
            ]
            for row in entry["rows"]
        ]
        lines += [
            f"Tiles of {tile}² LR pixels + halo {settings['halo']} (window {settings['lr_tile_shape'][0]}², output "
            f"{settings['out_tile_shape'][0]}²), {settings['precision']}, width 1.0, ×{settings['scale']:g}:",
            "",
            *_table(["batch", "ms", "tiles/s", "output MP/s", "of peak", "gain"], rows),
            "",
            f"- Best gain {entry['best_gain']:.2f}× at batch {entry['best_batch']}"
            + (
                f" (target ≥ {TARGET_BATCH_GAIN:g}× for 64² tiles: **{'met' if entry['best_gain'] >= TARGET_BATCH_GAIN else 'not met'}**)"
                if tile == "64"
                else ""
            )
            + ".",
            "",
        ]
    return lines


def psnr(result: dict[str, Any]) -> list[str]:
    rows = [
        [
            row["dataset"],
            f"×{row['scale']}",
            row["row"],
            f"{row['fp32_psnr']:.3f}",
            f"{row['bf16_psnr']:.3f}",
            f"{row['delta_db']:+.4f}",
            f"{row['max_image_delta_db']:.4f}",
        ]
        for row in result["rows"]
    ]
    verdict = "met" if result["within_bound"] else "not met"
    return [
        *_table(["dataset", "scale", "row", "fp32 dB", "bf16 dB", "Δ dB", "max |Δ| one image"], rows),
        "",
        f"- Worst Δ of a dataset mean {result['worst_mean_delta_db']:+.4f} dB (bound {result['bound_db']} dB: **{verdict}**); "
        f"worst single image {result['worst_image_delta_db']:.4f} dB.",
    ]


def profile(result: dict[str, Any]) -> list[str]:
    rows = [
        [
            name,
            f"{entry['wall_s'] * 1e3:.1f}",
            _num(None if entry["device_kernel_s"] is None else entry["device_kernel_s"] * 1e3, 1),
            _pct(entry["device_busy_share"]),
            "–" if entry["kernel_launches"] is None else str(entry["kernel_launches"]),
            _num(entry["mean_kernel_us"], 1),
            f"{entry['gflops_per_s'] / 1e3:.2f}",
        ]
        for name, entry in result.items()
        if isinstance(entry, dict)
    ]
    return [
        *_table(["call", "wall ms", "kernel ms", "device busy", "kernels", "mean kernel µs", "TFLOP/s"], rows),
        "",
        "- Low device-busy share: the host side or launch overhead bounds it; high busy share with a low share of "
        "peak: the kernels themselves (memory bandwidth, small shapes). Top kernels: `profile/*.txt` in the archive.",
    ]


def loadtest(result: dict[str, Any]) -> list[str]:
    capacity = result.get("capacity") or {}
    rows = []
    for policy, entry in result["policies"].items():
        for label, phase in [
            *((f"sweep {step['rate']}", step) for step in entry["steps"]),
            ("overload", entry["overload"]),
        ]:
            mix = phase.get("width_mix") or {}
            rows.append(
                [
                    policy,
                    label,
                    _num(phase.get("offered_rps")),
                    _num(phase.get("achieved_rps")),
                    _num(phase.get("goodput_rps")),
                    _num(phase.get("latency_p50_s")),
                    _num(phase.get("latency_p99_s")),
                    " / ".join(f"{width}:{share:.0%}" for width, share in sorted(mix.items())),
                    _pct(phase.get("compute_busy_ratio")),
                    _num(phase.get("batch_mean_tiles"), 1),
                    _num(phase.get("schedule_lag_p99_ms"), 0),
                ]
            )
    header = [
        "policy",
        "phase",
        "offered/s",
        "achieved/s",
        "goodput/s",
        "p50 s",
        "p99 s",
        "widths",
        "model busy",
        "tiles/batch",
        "lag p99 ms",
    ]
    ratios = result.get("overload_ratios", {})
    nvml = result.get("nvml", {})
    nvml_line = (
        f"- NVML during the whole comparison: utilisation mean {_pct(nvml.get('gpu_utilisation_mean'))}, max "
        f"{_pct(nvml.get('gpu_utilisation_max'))}; least free memory {nvml.get('free_bytes_min', 0) / 2**30:.1f} GiB "
        f"({nvml.get('samples')} samples; timeline `loadtest/nvml.json`)."
        if nvml.get("available")
        else f"- NVML: {nvml.get('reason')}"
    )
    return [
        f"Full-width capacity {_num(capacity.get('rps'))} requests/s (closed loop). Full report: `loadtest/report.md`.",
        "",
        *_table(header, rows),
        "",
        f"- adaptive / fixed:1.0 in overload: goodput {_num(ratios.get('goodput'))}× (target ≥ 1.5), p99 "
        f"{_num(ratios.get('p99'))}× (target ≤ 0.5).",
        nvml_line,
    ]


def signal(result: dict[str, Any]) -> list[str]:
    name = result["signal"]
    rows = []
    for phase, entry in result["summary"].items():
        nvml = entry.get("nvml", {})
        rows.append(
            [
                phase,
                str(entry["requests"]),
                _num(entry.get("mean_width")),
                ", ".join(f"{key}: {value}" for key, value in (entry.get("reasons") or {}).items()),
                _pct(entry.get(name)),
                _num(entry.get("anysr_load_level"), 1),
                _pct(nvml.get("gpu_utilisation_mean")) if nvml.get("available") else "–",
            ]
        )
    return [
        f"An adaptive server sent a {result['image'][0]}² PNG at ×{result['scale']:g} back to back; a second "
        f"process ran bf16 products on the device during the middle phase ({result['phases_s']}).",
        "",
        *_table(
            ["phase", "requests", "mean width", "reasons", f"server's {name}", "load level", "NVML utilisation"], rows
        ),
        "",
        f"- Reported utilisation rose: **{result['utilisation_rose']}**; adaptive narrowed: **{result['adaptive_narrowed']}**.",
    ]


RENDERERS = {
    "environment": environment,
    "peak": peak,
    "throughput": throughput,
    "batching": batching,
    "psnr": psnr,
    "profile": profile,
    "loadtest": loadtest,
    "signal": signal,
}
TITLES = {
    "environment": "Environment",
    "peak": "Peak",
    "throughput": "Model throughput",
    "batching": "Runner batching gain",
    "psnr": "bf16 against fp32 PSNR",
    "profile": "Profile",
    "loadtest": "Server end to end: adaptive vs fixed:1.0",
    "signal": "The scheduler's GPU signal",
}


def render(results: dict[str, Any]) -> str:
    lines = [
        "# AnySR GPU benchmark",
        "",
        f"`{results['command']}`, started {results['started_at']}, {results.get('elapsed_s', 0):.0f} s.",
        "",
    ]
    for name, outcome in results["sections"].items():
        lines += [f"## {TITLES.get(name, name)}", ""]
        if "skipped" in outcome:
            lines += [f"Skipped: {outcome['skipped']}.", ""]
            continue
        if "error" in outcome:
            lines += [f"Failed after {outcome['seconds']:.0f} s: `{outcome['error']}` (traceback in results.json).", ""]
            continue
        try:
            lines += RENDERERS[name](outcome["result"])
        except (AttributeError, KeyError, TypeError, ValueError) as error:  # a partial result must not lose the page
            lines.append(f"(could not render: {type(error).__name__}: {error}; see results.json)")
        lines += ["", f"_{outcome['seconds']:.0f} s_", ""]
    return "\n".join(lines).rstrip() + "\n"
