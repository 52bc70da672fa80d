"""Prometheus metrics, declared once per app on the app's own ``CollectorRegistry``.

One :class:`ServerMetrics` is built by ``create_app``; nothing registers on the global default
registry, so two apps in one process (as in tests) never clash. Names follow ``anysr_<thing>_<unit>``,
counters end in ``_total``, and every label value (widths, reasons, statuses) is created up front so
series report zero before their first event. The registry also carries prometheus_client's standard
``process_*`` collector (resident memory, CPU seconds, open and max file descriptors, start time;
Linux only), read from /proc at scrape time. docs/serving.md lists them all.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector, generate_latest

from models.widths import width_label as format_width
from server.scheduler import REASONS

#: Statuses the upscale route can answer with (499: the client went away before the answer).
STATUSES: tuple[str, ...] = (
    "200",
    "400",
    "401",
    "406",
    "408",
    "413",
    "415",
    "422",
    "429",
    "499",
    "500",
    "503",
    "504",
)

#: End-to-end request latency buckets: CPU upscales take from tens of ms to tens of seconds.
_LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 25.0, 60.0, 120.0)
#: Queue wait is short when idle (the batch wait, a few ms) and grows with load.
_QUEUE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
#: One batch's model time: a small tile on a GPU is ~ms, a large batch on CPU several seconds.
_COMPUTE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
#: Tiles per batch: 1 up to the largest useful max_batch_tiles.
_BATCH_BUCKETS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 64)


def width_label(width: float) -> str:
    """The label value of a width (``0.5``, ``0.7``, ``0.9``, ``1.0``): :func:`models.widths.width_label`."""
    return format_width(width)


class ServerMetrics:
    """All metrics of one app. Attributes are the prometheus_client objects; callers use them directly."""

    def __init__(self, widths: tuple[float, ...] = ()) -> None:
        """``widths``: the model's, when known already (the app declares them once the model is loaded)."""
        self.registry = CollectorRegistry(auto_describe=True)
        registry = self.registry
        # This process's memory, CPU and file descriptors: a leak or fd exhaustion shows here first.
        ProcessCollector(registry=registry)
        self.request_duration = Histogram(
            "anysr_request_duration_seconds",
            "End-to-end time of successful upscale requests inside the server, by width.",
            ["width"],
            buckets=_LATENCY_BUCKETS,
            registry=registry,
        )
        self.queue_wait = Histogram(
            "anysr_queue_wait_seconds",
            "Time a tile waited in the batch queue before its batch started, by width.",
            ["width"],
            buckets=_QUEUE_BUCKETS,
            registry=registry,
        )
        self.compute = Histogram(
            "anysr_compute_seconds",
            "Model time of one batch on the device, by width.",
            ["width"],
            buckets=_COMPUTE_BUCKETS,
            registry=registry,
        )
        self.batch_size = Histogram(
            "anysr_batch_size_tiles",
            "Tiles per batch the model ran.",
            buckets=_BATCH_BUCKETS,
            registry=registry,
        )
        self.requests = Counter(
            "anysr_requests_total",
            "Upscale requests answered, by HTTP status.",
            ["status"],
            registry=registry,
        )
        self.flops = Counter(
            "anysr_flops_total",
            "FLOPs the model ran (tile halos and overlaps included), by width.",
            ["width"],
            registry=registry,
        )
        self.width_selected = Counter(
            "anysr_width_selected_total",
            "Scheduler decisions, by chosen width and reason.",
            ["width", "reason"],
            registry=registry,
        )
        self.tiles_dropped = Counter(
            "anysr_tiles_dropped_total",
            "Queued tiles dropped because their request was cancelled, timed out or disconnected.",
            registry=registry,
        )
        self.queue_depth = Gauge(
            "anysr_queue_depth_tiles", "Tiles waiting in the batch queue or running.", registry=registry
        )
        self.queue_pixels = Gauge("anysr_queue_pixels", "LR pixels of the tiles waiting or running.", registry=registry)
        self.queue_work = Gauge(
            "anysr_queue_work_seconds",
            "Predicted seconds to finish the queued and running work, from measured throughput.",
            registry=registry,
        )
        self.in_flight = Gauge("anysr_in_flight_requests", "Upscale requests being handled.", registry=registry)
        self.cpu_utilisation = Gauge(
            "anysr_cpu_utilisation_ratio",
            "Smoothed CPU utilisation (0-1) by other processes the scheduler sees: within the container's CPU quota "
            "when it has one, else on the host cores this process may use.",
            registry=registry,
        )
        self.gpu_utilisation = Gauge(
            "anysr_gpu_utilisation_ratio",
            "Smoothed GPU utilisation (0-1) the scheduler sees; NaN when not serving on a readable GPU.",
            registry=registry,
        )
        self.gpu_memory_free = Gauge(
            "anysr_gpu_memory_free_bytes",
            "Free GPU memory the scheduler sees; NaN when not serving on a readable GPU.",
            registry=registry,
        )
        self.load_level = Gauge(
            "anysr_load_level",
            "Load level of the latest decision: 0 idle, 1 moderate, 2 heavy.",
            registry=registry,
        )
        self.throughput = Gauge(
            "anysr_throughput_flops_per_second",
            "Measured model throughput per width (warm-up, then EWMA over batches).",
            ["width"],
            registry=registry,
        )
        self.prediction_calibration = Gauge(
            "anysr_prediction_calibration_ratio",
            "Factor applied to predicted device seconds at admission, learned from measured completions.",
            registry=registry,
        )
        self.ready = Gauge(
            "anysr_ready", "1 when warmed up and accepting work, 0 while starting or draining.", registry=registry
        )
        for status in STATUSES:
            self.requests.labels(status=status)
        self.prediction_calibration.set(1.0)
        self.gpu_utilisation.set(float("nan"))
        self.gpu_memory_free.set(float("nan"))
        self.declare_widths(widths)

    def declare_widths(self, widths: tuple[float, ...]) -> None:
        """Create every per-width series at zero once the model (and so its width set) is known, so
        dashboards and rates see all widths from the first scrape."""
        for width in widths:
            label = width_label(width)
            for family in (self.request_duration, self.queue_wait, self.compute, self.flops, self.throughput):
                family.labels(width=label)
            for reason in REASONS:
                self.width_selected.labels(width=label, reason=reason)

    def render(self) -> bytes:
        """The registry in Prometheus text exposition format."""
        return generate_latest(self.registry)

    def count_request(self, status: int) -> None:
        """Count one answered upscale request; unexpected statuses are counted as themselves."""
        self.requests.labels(status=str(status)).inc()
