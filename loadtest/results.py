"""Results files: one JSON with everything, CSV tables for spreadsheets, and the machine they came from.

Layout of ``results.json`` (``kind: anysr-loadtest``, ``version: 1``)::

    command, started_at, finished_at, machine, workload, plan, capacity, quality,
    runs: [{policy, server, model, steps: [step summary...], overload: {segments, recovery...} | null}]

CSV files beside it: ``steps.csv`` (one row per policy and sweep step), ``overload.csv`` (one row per
policy and overload segment) and ``requests.csv`` (every request of every phase). The report and its
plots are rebuilt from ``results.json`` alone (``anysr loadtest report``), plus the per-request
overload timeline kept in it.
"""

from __future__ import annotations

import csv
import json
import os
import platform
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from loadtest.records import RECORD_COLUMNS, RequestRecord

RESULTS_KIND, RESULTS_VERSION = "anysr-loadtest", 1
#: The server's widths (its API contract); a width outside these still gets a column if it shows up.
WIDTH_LABELS: tuple[str, ...] = ("0.5", "0.7", "0.9", "1.0")

#: Step/segment fields written to the CSV tables, in order (width mix and server split are added after).
SUMMARY_COLUMNS: tuple[str, ...] = (
    "label",
    "rate",
    "target_rps",
    "offered_rps",
    "sent_rps",
    "achieved_rps",
    "goodput_rps",
    "goodput_deadline_s",
    "scheduled",
    "sent",
    "succeeded",
    "good",
    "rejected",
    "errors",
    "client_dropped",
    "latency_p50_s",
    "latency_p90_s",
    "latency_p95_s",
    "latency_p99_s",
    "latency_max_s",
    "latency_mean_s",
    "mean_flops",
    "output_mpix_per_s",
    "psnr_cost_db",
    "server_timing_queue_ms_mean",
    "server_timing_compute_ms_mean",
    "schedule_lag_p99_ms",
    "duration_s",
    "span_s",
)
SERVER_COLUMNS: tuple[str, ...] = (
    "queue_wait_mean_s",
    "compute_mean_s",
    "compute_busy_ratio",
    "batch_mean_tiles",
    "request_mean_s",
    "tiles_dropped",
)


def cpu_model() -> str:
    """The CPU model name from /proc/cpuinfo (Linux), else what ``platform`` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info() -> dict[str, Any]:
    return {
        "hostname": platform.node(),
        "platform": platform.platform(),
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "python": sys.version.split()[0],
    }


def summary_row(summary: Mapping[str, Any], **extra: Any) -> dict[str, Any]:
    """A step/segment summary flattened to one CSV row."""
    row: dict[str, Any] = dict(extra)
    for column in SUMMARY_COLUMNS:
        row[column] = summary.get(column)
    mix = summary.get("width_mix", {})
    for width in sorted({*WIDTH_LABELS, *mix}):
        row[f"width_{width}"] = mix.get(width, 0.0)
    server = summary.get("server") or {}
    for column in SERVER_COLUMNS:
        row[f"server_{column}"] = server.get(column)
    row["outcomes"] = ";".join(f"{key}={value}" for key, value in summary.get("outcomes", {}).items())
    row["error_codes"] = ";".join(f"{key}={value}" for key, value in summary.get("error_codes", {}).items())
    return row


def write_csv(path: Path, rows: Iterable[Mapping[str, Any]]) -> None:
    rows = list(rows)
    columns: list[str] = []
    for row in rows:
        columns += [key for key in row if key not in columns]
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        for row in rows:
            writer.writerow({key: "" if value is None else value for key, value in row.items()})


def timeline(records: Iterable[RequestRecord]) -> list[list[Any]]:
    """Compact per-request rows for the overload plot: [scheduled_s, latency_s, outcome, width]."""
    return [
        [round(r.scheduled_s, 4), None if r.latency_s is None else round(r.latency_s, 4), r.outcome, r.width]
        for r in records
    ]


def write_results(out_dir: Path, results: Mapping[str, Any], records: Iterable[tuple[str, str, RequestRecord]]) -> Path:
    """Write results.json, steps.csv, overload.csv and requests.csv into ``out_dir``; return the JSON path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "results.json"
    path.write_text(json.dumps(results, indent=1, sort_keys=False) + "\n")
    steps, segments = [], []
    for run in results["runs"]:
        for step in run["steps"]:
            steps.append(summary_row(step, policy=run["policy"]))
        overload = run.get("overload")
        if overload:
            for name, segment in overload["segments"].items():
                segments.append(
                    summary_row(
                        segment,
                        policy=run["policy"],
                        segment=name,
                        recovery_time_s=overload["recovery_time_s"] if name == "recovery" else None,
                        recovery_latency_threshold_s=overload["recovery_latency_threshold_s"],
                    )
                )
    write_csv(out_dir / "steps.csv", steps)
    if segments:
        write_csv(out_dir / "overload.csv", segments)
    request_rows = ({"policy": policy, "phase": phase, **record.to_row()} for policy, phase, record in records)
    with (out_dir / "requests.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["policy", "phase", *RECORD_COLUMNS])
        writer.writeheader()
        for row in request_rows:
            writer.writerow({key: "" if value is None else value for key, value in row.items()})
    return path


def load_results(path: Path) -> dict[str, Any]:
    data = json.loads(path.read_text())
    if data.get("kind") != RESULTS_KIND:
        raise ValueError(f"{path} is not an anysr loadtest results file (kind {data.get('kind')!r})")
    if data.get("version") != RESULTS_VERSION:
        raise ValueError(f"{path} has results version {data.get('version')!r}; this tool reads {RESULTS_VERSION}")
    return data
