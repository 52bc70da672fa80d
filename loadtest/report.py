"""The Markdown report: every number comes from ``results.json``; the header gives the command that made it.

Sections: how to regenerate, machine and servers, workload and plan, full-width capacity, one sweep
table per policy, the plots, the overload table with the adaptive-vs-fixed ratios, and the
definitions of every column.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from loadtest.overload import recovery_status
from loadtest.results import WIDTH_LABELS

#: Schedule lag (p99) above which the report warns that the generator could not keep its timeline.
LAG_WARNING_MS = 50.0

DEFINITIONS = """\
- **offered**: requests scheduled per second (open loop: arrivals do not wait for answers);
  **achieved**: successful responses / span (phase start to last response, at least the phase duration).
- **latency** percentiles are over successful requests, from the *scheduled* send time to the last
  byte, so a generator that fell behind is charged, not hidden (schedule lag p99 is reported in the CSV).
- **goodput**: successes within the deadline (the report's goodput deadline, or the request's own
  `X-AnySR-Deadline-Ms` if shorter) per second of the same span as achieved, so goodput <= achieved.
- **rejected**: 429 and 503 answers (per-client cap, queue full, deadline unreachable, draining);
  **errors**: all other failures, client-side timeouts and connection errors included;
  **dropped**: requests not sent because the generator's in-flight cap was reached.
- **widths**: share of successful requests served at each width (from `X-AnySR-Width`);
  **GFLOPs/req**: mean of `X-AnySR-FLOPs`; **MP/s**: output megapixels per second of span.
- **server queue / compute**: from `/metrics` scraped before and after the phase: mean queue wait
  per tile (`anysr_queue_wait_seconds`) and mean model time per batch (`anysr_compute_seconds`),
  with the share of the span the model was busy.
- **PSNR cost**: mean over successful requests of PSNR(width 1.0) - PSNR(width used) at the
  request's scale, from the eval table (dB; blank when no eval file was given).
- **recovery**: seconds after the overload ends until every later request succeeds within
  recovery-factor x the baseline p99 latency ("no baseline" when no baseline request succeeded).
