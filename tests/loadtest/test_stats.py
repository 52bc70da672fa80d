"""Summary math: percentiles, rates, goodput with deadlines, width mix, outcomes, recovery time."""

from __future__ import annotations

import pytest

from loadtest.records import RequestRecord
from loadtest.stats import percentile, recovery_time_s, summarise_records


def record(
    index: int,
    scheduled: float,
    latency: float | None,
    outcome: str = "200",
    width: float | None = 1.0,
    **extra: object,
) -> RequestRecord:
    sent = None if outcome == "client_dropped" else scheduled
    finished = None if latency is None else scheduled + latency
    fields = {"scale": 2.0, "input_pixels": 64 * 64} | extra
    ok = outcome == "200"
    return RequestRecord(
        index=index,
        scheduled_s=scheduled,
        outcome=outcome,
        sent_s=sent,
        finished_s=finished,
        width=width if ok else None,
        **fields,  # type: ignore[arg-type]
    )


def test_percentile_interpolates_linearly() -> None:
    assert percentile([4.0, 1.0, 3.0, 2.0], 50) == 2.5
    assert percentile([1.0, 2.0, 3.0, 4.0], 99) == pytest.approx(3.97)
    assert percentile([5.0], 90) == 5.0
    assert percentile([], 50) is None
    with pytest.raises(ValueError, match="between 0 and 100"):
        percentile([1.0], 101)


def test_summary_counts_rates_and_mixes() -> None:
    records = [
        record(0, 0.0, 0.5, width=1.0, flops=100, output_pixels=1_000_000, reason="idle"),
        record(1, 1.0, 1.5, width=0.5, flops=40, output_pixels=500_000, reason="cpu_busy"),
        record(2, 2.0, 12.0, width=0.5, flops=40, output_pixels=500_000, reason="cpu_busy"),  # late: not goodput
        record(3, 3.0, 0.9, width=1.0, flops=100, output_pixels=1_000_000, deadline_ms="800"),  # own deadline missed
        record(4, 4.0, 0.01, outcome="503", error_code="queue_full"),
        record(5, 5.0, 0.01, outcome="429", error_code="too_many_requests"),
        record(6, 6.0, 0.2, outcome="504", error_code="timeout"),
        record(7, 7.0, None, outcome="client_dropped"),
        record(8, 8.0, 60.0, outcome="client_timeout"),
        record(9, 9.0, 0.3, width=0.7, flops=70, output_pixels=1_000_000),
    ]
    summary = summarise_records(records, duration_s=10.0, goodput_deadline_s=10.0)
    assert summary["scheduled"] == 10 and summary["sent"] == 9 and summary["succeeded"] == 5
    assert summary["rejected"] == 2 and summary["client_dropped"] == 1 and summary["errors"] == 2
    assert summary["offered_rps"] == 1.0 and summary["sent_rps"] == 0.9
    span = 8.0 + 60.0  # the client timeout finished last
    assert summary["span_s"] == span
    assert summary["achieved_rps"] == pytest.approx(5 / span)
    assert summary["good"] == 3 and summary["goodput_rps"] == pytest.approx(3 / span)
    assert summary["width_mix"] == {"0.5": 0.4, "0.7": 0.2, "1.0": 0.4}
    assert summary["reasons"] == {"cpu_busy": 2, "idle": 1}
    assert summary["outcomes"] == {
        "200": 5,
        "429": 1,
        "503": 1,
        "504": 1,
        "client_dropped": 1,
        "client_timeout": 1,
    }
    assert summary["error_codes"] == {"queue_full": 1, "timeout": 1, "too_many_requests": 1}
    assert summary["mean_flops"] == pytest.approx(70.0)
    assert summary["output_mpix_per_s"] == pytest.approx(4.0 / span)
    latencies = [0.5, 1.5, 12.0, 0.9, 0.3]
    assert summary["latency_p50_s"] == pytest.approx(0.9)
    assert summary["latency_max_s"] == 12.0
    assert summary["latency_mean_s"] == pytest.approx(sum(latencies) / 5)
    assert summary["psnr_cost_db"] is None


def test_summary_span_is_at_least_the_duration() -> None:
    summary = summarise_records([record(0, 0.0, 0.1)], duration_s=5.0)
    assert summary["span_s"] == 5.0 and summary["achieved_rps"] == 0.2


def test_psnr_cost_is_the_mean_over_successes() -> None:
    records = [record(0, 0.0, 0.1, width=1.0), record(1, 0.1, 0.1, width=0.5), record(2, 0.2, 0.1, outcome="503")]
    summary = summarise_records(records, 1.0, psnr_cost=lambda width, scale: (1.0 - width) * scale)
    assert summary["psnr_cost_db"] == pytest.approx((0.0 + 1.0) / 2)
    unknown = summarise_records(records, 1.0, psnr_cost=lambda width, scale: None if width < 1 else 0.0)
    assert unknown["psnr_cost_db"] is None


def test_empty_phase_has_no_latencies() -> None:
    summary = summarise_records([], 1.0)
    assert summary["latency_p99_s"] is None and summary["achieved_rps"] == 0.0 and summary["width_mix"] == {}


def test_recovery_time() -> None:
    fast, slow = 0.1, 5.0
    all_good = [record(i, 10.0 + i, fast) for i in range(5)]
    assert recovery_time_s(all_good, 10.0, 1.0) == 0.0
    late_then_good = [record(0, 10.0, slow), record(1, 11.0, fast), record(2, 12.5, slow), record(3, 13.0, fast)]
    late_then_good.append(record(4, 14.0, fast))
    assert recovery_time_s(late_then_good, 10.0, 1.0) == pytest.approx(3.0)
    failed_at_end = [record(0, 10.0, fast), record(1, 11.0, 0.01, outcome="503")]
    assert recovery_time_s(failed_at_end, 10.0, 1.0) is None
    before_the_start_is_ignored = [record(0, 5.0, slow), record(1, 10.5, fast)]
    assert recovery_time_s(before_the_start_is_ignored, 10.0, 1.0) == 0.0
    assert recovery_time_s([], 10.0, 1.0) is None
