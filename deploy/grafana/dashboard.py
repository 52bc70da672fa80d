"""The Grafana dashboard for AnySR Serve, as code: ``python -m deploy.grafana.dashboard`` writes the JSON.

Grafana's server cannot run where this is built (no image registry, not in Debian), so the dashboard
is plain data made here and checked three ways instead: tests/test_monitoring.py holds the JSON in
the repository to this module's output, checks its structure (ids, layout, datasource) and that every
metric it reads is one the server exports; CI's container test runs every query against a real
Prometheus scraping the real image and requires each to parse and return series.

Panels read the recording rules in deploy/prometheus/rules/ where one exists (the alerts use the same
series), and raw metrics otherwise. ``$instance`` selects processes (one per device); Grafana fills
``$__rate_interval`` from the scrape interval.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: Must match deploy/grafana/provisioning/datasources/prometheus.yml.
DATASOURCE_UID = "anysr-prometheus"
DASHBOARD_UID = "anysr-serve"
OUTPUT = Path(__file__).resolve().parent / "dashboards" / "anysr-serve.json"

#: Every series the dashboard reads carries this selector (the ``instance`` template variable).
SELECT = 'instance=~"$instance"'
#: Grid: Grafana is 24 units wide; two panels per row.
PANEL_WIDTH, PANEL_HEIGHT = 12, 8


@dataclass(frozen=True)
class Query:
    expr: str
    legend: str


@dataclass(frozen=True)
class Panel:
    title: str
    description: str
    unit: str
    queries: tuple[Query, ...]
    stacked_percent: bool = False
    max_value: float | None = None


def rate(metric: str, by: str, extra: str = "") -> str:
    """``sum by (by) (rate(metric{instance, extra}[$__rate_interval]))``."""
    selector = SELECT + (f", {extra}" if extra else "")
    return f"sum by ({by}) (rate({metric}{{{selector}}}[$__rate_interval]))"


def quantile(q: float, histogram: str, by: str) -> str:
    return f"histogram_quantile({q}, sum by ({by}, le) (rate({histogram}_bucket{{{SELECT}}}[$__rate_interval])))"


PANELS: tuple[Panel, ...] = (
    Panel(
        "Request latency by width (p50 / p90 / p99, 5 min)",
        "End-to-end time of successful upscales inside the server, from the recording rules; the worst "
        "instance per width. The AnySRHighP99Latency alert reads the p99 series.",
        "s",
        tuple(
            Query(
                f"max by (width) (instance_width:anysr_request_duration_seconds:{q}_5m{{{SELECT}}})",
                f"{q} {{{{width}}}}",
            )
            for q in ("p50", "p90", "p99")
        ),
    ),
    Panel(
        "Requests per second by width",
        "Successful upscales per second, by the width the scheduler chose.",
        "reqps",
        (Query(rate("anysr_request_duration_seconds_count", "width"), "width {{width}}"),),
    ),
    Panel(
        "Error rate (5xx share) and answers by status",
        "Share of answers that were server-side failures (timeouts, queue full, draining, internal), as the "
        "AnySRErrorRateHigh alert sees it; and every status per second (429: a client over its in-flight limit).",
        "percentunit",
        (
            Query(
                f'sum(rate(anysr_requests_total{{{SELECT}, status=~"5.."}}[$__rate_interval])) '
                f"/ sum(rate(anysr_requests_total{{{SELECT}}}[$__rate_interval]))",
                "5xx share",
            ),
            Query(rate("anysr_requests_total", "status"), "{{status}} /s"),
        ),
    ),
    Panel(
        "FLOP/s run, by width",
        "Model FLOPs per second actually run (halos and overlaps included), and the throughput the "
        "scheduler's deadline predictions use (measured per width, EWMA over batches).",
        "flops",
        (
            Query(rate("anysr_flops_total", "width"), "run, width {{width}}"),
            Query(
                f"avg by (width) (anysr_throughput_flops_per_second{{{SELECT}}})", "measured capacity, width {{width}}"
            ),
        ),
    ),
    Panel(
        "Width mix",
        "Share of scheduler decisions per width: the adaptive policy narrows widths as load rises.",
        "percentunit",
        (Query(rate("anysr_width_selected_total", "width"), "width {{width}}"),),
        stacked_percent=True,
    ),
    Panel(
        "Width decisions by reason",
        "Why the scheduler chose what it chose (idle, queue, cpu_busy, gpu_busy, memory, overload, fixed...).",
        "ops",
        (Query(rate("anysr_width_selected_total", "reason"), "{{reason}}"),),
    ),
    Panel(
        "Queued work",
        "Predicted seconds to finish the tiles queued or running, per instance: what the HPA scales on "
        "(target 0.25 s) and the AnySRQueuedWorkHigh alert watches (2 s).",
        "s",
        (Query(f"max by (instance) (anysr_queue_work_seconds{{{SELECT}}})", "{{instance}}"),),
    ),
    Panel(
        "Queue depth and requests in flight",
        "Tiles queued or running, and upscale requests being handled.",
        "short",
        (
            Query(f"sum by (instance) (anysr_queue_depth_tiles{{{SELECT}}})", "tiles {{instance}}"),
            Query(f"sum by (instance) (anysr_in_flight_requests{{{SELECT}}})", "requests {{instance}}"),
        ),
    ),
    Panel(
        "Batch size",
        "Tiles per batch the model ran: mean and p90. On CPU the default is one tile per batch.",
        "short",
        (
            Query(
                f"sum(rate(anysr_batch_size_tiles_sum{{{SELECT}}}[$__rate_interval])) "
                f"/ sum(rate(anysr_batch_size_tiles_count{{{SELECT}}}[$__rate_interval]))",
                "mean",
            ),
            Query(
                f"histogram_quantile(0.9, sum by (le) (rate(anysr_batch_size_tiles_bucket{{{SELECT}}}[$__rate_interval])))",
                "p90",
            ),
        ),
    ),
    Panel(
        "Queue wait and compute time, p99 by width",
        "Time a tile waited for its batch, and model time of one batch.",
        "s",
        (
            Query(quantile(0.99, "anysr_queue_wait_seconds", "width"), "queue wait {{width}}"),
            Query(quantile(0.99, "anysr_compute_seconds", "width"), "compute {{width}}"),
        ),
    ),
    Panel(
        "GPU and CPU load the scheduler sees",
        "Smoothed GPU utilisation (empty on CPU instances), CPU utilisation of competing processes (the "
        "container's quota when it has one, else the host), and the load level of the latest decision "
        "(0 idle, 1 moderate, 2 heavy, 3 overloaded, right axis scale).",
        "percentunit",
        (
            Query(f"anysr_gpu_utilisation_ratio{{{SELECT}}}", "GPU {{instance}}"),
            Query(f"anysr_cpu_utilisation_ratio{{{SELECT}}}", "CPU (others) {{instance}}"),
            Query(f"anysr_load_level{{{SELECT}}} / 3", "load level / 3 {{instance}}"),
        ),
        max_value=1.0,
    ),
    Panel(
        "GPU memory free",
        "Free memory on each instance's GPU (empty on CPU instances); below min_gpu_free_bytes load counts as heavy.",
        "bytes",
        (Query(f"anysr_gpu_memory_free_bytes{{{SELECT}}}", "{{instance}}"),),
    ),
    Panel(
        "Process CPU and memory",
        "The server process itself: CPU cores used, resident memory, open file descriptors.",
        "short",
        (
            Query(
                f'rate(process_cpu_seconds_total{{job="anysr", {SELECT}}}[$__rate_interval])', "CPU cores {{instance}}"
            ),
            Query(f'process_resident_memory_bytes{{job="anysr", {SELECT}}} / 2^30', "RSS GiB {{instance}}"),
            Query(f'process_open_fds{{job="anysr", {SELECT}}} / 1000', "open fds / 1000 {{instance}}"),
        ),
    ),
    Panel(
        "Up and ready",
        "1 = Prometheus scrapes the instance / it accepts work (0 while warming up or draining).",
        "short",
        (
            Query(f'up{{job="anysr", {SELECT}}}', "up {{instance}}"),
            Query(f"anysr_ready{{{SELECT}}}", "ready {{instance}}"),
        ),
        max_value=1.0,
    ),
)


def panel_json(panel: Panel, panel_id: int) -> dict[str, Any]:
    column, row = (panel_id - 1) % 2, (panel_id - 1) // 2
    custom: dict[str, Any] = {"drawStyle": "line", "lineWidth": 1, "fillOpacity": 10, "showPoints": "never"}
    if panel.stacked_percent:
        custom.update(stacking={"mode": "percent", "group": "A"}, fillOpacity=60)
    defaults: dict[str, Any] = {"unit": panel.unit, "custom": custom}
    if panel.max_value is not None:
        defaults.update(min=0, max=panel.max_value)
    return {
        "id": panel_id,
        "type": "timeseries",
        "title": panel.title,
        "description": panel.description,
        "datasource": {"type": "prometheus", "uid": DATASOURCE_UID},
        "gridPos": {"x": column * PANEL_WIDTH, "y": row * PANEL_HEIGHT, "w": PANEL_WIDTH, "h": PANEL_HEIGHT},
        "fieldConfig": {"defaults": defaults, "overrides": []},
        "options": {"legend": {"displayMode": "list", "placement": "bottom"}, "tooltip": {"mode": "multi"}},
        "targets": [
            {
                "refId": chr(ord("A") + index),
                "datasource": {"type": "prometheus", "uid": DATASOURCE_UID},
                "expr": query.expr,
                "legendFormat": query.legend,
            }
            for index, query in enumerate(panel.queries)
        ],
    }


def dashboard() -> dict[str, Any]:
    """The whole dashboard model, as Grafana's file provisioning reads it."""
    return {
        "uid": DASHBOARD_UID,
        "title": "AnySR Serve",
        "description": "Latency, load, width choices and errors of AnySR Serve instances (one per device).",
        "tags": ["anysr"],
        "editable": False,
        "schemaVersion": 39,
        "version": 1,
        "refresh": "10s",
        "time": {"from": "now-1h", "to": "now"},
        "timezone": "browser",
        "templating": {
            "list": [
                {
                    "name": "instance",
                    "label": "Instance",
                    "type": "query",
                    "datasource": {"type": "prometheus", "uid": DATASOURCE_UID},
                    "query": {"query": "label_values(anysr_ready, instance)", "refId": "instance"},
                    "definition": "label_values(anysr_ready, instance)",
                    "refresh": 2,
                    "multi": True,
                    "includeAll": True,
                    "allValue": ".*",
                    "current": {"selected": True, "text": "All", "value": "$__all"},
                }
            ]
        },
        "panels": [panel_json(panel, index) for index, panel in enumerate(PANELS, start=1)],
    }


def render() -> str:
    return json.dumps(dashboard(), indent=2) + "\n"


def main() -> None:
    OUTPUT.write_text(render())
    print(f"wrote {OUTPUT}")


if __name__ == "__main__":
    main()