"""


def _num(value: float | None, digits: int = 2) -> str:
    if value is None:
        return "–"
    return f"{value:.{digits}f}"


def _sig(value: float | None) -> str:
    """Three significant digits, for quantities whose scale varies by orders of magnitude (MP/s, GFLOPs)."""
    return "–" if value is None else f"{value:.3g}"


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---:" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def _widths(mix: dict[str, float]) -> str:
    labels = sorted({*WIDTH_LABELS, *mix})
    return " / ".join(f"{100 * mix.get(label, 0.0):.0f}" for label in labels)


def _server(summary: dict[str, Any]) -> str:
    server = summary.get("server")
    if not server:
        return "–"
    queue = server.get("queue_wait_mean_s")
    compute = server.get("compute_mean_s")
    busy = server.get("compute_busy_ratio")
    text = f"{_num(None if queue is None else 1e3 * queue, 0)} / {_num(None if compute is None else 1e3 * compute, 0)}"
    return text + (f" ({100 * busy:.0f}% busy)" if busy is not None else "")


def _row(label: str, summary: dict[str, Any]) -> list[str]:
    flops = summary.get("mean_flops")
    return [
        label,
        _num(summary["offered_rps"]),
        _num(summary["achieved_rps"]),
        _num(summary["goodput_rps"]),
        _num(summary["latency_p50_s"]),
        _num(summary["latency_p90_s"]),
        _num(summary["latency_p95_s"]),
        _num(summary["latency_p99_s"]),
        _num(summary["latency_max_s"]),
        str(summary["rejected"]),
        str(summary["errors"]),
        str(summary["client_dropped"]),
        _widths(summary["width_mix"]),
        _sig(None if flops is None else flops / 1e9),
        _sig(summary["output_mpix_per_s"]),
        _server(summary),
        _num(summary.get("psnr_cost_db")),
    ]


SWEEP_HEADER = [
    "rate",
    "offered/s",
    "achieved/s",
    "goodput/s",
    "p50 s",
    "p90 s",
    "p95 s",
    "p99 s",
    "max s",
    "rejected",
    "errors",
    "dropped",
    "widths % (" + " / ".join(WIDTH_LABELS) + ")",
    "GFLOPs/req",
    "MP/s",
    "server queue / compute ms",
    "PSNR cost dB",
]


def _context(results: dict[str, Any]) -> list[str]:
    machine = results["machine"]
    workload = results["workload"]
    plan = results["plan"]
    lines = [
        f"- Generated {results['started_at']} – {results['finished_at']} on `{machine['hostname']}`: "
        f"{machine['cpu']}, {machine['cpu_count']} logical CPUs, {machine['platform']}, Python {machine['python']}.",
    ]
    for run in results["runs"]:
        model = run.get("model") or {}
        device = f"{model.get('device', '?')} ({model.get('precision', '?')})"
        weights = (
            "**UNTRAINED random weights**" if model.get("untrained") else f"weights sha256 `{model.get('sha256')}`"
        )
        argv = run.get("server", {}).get("argv")
        started = f"; started as `{argv}`" if argv else ""
        lines.append(f"- Server `{run['policy']}`: {device}, {weights}{started}.")
    sizes = ", ".join(f"{s['size'][0]}x{s['size'][1]} (w {s['weight']:g})" for s in workload["images"]["sizes"])
    scales = workload["scales"]
    scale_text = (
        f"uniform {scales['uniform'][0]:g}–{scales['uniform'][1]:g}"
        if "uniform" in scales
        else ", ".join(f"{c['scale']:g} (w {c['weight']:g})" for c in scales["choices"])
    )
    lines.append(
        f"- Workload `{workload['name']}` (seed {workload['seed']}, {workload['arrival']} arrivals): "
        f"{workload['images']['source']} images {sizes or 'as found in the folder'}; scales {scale_text}; "
        f"budget header on {100 * workload['budget']['share']:.0f}% {workload['budget']['values']}; "
        f"deadline header on {100 * workload['deadline']['share']:.0f}% {workload['deadline']['ms']} ms; "
        f"output {workload['output']['format']}."
    )
    lines.append(
        f"- Sweep: {plan['step_s']:g} s per step at rates {', '.join(plan['rates']) or '(none)'}; "
        f"in-flight cap {results['send']['max_in_flight']}, client timeout {results['send']['timeout_s']:g} s, "
        f"goodput deadline {results['goodput_deadline_s']:g} s."
    )
    phases = [step for run in results["runs"] for step in run["steps"]]
    phases += [seg for run in results["runs"] if run.get("overload") for seg in run["overload"]["segments"].values()]
    lags = [phase["schedule_lag_p99_ms"] for phase in phases if phase.get("schedule_lag_p99_ms") is not None]
    if lags:
        worst = max(lags)
        warning = (
            " **The generator fell behind its schedule** (it shares the machine with the server); latencies "
            "include the lag, since they run from the scheduled time."
            if worst > LAG_WARNING_MS
            else ""
        )
        lines.append(f"- Generator schedule lag, p99 of the worst phase: {worst:.0f} ms.{warning}")
    capacity = results.get("capacity")
    if capacity:
        how = (
            f"measured closed-loop at width 1.0 with {capacity['concurrency']} concurrent requests for "
            f"{capacity['duration_s']:.1f} s ({capacity['completed']} completed)"
            if capacity.get("concurrency")
            else "given on the command line"
        )
        lines.append(f"- Full-width capacity: **{capacity['rps']:.3f} requests/s**, {how}.")
    quality = results.get("quality")
    lines.append(
        f"- Quality: PSNR costs from `{quality['source']}` ({', '.join(quality['datasets']) or 'all records'})."
        if quality
        else "- Quality: no eval file given, so the PSNR cost column is blank."
    )
    return lines


def _is_full_width(policy: str) -> bool:
    """``fixed:1.0`` however it was spelled (``fixed:1``, ``fixed:1.00``)."""
    mode, _, width = policy.partition(":")
    try:
        return mode == "fixed" and float(width) == 1.0
    except ValueError:
        return False


def _overload_section(results: dict[str, Any]) -> list[str]:
    runs = [run for run in results["runs"] if run.get("overload")]
    if not runs:
        return []
    rows = []
    for run in runs:
        overload = run["overload"]
        for name, segment in overload["segments"].items():
            row = _row(f"{run['policy']} {name}", segment)
            status = recovery_status(overload["recovery_latency_threshold_s"], overload["recovery_time_s"])
            row.append(status if name == "recovery" else "–")
            rows.append(row)
    lines = ["## Overload and recovery", ""]
    spec = runs[0]["overload"]["spec"]
    lines.append(
        f"Baseline {spec['baseline_s']:g} s at {spec['low_rps']:.2f}/s, then {spec['overload_s']:g} s at "
        f"{spec['overload_rps']:.2f}/s, then {spec['recovery_s']:g} s at {spec['low_rps']:.2f}/s, back to back."
    )
    lines += ["", _table(["policy / segment", *SWEEP_HEADER[1:], "recovery s"], rows), ""]
    by_policy = {run["policy"]: run["overload"]["segments"]["overload"] for run in runs}
    adaptive, fixed = (
        by_policy.get("adaptive"),
        next((segment for policy, segment in by_policy.items() if _is_full_width(policy)), None),
    )
    if adaptive and fixed:
        goodput = adaptive["goodput_rps"] / fixed["goodput_rps"] if fixed["goodput_rps"] else None
        p99 = (
            adaptive["latency_p99_s"] / fixed["latency_p99_s"]
            if adaptive["latency_p99_s"] is not None and fixed["latency_p99_s"]
            else None
        )
        lines += [
            f"adaptive vs fixed:1.0 during overload: goodput ratio **{_num(goodput)}** (target ≥ 1.5), "
            f"p99 latency ratio **{_num(p99)}** (target ≤ 0.5).",
            "",
        ]
    return lines


def _deadline_section(results: dict[str, Any], depth: int) -> list[str]:
    runs = [run for run in results["runs"] if run.get("deadline")]
    if not runs:
        return []
    first = runs[0]["deadline"]
    spec = first["spec"]
    lines = [
        f"{'#' * (depth + 1)} Deadline scenario",
        "",
        f"The overload run twice per policy on the same schedule and the same requests: baseline "
        f"{spec['baseline_s']:g} s at {spec['low_rps']:.2f}/s, {spec['overload_s']:g} s at {spec['overload_rps']:.2f}/s "
        f"(the overload), {spec['recovery_s']:g} s at {spec['low_rps']:.2f}/s; first without headers, then with "
        f"`X-AnySR-Deadline-Ms: {first['deadline_ms']:g}` on every request. Rows are the overload segment. "
        "**admitted** = answered 200 or 504 (a refusal at admission is not admitted); **missed** = 504 among "
        "them; **late 200** = successes that reached the client after the deadline.",
        "",
    ]
    rows = []
    for run in runs:
        deadline = run["deadline"]
        for label, header in (("without", "none"), ("with", f"{deadline['deadline_ms']:g} ms")):
            segment = deadline[label]["segments"]["overload"]
            misses = deadline[label]["misses"]
            ratio = misses["miss_ratio"]
            row = _row(f"{run['policy']}, deadline {header}", segment)
            row += [
                str(misses["admitted"]),
                f"{misses['missed_504']} ({'–' if ratio is None else f'{100 * ratio:.1f}%'})",
                str(misses["late_200"]),
            ]
            rows.append(row)
    lines += [_table(["policy, header", *SWEEP_HEADER[1:], "admitted", "missed (504)", "late 200"], rows), ""]
    for run in runs:
        deadline = run["deadline"]
        misses = deadline["with"]["misses"]
        ratio = misses["miss_ratio"]
        lines.append(
            f"- `{run['policy']}`: goodput with the header {_num(deadline['goodput_ratio'])}× the run without "
            f"(target ≥ 1: {'met' if deadline['goodput_target_met'] else 'not met'}); "
            f"{'–' if ratio is None else f'{100 * ratio:.1f}%'} of admitted requests missed their deadline "
            f"(target ≤ 1%: {'met' if deadline['miss_target_met'] else 'not met'})."
        )
    return lines + [""]


def render_report(results: dict[str, Any], plots: dict[str, Path], report_path: Path, depth: int = 1) -> list[str]:
    """One results document as Markdown lines (plot links relative to ``report_path``'s folder); at
    ``depth`` 2 it is a section of a longer report."""

    def link(name: str, title: str) -> list[str]:
        if name not in plots:
            return []
        return [f"![{title}]({os.path.relpath(plots[name], report_path.parent)})", ""]

    def heading(level: int, text: str) -> list[str]:
        return [f"{'#' * (level + depth - 1)} {text}", ""]

    only_deadline = all(not run["steps"] and not run.get("overload") for run in results["runs"])
    title = "Deadline scenario run" if depth > 1 and only_deadline else "AnySR Serve load test"
    lines = [
        *heading(1, title),
        "Regenerate every number and plot in this " + ("section" if depth > 1 else "report") + " with:",
        "",
        "```",
        results["command"],
        "```",
        "",
        *_context(results),
        "",
    ]
    if any(run["steps"] for run in results["runs"]):
        lines += heading(2, "Rate sweep")
        for run in results["runs"]:
            if run["steps"]:
                lines += heading(3, run["policy"])
                lines += [_table(SWEEP_HEADER, [_row(step["rate"], step) for step in run["steps"]]), ""]
        lines += link("latency_throughput", "Latency vs throughput")
        lines += link("goodput", "Goodput vs offered load")
        lines += link("width_mix", "Width mix vs offered load")
    overload = _overload_section(results)
    if overload:
        lines += heading(2, "Overload and recovery") + overload[2:]
        lines += link("overload_timeline", "Overload timeline")
    lines += _deadline_section(results, depth)
    return lines


def write_report(documents: list[dict[str, Any]], plots: list[dict[str, Path]], report_path: Path) -> Path:
    """One report of every results document in order (the first is the main one), then the definitions."""
    lines: list[str] = []
    for index, (results, document_plots) in enumerate(zip(documents, plots)):
        lines += render_report(results, document_plots, report_path, depth=1 if index == 0 else 2)
    lines += ["## Definitions", "", DEFINITIONS]
    report_path.parent.mkdir(parents=True, exist_ok=True)
    report_path.write_text("\n".join(lines))
    return report_path
