"""Render docs/benchmarks.md from the suite's saved JSON records: the machine, one table per part, and
interpretation lines computed from the numbers (no claim here is written in advance of the data).

Pure: records in, Markdown out. ``suite.py`` reads the records (``host.read_records``) and writes the file,
so ``--report-only`` re-renders without timing anything.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from benchmarks.report_speed import UNTIMED_PARTS, bf16_psnr_section, gpu_section, peak_section, precision_section

Record = dict[str, Any]
MIB = 2**20
#: One 8-bit grey level in [0, 1] units: output differences below it cannot change a PNG pixel by more than 1.
GREY_LEVEL = 1 / 255


def _fmt_scale(scale: float) -> str:
    return f"×{scale:g}"


def _size(pair: list[int]) -> str:
    return f"{pair[0]}×{pair[1]}"


def _mib(size: int) -> str:
    """Bytes as MiB, one decimal below 10 MiB so small buffers do not all read 0."""
    value = size / MIB
    return f"{value:.1f}" if value < 10 else f"{value:.0f}"


def _rounds(count: int, noun: str = "round") -> str:
    return f"{count} {noun}" + ("" if count == 1 else "s")


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def _load_note(record: Record) -> str | None:
    """A warning line when other work shared the CPUs (1-minute load above half the usable CPUs)."""
    host = record["host"]
    before, after = host["load_average_before"][0], host["load_average_after"][0]
    cpus = host.get("usable_cpus") or host.get("cpu_count") or 1
    if max(before, after) <= cpus / 2:
        return None
    return (
        f"Note: the 1-minute load average was {before:.1f} before and {after:.1f} after this part on "
        f"{cpus} CPUs, so other work shared the cores and these times are noisy (slower than an idle host)."
    )


def machine_section(records: dict[str, Record]) -> list[str]:
    rows = []
    for part, record in records.items():
        host = record["host"]
        accelerator = host.get("accelerator")
        device = f"{host['device']} ({accelerator['name']})" if accelerator else host["device"]
        commit = (host.get("commit") or "unknown")[:10] + (" (dirty)" if host.get("dirty") else "")
        load = f"{host['load_average_before'][0]:.1f} → {host['load_average_after'][0]:.1f}"
        rows.append(
            [
                f"`{part}`",
                record["time"][:16].replace("T", " "),
                f"{host['cpu_model']} ({host['usable_cpus']} CPUs, {host['cpu_capability']})",
                device,
                f"{host['torch']}, {_rounds(host['torch_threads'], 'thread')}",
                load,
                f"{record['duration_s']:.0f} s",
                f"`{commit}`",
            ]
        )
    header = ["part", "run at", "CPU", "device", "torch", "load 1 min before → after", "took", "commit"]
    return ["## Machine", "", *_table(header, rows), ""]


def widths_section(record: Record) -> list[str]:
    config, results = record["config"], record["results"]
    rows = []
    for case in results["cases"]:
        for row in case["rows"]:
            gap = abs(row["ratio_gap"])
            rows.append(
                [
                    case["mode"],
                    _fmt_scale(case["scale"]),
                    _size(row["out_size"]),
                    f"{row['width']:.1f}",
                    f"{row['flops']['total'] / 1e9:.1f}",
                    f"{row['time_s']['median']:.3f}",
                    f"{row['gflops_per_s']:.1f}",
                    f"{row['flops_ratio']:.3f}",
                    f"{row['time_ratio']:.3f}",
                    f"{gap:.3f}" + ("" if gap <= results["ratio_tolerance"] else " ✗"),
                ]
            )
    header = ["mode", "scale", "output", "width", "GFLOPs", "time s", "GFLOP/s", "FLOPs ratio", "time ratio", "abs gap"]
    tolerance = results["ratio_tolerance"]
    gaps = [abs(row["ratio_gap"]) for case in results["cases"] for row in case["rows"]]
    within = sum(gap <= tolerance for gap in gaps)
    worst = results["worst"]
    verdict = "within" if results["within_target"] else "over"
    return [
        "## Time per width vs FLOPs (`widths`)",
        "",
        f"`AnySR.upscale` end to end (encoder, projection, grid decoder; no image I/O) on a "
        f"{_size(config['lr_size'])} LR input at {', '.join(_fmt_scale(s) for s in config['scales'])}, "
        f"{' and '.join(config['modes'])} mode, every width; {config['weights']} weights ({config['spec']} spec), "
        f"{config['dtype']}. Median of {_rounds(config['repeats'])} interleaved over the widths after "
        f"{config['priming']}. Ratios are relative to width 1.0 of the same mode and scale.",
        "",
        *_table(header, rows),
        "",
        f"- Largest |time ratio − FLOPs ratio|: **{results['max_ratio_gap']:.3f}** ({worst['mode']} mode, "
        f"{_fmt_scale(worst['scale'])}, width {worst['width']:.1f}), {verdict} the issue's target of {tolerance}; "
        f"{within} of {len(rows)} rows are within it.",
        f"- By process CPU time instead of wall time the largest gap is {results['max_cpu_ratio_gap']:.3f}.",
        "",
    ]


def reference_section(record: Record) -> list[str]:
    config, rows = record["config"], record["results"]["rows"]
    table = [
        [
            _fmt_scale(row["scale"]),
            _size(row["out_size"]),
            f"{row['flops'] / 1e9:.1f}",
            f"{row['reference_time_s']:.2f}",
            f"{row['upscale_time_s']:.2f}",
            f"{row['speedup']:.2f}×",
            f"{row['cpu_speedup']:.2f}×",
            f"{row['max_abs_diff']:.1e}",
        ]
        for row in rows
    ]
    header = [
        "scale",
        "output",
        "GFLOPs",
        "reference LIIF s",
        "AnySR.upscale s",
        "speed-up",
        "by CPU time",
        "max abs diff",
    ]
    speedups = ", ".join(f"{row['speedup']:.2f}× at {_fmt_scale(row['scale'])}" for row in rows)
    largest = max(row["max_abs_diff"] for row in rows)
    agreement = "below" if largest < GREY_LEVEL else "above"
    return [
        "## Full width against the reference LIIF (`reference`)",
        "",
        f"Same {_size(config['lr_size'])} LR input and the same {config['weights']} weights for both, width 1.0, "
        f"{config['dtype']}. Reference: {config['reference']}. Ours: {config['ours']}. "
        f"Median of {_rounds(config['repeats'])} after {_rounds(config['warmup_rounds'], 'untimed round')}; "
        "GFLOPs are the "
        "FLOPs model's count of what ours runs (the reference runs more).",
        "",
        *_table(header, table),
        "",
        f"- Speed-up of `AnySR.upscale` over the plain algorithm (reference time / ours): {speedups}.",
        f"- The two outputs differ by at most {largest:.1e} ([0, 1] units), {agreement} one 8-bit grey level "
        f"({GREY_LEVEL:.1e}).",
        "",
    ]


def batching_section(record: Record) -> list[str]:
    config, results = record["config"], record["results"]
    table = [
        [
            str(row["batch"]),
            f"{row['time_s']:.3f}",
            f"{row['tiles_per_s']:.2f}",
            f"{row['output_mpx_per_s']:.3f}",
            f"{row['gflops_per_s']:.1f}",
            f"{row['gain_vs_batch_1']:.2f}×",
        ]
        for row in results["rows"]
    ]
    gain = results["best_gain"]
    meaning = "no material gain on this device" if gain < 1.1 else "batching pays on this device"
    if config["plan_tiles"] == 1:
        tiling = (
            f"the halo covers the {_size(config['lr_image'])} image, so each job is the whole image, "
            "as the server runs small images"
        )
    else:
        tiling = f"{config['plan_tiles']} tiles of a {_size(config['lr_image'])} image, reused in turn to fill a batch"
    return [
        "## Batching gain (`batching`)",
        "",
        f"`{config['call']}` (the batcher's inference call) on {config['device']} ({config['precision']}), "
        f"width {config['width']:.1f}, {_fmt_scale(config['scale'])}: tiles of {config['tile_size']} LR pixels "
        f"plus the exact halo of {config['halo']} (LR window {_size(config['lr_tile_shape'])}, output tile "
        f"{_size(config['out_tile_shape'])}, {config['tile_flops'] / 1e9:.1f} GFLOPs per tile; {tiling}), "
        f"built as the server builds them; the server's default tile is {config['server_default_tile_size']}. "
        f"Median of {_rounds(config['repeats'])} after one untimed call per batch size.",
        "",
        *_table(["batch", "time s", "LR tiles/s", "output Mpx/s", "GFLOP/s", "gain vs batch 1"], table),
        "",
        f"- Best batch: {results['best_batch']}, {gain:.2f}× the throughput of batch 1 ({meaning}).",
        "",
    ]


def overhead_section(record: Record) -> list[str]:
    config, results = record["config"], record["results"]
    summary = results["summary"]
    names = {
        "end_to_end_s": "end to end (client)",
        "model_s": "model (`compute`)",
        "overhead_s": "overhead",
        "queue_s": "queue",
        "decode_s": "decode",
        "encode_s": "stitch + encode",
    }
    table = [
        [label, f"{summary[key]['median'] * 1e3:.1f}", f"{summary[key]['p90'] * 1e3:.1f}"]
        for key, label in names.items()
    ]
    table.append(
        ["overhead / model", f"{summary['overhead_ratio']['median']:.1%}", f"{summary['overhead_ratio']['p90']:.1%}"]
    )
    ratio = summary["overhead_ratio"]["median"]
    verdict = "within" if results["within_target"] else "over"
    model = results["model"]
    weights = "random weights (`--allow-untrained`: same FLOPs)" if model["untrained"] else f"`{model['source']}`"
    return [
        "## Server overhead at low load (`overhead`)",
        "",
        f"`anysr serve` as a subprocess ({model['device']}, {model['precision']}, {weights}); "
        f"{config['requests']} sequential {_size(config['size'])} PNG requests ({config['image']}) at "
        f"{_fmt_scale(config['scale'])}, forced width {config['width']:.1f}, after {config['warmup']} untimed. "
        "Overhead = client end-to-end latency − the server's `compute` time (HTTP, upload, decode, plan, "
        "queue, stitch, encode, download).",
        "",
        *_table(["quantity", "median ms", "p90 ms"], table),
        "",
        f"- Median overhead {summary['overhead_s']['median'] * 1e3:.0f} ms = {ratio:.1%} of model time, "
        f"{verdict} the target of {results['target_ratio']:.0%}.",
        "",
    ]


def memory_section(record: Record) -> list[str]:
    config, results = record["config"], record["results"]
    buffers = results["buffers"]
    growth = results["peak_minus_idle_bytes"]
    kernel = results["kernel_peak_rss_bytes"]
    table = [
        [
            f"{results['idle_rss_bytes'] / MIB:.0f}",
            f"{results['peak_rss_bytes'] / MIB:.0f}",
            f"{growth / MIB:.0f}",
            "n/a" if kernel is None else f"{kernel / MIB:.0f}",
            f"{results['wall_s']:.1f}",
        ]
    ]
    labels = {
        "input_png": "input PNG",
        "decoded_input_float32": "decoded input (float32 RGB)",
        "tile_outputs_uint8": f"tile outputs ({buffers['tiles']} × {_size(buffers['out_tile_shape'])} uint8)",
        "stitched_output_uint8": "stitched output (uint8)",
        "output_canvas_uint8": "output image (uint8; tiles written in as batches finish)",
        "pillow_encode_copy": "Pillow's copy for encoding (4 bytes per pixel)",
        "response_png": "response PNG",
        "encoder_feature_map_float32": f"per batch of {buffers['batch_tiles']}: one encoder feature map (float32)",
        "decoder_projection_float32": f"per batch of {buffers['batch_tiles']}: decoder projection (float32)",
        "batch_output_uint8": f"per batch of {buffers['batch_tiles']}: output buffer (uint8)",
    }
    sizes = {**buffers["request"], **buffers["per_batch"]}
    buffer_rows = [[label, _mib(sizes[key])] for key, label in labels.items() if key in sizes]
    live = buffers["live_at_encode"]
    # Results saved before tiles were written in place held the tile outputs and the stitched image.
    live_parts = buffers.get(
        "live_at_encode_parts", ("tile_outputs_uint8", "stitched_output_uint8", "pillow_encode_copy", "response_png")
    )
    live_names = ", ".join(SHORT_NAMES.get(key, key) for key in live_parts)
    model = results["model"]
    weights = "random weights (`--allow-untrained`)" if model["untrained"] else f"`{model['source']}`"
    batch = sum(buffers["per_batch"].values())

    def share(size: int) -> str:
        return f"{size / growth:.0%} of the rise" if growth > 0 else "while RSS did not rise"

    larger = "the output-sized buffers" if live >= batch else "one batch's tensors"
    return [
        "## Peak memory for one large request (`memory`)",
        "",
        f"One {_size(config['size'])} PNG ({config['image']}) at {_fmt_scale(config['scale'])} → "
        f"{_size(config['out_size'])}, `{config['width_header']}` (width used: {results['width_used']:.1f}; "
        f"{_rounds(results['tiles'], 'tile')}), {weights}, {model['device']} {model['precision']}. The width "
        "was forced for CPU time; it changes only the channel count of per-batch tensors, not the "
        "output-sized buffers. The server's RSS "
        f"(children included) was sampled at {config['sample_hz']:g} Hz for {config['idle_sampling_s']:g} s "
        "before the request and until it answered; the kernel's peak (VmHWM, main process, reset just before "
        "the request) catches spikes between samples. Buffer sizes are computed from the code's shapes.",
        "",
        *_table(["idle RSS MiB", "peak RSS MiB", "peak − idle MiB", "kernel peak MiB", "wall s"], table),
        "",
        *_table(["buffer", "MiB"], buffer_rows),
        "",
        f"- The request raised the server's RSS by {growth / MIB:.0f} MiB.",
        f"- Alive together at encode time ({live_names}): {live / MIB:.0f} MiB, "
        f"{share(live)}. One batch's largest tensors (encoder feature map, decoder projection, output "
        f"buffer): {batch / MIB:.0f} MiB, {share(batch)}. The larger of the two is {larger}.",
        "",
    ]


#: Short names of request buffers, for the memory section's prose.
SHORT_NAMES = {
    "tile_outputs_uint8": "tile outputs",
    "stitched_output_uint8": "stitched image",
    "output_canvas_uint8": "output image",
    "pillow_encode_copy": "Pillow's copy",
    "response_png": "PNG",
}


def fairness_section(record: Record) -> list[str]:
    config, results = record["config"], record["results"]
    table = []
    for row in results["rows"]:
        idle, loaded = row["idle"], row["loaded"]
        table.append(
            [
                f"`{row['order']}`",
                f"{idle['p50']:.2f}",
                f"{loaded['p50']:.2f}",
                f"{row['ratio_p50']:.2f}×",
                f"{idle['p99']:.2f}",
                f"{loaded['p99']:.2f}",
                f"{row['ratio_p99']:.2f}×",
            ]
        )
    fair = results["rows"][0]
    verdict = "within" if results["within_target"] else "over"
    tiles = fair["tiles_large"]
    tile_size = config["tile_size"] or "default"
    lines = [
        "## Fairness: small requests while large ones run (`fairness`)",
        "",
        f"{config['requests']} sequential {config['small_size']}² requests (one tile) at "
        f"{_fmt_scale(config['scale'])}, first on an idle server, then while {config['large_concurrency']} "
        f"{config['large_size']}² request(s) ({tiles} tiles, tile size {tile_size}) are kept in flight; every "
        f"request forced to width {config['width']:.1f}, so only queueing differs. End-to-end latency at the "
        "client, seconds; `fair` is the server's default queue order, `fifo` the old one.",
        "",
        *_table(["queue order", "idle p50", "loaded p50", "p50 ratio", "idle p99", "loaded p99", "p99 ratio"], table),
        "",
        f"- With fair queuing a small request's p50 is {fair['ratio_p50']:.2f}× its idle p50, {verdict} the aim "
        f"of {results['target_ratio_p50']:.0f}×.",
    ]
    if len(results["rows"]) > 1:
        fifo = results["rows"][1]
        lines.append(
            f"- First in, first out, the same small request waits for the whole large one: {fifo['ratio_p50']:.1f}× "
            "its idle p50."
        )
    return lines + [""]


SECTIONS: dict[str, Callable[[Record], list[str]]] = {
    "widths": widths_section,
    "reference": reference_section,
    "batching": batching_section,
    "overhead": overhead_section,
    "memory": memory_section,
    "fairness": fairness_section,
    "precision": precision_section,
    "bf16_psnr": bf16_psnr_section,
}


def commands_section(records: dict[str, Record]) -> list[str]:
    commands: dict[str, list[str]] = {}
    for part, record in records.items():
        commands.setdefault(record["command"], []).append(part)
    lines = ["Every number below comes from the JSON records in the results folder; to regenerate them:", ""]
    if len(commands) == 1:
        lines += ["```sh", next(iter(commands)), "```"]
    else:
        for command, parts in commands.items():
            lines += [f"- {', '.join(f'`{part}`' for part in parts)}: `{command}`"]
    lines += ["", "`--report-only` re-renders this page from the saved JSON without timing anything.", ""]
    return lines


def render(records: dict[str, Record]) -> str:
    """The whole page: title, commands, machine, then one section per part present, in suite order."""
    if not records:
        raise ValueError("no benchmark records to render; run the suite first")
    lines = [
        "# Benchmarks",
        "",
        "Generated by `python -m benchmarks.suite`: model time per width against the FLOPs model, our "
        "decoder against the reference LIIF, batching gain, server overhead, peak memory, fairness between "
        "small and large requests, default serving against fp32 and bf16's PSNR cost, each against the "
        "machine's matrix-product peak.",
        "",
        *commands_section(records),
    ]
    quick = [part for part, record in records.items() if record["config"].get("quick")]
    if quick:
        lines += [
            f"**Smoke run:** {', '.join(f'`{part}`' for part in quick)} ran with `--quick` (tiny sizes, one "
            "round); those numbers check the pipeline, they do not measure the product.",
            "",
        ]
    lines += machine_section(records)
    lines += peak_section(records)
    for part, section in SECTIONS.items():
        if part in records:
            lines += section(records[part])
            note = None if part in UNTIMED_PARTS else _load_note(records[part])
            if note:
                lines += [note, ""]
    if not any(record["host"].get("accelerator") for record in records.values()):
        lines += gpu_section()
    return "\n".join(lines).rstrip() + "\n"
