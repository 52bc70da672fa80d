"""Metrics deltas: parse two scrapes with prometheus_client's parser and difference histogram sums/counts."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from loadtest.scrape import by_label, delta, parse_metrics, summarise_delta, total


def server_like_registry() -> tuple[CollectorRegistry, dict[str, object]]:
    registry = CollectorRegistry()
    metrics = {
        "queue": Histogram("anysr_queue_wait_seconds", "q", ["width"], registry=registry),
        "compute": Histogram("anysr_compute_seconds", "c", ["width"], registry=registry),
        "duration": Histogram("anysr_request_duration_seconds", "d", ["width"], registry=registry),
        "batch": Histogram("anysr_batch_size_tiles", "b", buckets=(1, 2, 4, 8), registry=registry),
        "requests": Counter("anysr_requests_total", "r", ["status"], registry=registry),
        "selected": Counter("anysr_width_selected_total", "s", ["width", "reason"], registry=registry),
        "flops": Counter("anysr_flops_total", "f", ["width"], registry=registry),
        "dropped": Counter("anysr_tiles_dropped_total", "t", registry=registry),
        "depth": Gauge("anysr_queue_depth_tiles", "g", registry=registry),
    }
    return registry, metrics


def test_parse_keys_samples_by_name_and_labels() -> None:
    text = (
        "# TYPE anysr_requests_total counter\n"
        'anysr_requests_total{status="200"} 7.0\n'
        'anysr_requests_total{status="503"} 2.0\n'
        "# TYPE anysr_queue_depth_tiles gauge\n"
        "anysr_queue_depth_tiles 3.0\n"
    )
    samples = parse_metrics(text)
    assert samples[("anysr_requests_total", (("status", "200"),))] == 7.0
    assert samples[("anysr_queue_depth_tiles", ())] == 3.0
    assert total(samples, "anysr_requests_total") == 9.0
    assert total(samples, "anysr_requests_total", status="503") == 2.0
    assert by_label(samples, "anysr_requests_total", "status") == {"200": 7.0, "503": 2.0}


def test_delta_of_two_scrapes_gives_the_phase_split() -> None:
    registry, m = server_like_registry()
    m["queue"].labels(width="1.0").observe(9.0)  # before the phase: must not count
    m["requests"].labels(status="200").inc()
    before = parse_metrics(generate_latest(registry).decode())

    for wait in (0.1, 0.3):
        m["queue"].labels(width="1.0").observe(wait)
    m["queue"].labels(width="0.5").observe(0.2)
    m["compute"].labels(width="1.0").observe(0.5)
    m["compute"].labels(width="0.5").observe(0.25)
    m["duration"].labels(width="1.0").observe(1.0)
    m["duration"].labels(width="0.5").observe(2.0)
    m["batch"].observe(2)
    m["batch"].observe(1)
    m["requests"].labels(status="200").inc(2)
    m["requests"].labels(status="503").inc()
    m["selected"].labels(width="0.5", reason="cpu_busy").inc()
    m["selected"].labels(width="1.0", reason="idle").inc()
    m["flops"].labels(width="1.0").inc(1e9)
    m["dropped"].inc(4)
    m["depth"].set(5)
    after = parse_metrics(generate_latest(registry).decode())

    split = summarise_delta(delta(before, after), span_s=2.5)
    assert split["tiles_queued"] == 3
    assert split["queue_wait_mean_s"] == pytest.approx(0.2)
    assert split["batches"] == 2 and split["compute_mean_s"] == pytest.approx(0.375)
    assert split["compute_busy_s"] == pytest.approx(0.75) and split["compute_busy_ratio"] == pytest.approx(0.3)
    assert split["batch_mean_tiles"] == pytest.approx(1.5)
    assert split["request_mean_s"] == pytest.approx(1.5)
    assert split["requests_by_status"] == {"200": 2, "503": 1}
    assert split["width_selected"] == {"0.5": 1, "1.0": 1}
    assert split["reasons"] == {"cpu_busy": 1, "idle": 1}
    assert split["flops_by_width"] == {"1.0": 1e9}
    assert split["tiles_dropped"] == 4


def test_an_idle_phase_has_no_means() -> None:
    registry, _ = server_like_registry()
    scrape = parse_metrics(generate_latest(registry).decode())
    split = summarise_delta(delta(scrape, scrape), span_s=1.0)
    assert split["queue_wait_mean_s"] is None and split["compute_busy_ratio"] == 0.0
    assert split["requests_by_status"] == {}
