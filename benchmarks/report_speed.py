"""The page's speed sections: each part against the machine's matrix-product peak, default serving
against fp32 (``precision``), and what bf16 costs in PSNR (``bf16_psnr``).

Pure, like :mod:`benchmarks.report`: records in, Markdown lines out. A part's achieved rate is the FLOPs
model's count over its median time; the peak is the one measured at the start of the same suite run
(``host.matmul_peak``), for the precision the part ran in, so a share never mixes two runs or two
precisions.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Callable
from typing import Any

from benchmarks.host import matrix_flags
from benchmarks.peak import peak_gflops

Record = dict[str, Any]
#: Parts whose results are not timings, so the load on the host does not make them noisy.
UNTIMED_PARTS = frozenset({"bf16_psnr"})
#: One achieved rate: (what was measured, precision, GFLOP/s of each row or request).
Achieved = tuple[str, str, list[float]]


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]


def _widths(record: Record) -> list[Achieved]:
    rows = [row for case in record["results"]["cases"] for row in case["rows"]]
    full = [row["gflops_per_s"] for row in rows if row["width"] == 1.0]
    narrower = [row["gflops_per_s"] for row in rows if row["width"] != 1.0]
    dtype = record["config"].get("dtype", "fp32")
    return [("`AnySR.upscale`, width 1.0", dtype, full), ("`AnySR.upscale`, narrower widths", dtype, narrower)]


def _reference(record: Record) -> list[Achieved]:
    rates = [row["flops"] / row["upscale_time_s"] / 1e9 for row in record["results"]["rows"]]
    return [("`AnySR.upscale`, width 1.0", record["config"].get("dtype", "fp32"), rates)]


def _batching(record: Record) -> list[Achieved]:
    rates = [row["gflops_per_s"] for row in record["results"]["rows"]]
    return [("`ModelRunner.run_batch`, every batch size", record["config"]["precision"], rates)]


def _overhead(record: Record) -> list[Achieved]:
    results = record["results"]
    rates = [row["flops"] / row["model_s"] / 1e9 for row in results["requests"] if row.get("flops")]
    return [("server `compute`", results["model"]["precision"], rates)] if rates else []


def _memory(record: Record) -> list[Achieved]:
    results = record["results"]
    compute = results.get("server_timing_s", {}).get("compute")
    if not results.get("flops") or not compute:
        return []
    return [("server `compute`, one large request", results["model"]["precision"], [results["flops"] / compute / 1e9])]


def _precision(record: Record) -> list[Achieved]:
    results = record["results"]
    resolved = results["resolved_precision"]
    rows: list[Achieved] = []
    for name, entry in results["paths"].items():
        if "gflops_per_s" not in entry:
            continue
        precision = resolved if name == "served_default" else name.split("_", 1)[1]
        what = PATH_NAMES.get(name, name)
        rows.append((what, precision, [entry["gflops_per_s"]]))
    return rows


#: How each part's achieved GFLOP/s is read from its record (parts not listed have none).
ACHIEVED: dict[str, Callable[[Record], list[Achieved]]] = {
    "widths": _widths,
    "reference": _reference,
    "batching": _batching,
    "overhead": _overhead,
    "memory": _memory,
    "precision": _precision,
}

PATH_NAMES = {
    "served_default": "served, default settings (end to end)",
    "served_fp32": "served, `--precision fp32` (end to end)",
    "model_bf16": "model alone, bf16",
    "model_fp32": "model alone, fp32",
}


def _count(count: int, noun: str) -> str:
    return f"{count} {noun}" + ("" if count == 1 else "s")


def _rate_text(rates: list[float]) -> str:
    if len(rates) == 1:
        return f"{rates[0]:.1f}"
    return f"{statistics.median(rates):.1f} ({min(rates):.1f}–{max(rates):.1f})"


def peak_section(records: dict[str, Record]) -> list[str]:
    """The peaks each run measured, then every part's achieved rate as a share of its precision's peak."""
    with_peak = {part: record for part, record in records.items() if record["host"].get("matmul_peak")}
    if not with_peak:
        return []
    runs: dict[str, tuple[list[str], Record]] = {}
    for part, record in with_peak.items():  # parts of one suite run share one measured peak
        key = json.dumps(record["host"]["matmul_peak"], sort_keys=True)
        runs.setdefault(key, ([], record))[0].append(part)
    peak_rows = []
    for parts, record in runs.values():
        host, peak = record["host"], record["host"]["matmul_peak"]
        flags = ", ".join(matrix_flags(host.get("cpu_flags", []))) or "none recorded"
        peak_rows.append(
            [
                ", ".join(f"`{part}`" for part in parts),
                peak["device"],
                f"{peak['fp32']['gflops_per_s']:.0f} ({peak['fp32']['size']}²)",
                f"{peak['bf16']['gflops_per_s']:.0f} ({peak['bf16']['size']}²)",
                flags,
            ]
        )
    share_rows = []
    for part, record in with_peak.items():
        for what, precision, rates in ACHIEVED.get(part, lambda _: [])(record):
            if not rates:
                continue
            peak = peak_gflops(record["host"]["matmul_peak"], precision)
            share = "n/a" if not peak else f"{statistics.median(rates) / peak:.0%}"
            peak_text = "n/a" if not peak else f"{peak:.0f}"
            share_rows.append([f"`{part}`", what, precision, _rate_text(rates), peak_text, share])
    lines = [
        "## Against the machine's peak",
        "",
        "Each suite run first times square `torch.mm` products in fp32 and bf16 on the parts' device "
        "(`benchmarks/peak.py`: the fastest run of the fastest of a few sizes, shown beside each peak), with the "
        "parts' threads. That is the matrix-product ceiling the model's own products can reach on this host. "
        "Each part's achieved rate (FLOPs model count / median time; median and range over its rows) is "
        "then shown as a share of the peak of its own precision from the same run. The CPU's matrix flags "
        "come from `/proc/cpuinfo` (every record keeps all of them).",
        "",
        *_table(["parts (one run)", "device", "fp32 peak GFLOP/s", "bf16 peak GFLOP/s", "CPU matrix flags"], peak_rows),
        "",
    ]
    if share_rows:
        header = ["part", "what", "precision", "achieved GFLOP/s", "peak GFLOP/s", "share of peak"]
        lines += [*_table(header, share_rows), ""]
    return lines


def precision_section(record: Record) -> list[str]:
    config, results = record["config"], record["results"]
    resolved = results["resolved_precision"]
    default = results["servers"]["served_default"]
    rows = []
    for name, entry in results["paths"].items():
        precision = resolved if name == "served_default" else name.split("_", 1)[1]
        time_s = entry["time_s"]
        compute = entry.get("compute_s")
        rows.append(
            [
                PATH_NAMES.get(name, name),
                precision,
                f"{time_s['median']:.3f}",
                f"{time_s['min']:.3f}–{time_s['max']:.3f}",
                "–" if compute is None else f"{compute['median']:.3f}",
                f"{entry['gflops_per_s']:.1f}" if "gflops_per_s" in entry else "–",
            ]
        )
    speedup, target = results["served_speedup"], results["speedup_target"]
    verdict = "meets" if speedup >= target else "misses"
    lines = [
        "## Default serving against fp32 (`precision`)",
        "",
        f"Two `anysr serve` processes side by side, one with default settings and one with `--precision fp32`, "
        f"each sent the same {config['size'][0]}×{config['size'][1]} PNG ({config['image']}) at "
        f"×{config['scale']:g} with `X-AnySR-Budget: width={config['width']:.1f}` (one tile), one request at a "
        f"time; the model alone is `AnySR.upscale` on the same decoded image in this process. "
        f"{_count(config['rounds'], 'round')} after {config['warmup_rounds']} untimed, one call of every path per "
        "round "
        "in rotating order, medians reported.",
        "",
        *_table(["path", "precision", "median s", "range s", "server compute s", "GFLOP/s"], rows),
        "",
        f"- Default settings resolved to **{resolved}**: {default['precision_reason']}.",
        f"- Default serving is **{speedup:.2f}×** as fast as fp32 serving end to end ({verdict} the issue's "
        f"{target:g}× target); the model alone gains {results['model_speedup']:.2f}×. From each path's fastest "
        f"run (the least disturbed on a shared host): {results['served_speedup_fastest']:.2f}× served, "
        f"{results['model_speedup_fastest']:.2f}× the model alone.",
    ]
    for name, gap in results["gaps"].items():
        over = gap["end_to_end_over_model"] > results["gap_bound"]
        lines.append(
            f"- {PATH_NAMES[name].split(' (')[0].capitalize()}: end to end {gap['end_to_end_over_model']:+.1%} "
            f"against the model alone in {gap['precision']}, the server's compute {gap['compute_over_model']:+.1%} "
            f"(fastest runs: {gap['fastest_end_to_end_over_model']:+.1%} and {gap['fastest_compute_over_model']:+.1%})"
            + (f" (over the {results['gap_bound']:.0%} bound: see docs/serving.md)" if over else "")
            + "."
        )
    return [*lines, ""]


def bf16_psnr_section(record: Record) -> list[str]:
    config, results = record["config"], record["results"]
    rows = [
        [
            row["dataset"],
            f"×{row['scale']}",
            row["row"],
            str(row["images"]),
            f"{row['fp32_psnr']:.3f}",
            f"{row['bf16_psnr']:.3f}",
            f"{row['delta_db']:+.4f}",
            f"{row['max_image_delta_db']:.4f}",
        ]
        for row in results["rows"]
    ]
    worst = results["worst"]
    verdict = "within" if results["within_bound"] else "over"
    header = ["dataset", "scale", "row", "images", "fp32 dB", "bf16 dB", "Δ dB", "max |Δ| of one image"]
    return [
        "## bf16 against fp32 PSNR (`bf16_psnr`)",
        "",
        f"The weights `{config['weights']}` scored by `anysr eval`'s protocol ({config.get('device') or 'cpu'}) "
        "once with fp32 compute and once with bf16, image by image; `auto` is the scale-group width. "
        "Δ = bf16 − fp32 of the dataset mean.",
        "",
        *_table(header, rows),
        "",
        f"- Largest |Δ| of a dataset mean: **{abs(results['worst_mean_delta_db']):.4f} dB** ({worst['dataset']} "
        f"×{worst['scale']} {worst['row']}), {verdict} the {results['bound_db']} dB bound that lets "
        f"`precision=auto` pick bf16; largest change of any one image: {results['worst_image_delta_db']:.4f} dB.",
        "",
    ]


def gpu_section() -> list[str]:
    """Where the GPU numbers will come from: none of this page's parts has run on a GPU yet."""
    return [
        "## GPU",
        "",
        "No GPU measurements yet: no session of this project has had a GPU to serve on. "
        "`python3 -m benchmarks.gpu` measures everything issue 13 asks of a card (model throughput per width "
        "and precision, the runner's batching gain, bf16's PSNR cost, a profile, the load tester's policy "
        "comparison with NVML readings, and the scheduler's GPU signal) in one command of about 7 minutes; "
        "[gpu-benchmark.md](gpu-benchmark.md) says how to run it with the device tool.",
        "",
    ]
