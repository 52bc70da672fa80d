"""Summary statistics of one load phase: rates, latency percentiles, outcomes, widths, goodput.

Definitions (the report repeats them):

- *offered* rate: requests scheduled / phase duration (what the schedule asked for);
- *sent* rate: requests actually sent (scheduled minus ``client_dropped``) / duration;
- *achieved* rate: successful (200) responses / span, where the span runs from the phase start to
  the last response (at least the duration), so a backlog that drains after the schedule ends
  lowers the achieved rate instead of being ignored;
- latency percentiles: over successful requests, from the scheduled send time to the last byte,
  linear interpolation between order statistics (numpy's default);
- *goodput*: successful responses within their deadline per second of the same span (so goodput
  never exceeds the achieved rate); the deadline is ``goodput_deadline_s`` (default 10 s), or the
  request's own ``X-AnySR-Deadline-Ms`` if shorter;
- rejections: 429 and 503 answers; errors: every other non-200 outcome, client-side ones included.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from loadtest.records import CLIENT_DROPPED, REJECTION_STATUSES, RequestRecord

PERCENTILES: tuple[int, ...] = (50, 90, 95, 99)
DEFAULT_GOODPUT_DEADLINE_S = 10.0


def percentile(values: Sequence[float], q: float) -> float | None:
    """The ``q``-th percentile (0-100) with linear interpolation; None for no values."""
    if not 0 <= q <= 100:
        raise ValueError(f"percentile must be between 0 and 100, got {q}")
    if len(values) == 0:
        return None
    return float(np.percentile(np.asarray(values, dtype=np.float64), q))


def width_label(width: float) -> str:
    return f"{width:.1f}"


def _mean(values: Sequence[float]) -> float | None:
    return float(np.mean(values)) if len(values) else None


def within_deadline(record: RequestRecord, goodput_deadline_s: float) -> bool:
    """A success whose latency fits the goodput deadline and its own deadline header, if any."""
    if not record.ok or record.latency_s is None:
        return False
    limit = goodput_deadline_s
    if record.deadline_ms is not None:
        limit = min(limit, float(record.deadline_ms) / 1e3)
    return record.latency_s <= limit


def summarise_records(
    records: Sequence[RequestRecord],
    duration_s: float,
    goodput_deadline_s: float = DEFAULT_GOODPUT_DEADLINE_S,
    psnr_cost: Callable[[float, float], float | None] | None = None,
) -> dict[str, Any]:
    """One flat-ish dict of a phase's statistics (JSON-ready; nested dicts for mixes and counts).

    ``psnr_cost(width, scale)`` gives the dB lost against full width; its mean over successes is the
    phase's quality cost (None when not given or unknown for some request).
    """
    if duration_s <= 0:
        raise ValueError(f"duration must be positive, got {duration_s}")
    successes = [r for r in records if r.ok]
    latencies = [r.latency_s for r in successes if r.latency_s is not None]
    finished = [r.finished_s for r in records if r.finished_s is not None]
    span_s = max([duration_s, *finished])
    outcomes = Counter(r.outcome for r in records)
    rejected = sum(outcomes[status] for status in REJECTION_STATUSES)
    dropped = outcomes[CLIENT_DROPPED]
    errors = len(records) - len(successes) - rejected - dropped
    widths = Counter(width_label(r.width) for r in successes if r.width is not None)
    flops = [float(r.flops) for r in successes if r.flops is not None]
    output_pixels = sum(r.output_pixels or 0 for r in successes)
    lags = [r.lag_s for r in records if r.lag_s is not None]
    good = sum(within_deadline(r, goodput_deadline_s) for r in records)
    summary: dict[str, Any] = {
        "duration_s": duration_s,
        "span_s": span_s,
        "scheduled": len(records),
        "sent": len(records) - dropped,
        "succeeded": len(successes),
        "rejected": rejected,
        "errors": errors,
        "client_dropped": dropped,
        "offered_rps": len(records) / duration_s,
        "sent_rps": (len(records) - dropped) / duration_s,
        "achieved_rps": len(successes) / span_s,
        "goodput_rps": good / span_s,
        "goodput_deadline_s": goodput_deadline_s,
        "good": good,
        "latency_mean_s": _mean(latencies),
        "latency_max_s": max(latencies) if latencies else None,
        "width_mix": {label: count / len(successes) for label, count in sorted(widths.items())},
        "reasons": dict(sorted(Counter(r.reason for r in successes if r.reason).items())),
        "outcomes": dict(sorted(outcomes.items())),
        "error_codes": dict(sorted(Counter(r.error_code for r in records if r.error_code).items())),
        "mean_flops": _mean(flops),
        "output_mpix_per_s": output_pixels / 1e6 / span_s,
        "server_timing_queue_ms_mean": _mean([r.server_queue_ms for r in successes if r.server_queue_ms is not None]),
        "server_timing_compute_ms_mean": _mean(
            [r.server_compute_ms for r in successes if r.server_compute_ms is not None]
        ),
        "schedule_lag_p99_ms": None if not lags else 1e3 * (percentile(lags, 99) or 0.0),
        "psnr_cost_db": None,
    }
    for q in PERCENTILES:
        summary[f"latency_p{q}_s"] = percentile(latencies, q)
    if psnr_cost is not None and successes:
        costs = [psnr_cost(r.width, r.scale) if r.width is not None else None for r in successes]
        known = [cost for cost in costs if cost is not None and math.isfinite(cost)]
        summary["psnr_cost_db"] = float(np.mean(known)) if len(known) == len(costs) else None
    return summary


def recovery_time_s(
    records: Sequence[RequestRecord], recovery_start_s: float, latency_threshold_s: float
) -> float | None:
    """Seconds from ``recovery_start_s`` until every later-scheduled request succeeds within the threshold.

    Looks at requests scheduled at or after ``recovery_start_s`` in schedule order: the answer is the
    scheduled time (relative to the start) of the first request from which all are good; 0 when all
    are; None when the last one is not (not recovered within the phase) or there are none.
    """
    phase = sorted((r for r in records if r.scheduled_s >= recovery_start_s), key=lambda r: r.scheduled_s)
    if not phase:
        return None
    first_good = len(phase)
    for position in range(len(phase) - 1, -1, -1):
        record = phase[position]
        latency = record.latency_s
        if not record.ok or latency is None or latency > latency_threshold_s:
            break
        first_good = position
    if first_good == len(phase):
        return None
    return 0.0 if first_good == 0 else phase[first_good].scheduled_s - recovery_start_s
