"""The server's own view of a phase: scrape ``/metrics`` before and after, and difference the counters.

Parsing uses ``prometheus_client.parser`` (the reference text-format parser). Samples become a flat
mapping ``(sample name, sorted labels) → value``; the difference of two scrapes gives, per phase,
how many tiles waited how long in the queue, how much model time the batches took, how many
requests the server answered by status and which widths it chose. The metric names are those the
server declares in ``server/metrics.py`` (documented in docs/serving.md); this module does not import
the server, it only knows the names.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

QUEUE_WAIT = "anysr_queue_wait_seconds"
COMPUTE = "anysr_compute_seconds"
REQUEST_DURATION = "anysr_request_duration_seconds"
BATCH_SIZE = "anysr_batch_size_tiles"
REQUESTS = "anysr_requests_total"
WIDTH_SELECTED = "anysr_width_selected_total"
FLOPS = "anysr_flops_total"
TILES_DROPPED = "anysr_tiles_dropped_total"

Labels = tuple[tuple[str, str], ...]
Samples = dict[tuple[str, Labels], float]


def parse_metrics(text: str) -> Samples:
    """Every sample of a Prometheus text exposition, keyed by (sample name, sorted label pairs)."""
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = float(sample.value)
    return samples


def delta(before: Samples, after: Samples) -> Samples:
    """``after - before`` for every sample in ``after`` (a series missing before counts from zero).

    Meaningful for counters and histogram ``_sum``/``_count``/``_bucket`` samples; gauges are differenced
    too but callers ignore them.
    """
    return {key: value - before.get(key, 0.0) for key, value in after.items()}


def total(samples: Samples, name: str, **labels: str) -> float:
    """Sum of the samples called ``name`` whose labels include ``labels``."""
    wanted = set(labels.items())
    return sum(value for (sample, pairs), value in samples.items() if sample == name and wanted <= set(pairs))


def by_label(samples: Samples, name: str, label: str) -> dict[str, float]:
    """Samples called ``name`` summed per value of ``label`` (zeros dropped)."""
    found: dict[str, float] = {}
    for (sample, pairs), value in samples.items():
        if sample == name:
            key = dict(pairs).get(label)
            if key is not None:
                found[key] = found.get(key, 0.0) + value
    return {key: value for key, value in sorted(found.items()) if value}


def _ratio(numerator: float, denominator: float) -> float | None:
    return numerator / denominator if denominator else None


def summarise_delta(changes: Mapping[tuple[str, Labels], float], span_s: float) -> dict[str, Any]:
    """The server-side split of one phase from a scrape difference.

    ``queue_wait_mean_s`` is per tile (the queue holds tiles), ``compute_mean_s`` per batch, and
    ``compute_busy_ratio`` the model's busy time over the phase span (above 1 cannot happen with one
    inference thread; near 1 means the model never idled).
    """
    samples = dict(changes)
    queue_sum, queue_count = total(samples, QUEUE_WAIT + "_sum"), total(samples, QUEUE_WAIT + "_count")
    compute_sum, compute_count = total(samples, COMPUTE + "_sum"), total(samples, COMPUTE + "_count")
    request_sum, request_count = total(samples, REQUEST_DURATION + "_sum"), total(samples, REQUEST_DURATION + "_count")
    batch_sum, batch_count = total(samples, BATCH_SIZE + "_sum"), total(samples, BATCH_SIZE + "_count")
    return {
        "tiles_queued": queue_count,
        "queue_wait_mean_s": _ratio(queue_sum, queue_count),
        "batches": compute_count,
        "compute_mean_s": _ratio(compute_sum, compute_count),
        "compute_busy_s": compute_sum,
        "compute_busy_ratio": _ratio(compute_sum, span_s),
        "batch_mean_tiles": _ratio(batch_sum, batch_count),
        "request_mean_s": _ratio(request_sum, request_count),
        "requests_by_status": {key: int(value) for key, value in by_label(samples, REQUESTS, "status").items()},
        "width_selected": {key: int(value) for key, value in by_label(samples, WIDTH_SELECTED, "width").items()},
        "reasons": {key: int(value) for key, value in by_label(samples, WIDTH_SELECTED, "reason").items()},
        "flops_by_width": by_label(samples, FLOPS, "width"),
        "tiles_dropped": total(samples, TILES_DROPPED),
    }


async def scrape(client: httpx.AsyncClient, base_url: str) -> Samples | None:
    """GET ``/metrics`` and parse it; None (not an exception) if the server does not answer it."""
    try:
        response = await client.get(f"{base_url}/metrics")
    except httpx.HTTPError:
        return None
    if response.status_code != 200:
        return None
    return parse_metrics(response.text)
