"""server/metrics.py: names, labels created up front, one registry per app."""

from __future__ import annotations

import re

from prometheus_client.parser import text_string_to_metric_families

from models.widths import WIDTHS
from server.metrics import STATUSES, ServerMetrics
from server.scheduler import REASONS

NAME = re.compile(
    r"^anysr_[a-z_]+_(seconds|total|tiles|bytes|ratio|pixels|requests|second|level|ready)$|^anysr_[a-z_]+$"
)


def families(metrics: ServerMetrics) -> dict:
    return {family.name: family for family in text_string_to_metric_families(metrics.render().decode())}


def test_two_instances_do_not_clash_and_start_at_zero():
    first, second = ServerMetrics(WIDTHS), ServerMetrics(WIDTHS)
    first.flops.labels(width="1.0").inc(5)
    assert second.registry.get_sample_value("anysr_flops_total", {"width": "1.0"}) == 0.0


def test_every_label_combination_exists_before_any_event():
    metrics = ServerMetrics(WIDTHS)
    registry = metrics.registry
    for width in ("0.5", "0.7", "0.9", "1.0"):
        for reason in REASONS:
            assert registry.get_sample_value("anysr_width_selected_total", {"width": width, "reason": reason}) == 0
        assert registry.get_sample_value("anysr_flops_total", {"width": width}) == 0
        assert registry.get_sample_value("anysr_request_duration_seconds_count", {"width": width}) == 0
        assert registry.get_sample_value("anysr_queue_wait_seconds_count", {"width": width}) == 0
        assert registry.get_sample_value("anysr_compute_seconds_count", {"width": width}) == 0
    for status in STATUSES:
        assert registry.get_sample_value("anysr_requests_total", {"status": status}) == 0


def test_widths_are_the_models_own():
    metrics = ServerMetrics()
    assert metrics.registry.get_sample_value("anysr_flops_total", {"width": "0.8"}) is None
    metrics.declare_widths((0.7, 0.8, 0.9, 1.0))
    assert metrics.registry.get_sample_value("anysr_flops_total", {"width": "0.8"}) == 0
    assert metrics.registry.get_sample_value("anysr_flops_total", {"width": "0.5"}) is None


def test_names_follow_the_convention_and_have_help():
    found = families(ServerMetrics(WIDTHS))
    expected = {
        "anysr_request_duration_seconds",
        "anysr_queue_wait_seconds",
        "anysr_compute_seconds",
        "anysr_batch_size_tiles",
        "anysr_requests",
        "anysr_flops",
        "anysr_width_selected",
        "anysr_tiles_dropped",
        "anysr_queue_depth_tiles",
        "anysr_queue_pixels",
        "anysr_queue_work_seconds",
        "anysr_in_flight_requests",
        "anysr_cpu_utilisation_ratio",
        "anysr_gpu_utilisation_ratio",
        "anysr_gpu_memory_free_bytes",
        "anysr_load_level",
        "anysr_throughput_flops_per_second",
        "anysr_ready",
    }
    assert expected <= set(found)
    process = {name for name in found if name.startswith("process_")}
    assert {"process_resident_memory_bytes", "process_open_fds", "process_cpu_seconds"} <= process
    for name, family in found.items():
        assert name.startswith("anysr_") or name in process
        assert family.documentation
        if family.type == "counter":
            assert any(sample.name.endswith("_total") for sample in family.samples)


def test_count_request_accepts_unlisted_statuses():
    metrics = ServerMetrics()
    metrics.count_request(404)
    assert metrics.registry.get_sample_value("anysr_requests_total", {"status": "404"}) == 1
