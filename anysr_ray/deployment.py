"""The same app ``anysr serve`` runs, as replicas of a Ray Serve deployment.

Each replica builds the app with ``create_app(Settings(...))`` inside its own Ray actor, and Ray Serve
runs the app's lifespan there (load, warm-up, batcher, load sampler; drain on shutdown), so a replica
is exactly one ``anysr serve`` process: one model on one device, batching its own tiles, choosing
widths from its own load. The deployment rules of docs/deploy.md hold here too:

- **One replica per GPU** (``gpus_per_replica=1``, the default): the scheduler reads *its* device's
  load and batches *its* queue; sharing a GPU between replicas breaks both.
- **Autoscaling** on Ray's count of ongoing requests per replica (``autoscaling="ongoing"``), or on
  the server's own predicted queued work (``autoscaling="queued_work"``: each replica reports
  ``anysr_queue_work_seconds`` through ``record_autoscaling_stats`` and :func:`queued_work_policy`
  sizes the deployment so each replica holds ``target_queue_work_s``, as the Kubernetes HPA does).
- **Backpressure passes through**: the server's 429 (per-client limit) and 503 (queue full, draining,
  deadline unreachable, with ``Retry-After``) reach the client unchanged through Ray's HTTP proxy;
  Ray's own ``max_queued_requests`` (503 from the proxy) applies on top.

Every answer carries ``X-AnySR-Replica``, the Ray replica that served it.

Run it: ``serve run anysr_ray.deployment:build_app replicas=2 gpus_per_replica=1`` or a Serve config
file (deploy/ray/serve-config.yaml).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Literal

from ray import serve
from ray.serve.config import AutoscalingConfig, AutoscalingContext, AutoscalingPolicy

from server.app import create_app
from server.model_source import resolve_weights
from server.settings import Settings

REPLICA_HEADER = "x-anysr-replica"
#: The custom autoscaling metric each replica reports (same meaning as the Prometheus gauge).
QUEUE_WORK_METRIC = "anysr_queue_work_seconds"


class ReplicaHeader:
    """ASGI wrapper adding ``X-AnySR-Replica`` to every HTTP answer; lifespan and other scopes pass through."""

    def __init__(self, app: Any, replica: str) -> None:
        self.app = app
        self._value = replica.encode()

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_replica(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), (REPLICA_HEADER.encode(), self._value)]}
            await send(message)

        await self.app(scope, receive, send_with_replica)


@serve.ingress()
class AnySRReplica:
    """One replica: the FastAPI app built from ``settings`` (``Settings`` field names and values)."""

    def __init__(self, settings: dict[str, Any] | None = None) -> None:
        # Validated here, in the replica, so an invalid setting fails the deployment with pydantic's message.
        resolved = Settings(**(settings or {}))
        # As `anysr serve` does: a relative weights path is found wherever the actor's directory is.
        found, looked = resolve_weights(resolved.weights, resolved.data_dir)
        if found is not None:
            resolved = resolved.model_copy(update={"weights": found})
        elif not resolved.allow_untrained:
            raise FileNotFoundError(f"weights file {resolved.weights} not found; looked at {[str(p) for p in looked]}")
        self._settings = resolved
        self._app: Any = None

    def __serve_build_asgi_app__(self) -> Any:
        self._app = create_app(self._settings)
        replica = serve.get_replica_context().replica_id.unique_id
        return ReplicaHeader(self._app, replica)

    async def record_autoscaling_stats(self) -> dict[str, float]:
        """Predicted seconds of queued work on this replica (0 before the app is ready)."""
        service = getattr(self._app.state, "service", None) if self._app is not None else None
        if service is None:
            return {QUEUE_WORK_METRIC: 0.0}
        from server.scheduler import queued_work_s

        return {QUEUE_WORK_METRIC: float(queued_work_s(service.sampler.snapshot()))}


def queued_work_policy(ctx: AutoscalingContext, target_queue_work_s: float = 0.25) -> tuple[int, dict[str, Any]]:
    """Replicas so that each holds about ``target_queue_work_s`` of queued work (Ray Serve custom policy).

    The total predicted work over the running replicas, divided by the target, rounded up; at least
    the minimum and at most the maximum Ray allows now. Ray's upscale and downscale delays still apply.
    """
    per_replica = (ctx.aggregated_metrics or {}).get(QUEUE_WORK_METRIC, {})
    total = sum(per_replica.values())
    wanted = math.ceil(total / target_queue_work_s) if total > 0 else ctx.capacity_adjusted_min_replicas
    return max(ctx.capacity_adjusted_min_replicas, min(ctx.capacity_adjusted_max_replicas, wanted)), {}


@dataclass(frozen=True)
class RayServeOptions:
    """How the deployment is sized and scaled; ``settings`` are the server's own (``ANYSR_*`` names, lower case)."""

    #: Fixed replica count when ``autoscaling == "off"``; the initial count otherwise.
    replicas: int = 1
    min_replicas: int = 1
    max_replicas: int = 8
    autoscaling: Literal["off", "ongoing", "queued_work"] = "off"
    #: Ongoing requests per replica Ray aims for (``autoscaling="ongoing"``).
    target_ongoing_requests: float = 4.0
    #: Queued work per replica the custom policy aims for (``autoscaling="queued_work"``); the HPA uses 0.25 s.
    target_queue_work_s: float = 0.25
    #: One replica per GPU; 0 for CPU replicas.
    gpus_per_replica: float = 1.0
    cpus_per_replica: float = 4.0
    #: Requests Ray lets into one replica at once; beyond it they queue in Ray. The server's own
    #: per-client limit and tile queue still answer 429/503 inside this.
    max_ongoing_requests: int = 32
    #: Requests Ray queues for the deployment before its proxy answers 503 itself (-1: unbounded).
    max_queued_requests: int = 256
    settings: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.gpus_per_replica not in (0, 1):
            raise ValueError(
                f"gpus_per_replica must be 1 (one replica per GPU) or 0 (CPU), got {self.gpus_per_replica}: "
                "a replica serves on one device, and replicas sharing a GPU misread each other's load"
            )
        if not 1 <= self.min_replicas <= self.replicas <= self.max_replicas and self.autoscaling != "off":
            raise ValueError(f"need 1 <= min_replicas <= replicas <= max_replicas, got {self}")
        if self.replicas < 1:
            raise ValueError("replicas must be at least 1")

    def autoscaling_config(self) -> AutoscalingConfig | None:
        if self.autoscaling == "off":
            return None
        common: dict[str, Any] = {
            "min_replicas": self.min_replicas,
            "initial_replicas": self.replicas,
            "max_replicas": self.max_replicas,
            # As the HPA: add replicas quickly (each needs a device and a warm-up), remove them slowly.
            "upscale_delay_s": 10.0,
            "downscale_delay_s": 300.0,
        }
        if self.autoscaling == "ongoing":
            return AutoscalingConfig(target_ongoing_requests=self.target_ongoing_requests, **common)
        policy = AutoscalingPolicy(
            policy_function=f"{__name__}:queued_work_policy",
            policy_kwargs={"target_queue_work_s": self.target_queue_work_s},
        )
        return AutoscalingConfig(policy=policy, **common)


def build_deployment(options: RayServeOptions) -> serve.Application:
    """The bound Ray Serve application for ``options`` (``serve.run`` it)."""
    settings = dict(options.settings)
    if options.gpus_per_replica == 0:
        settings.setdefault("device", "cpu")
    # torch sizes its pool from the node's cores, not the actor's share: match the CPUs Ray reserves.
    settings.setdefault("torch_threads", max(1, int(options.cpus_per_replica)))
    deployment = serve.deployment(AnySRReplica).options(
        name="anysr",
        ray_actor_options={"num_gpus": options.gpus_per_replica, "num_cpus": options.cpus_per_replica},
        max_ongoing_requests=options.max_ongoing_requests,
        max_queued_requests=options.max_queued_requests,
        # The server drains in-flight requests on shutdown for up to drain_timeout_s; give it that.
        graceful_shutdown_timeout_s=float(Settings(**settings).drain_timeout_s) + 15.0,
        health_check_period_s=10.0,
        **(
            {"autoscaling_config": options.autoscaling_config()}
            if options.autoscaling != "off"
            else {"num_replicas": options.replicas}
        ),
    )
    return deployment.bind(settings)


def build_app(args: dict[str, Any]) -> serve.Application:
    """Ray Serve application builder: ``serve run anysr_ray.deployment:build_app key=value ...``.

    Keys are :class:`RayServeOptions` fields; ``settings`` takes a dict (from a config file) and
    ``settings.NAME=value`` sets one server setting from the command line.
    """
    known = {item.name: item.type for item in fields(RayServeOptions)}
    values: dict[str, Any] = {"settings": dict(args.get("settings", {}))}
    for key, value in args.items():
        if key.startswith("settings."):
            values["settings"][key.removeprefix("settings.")] = value
        elif key in known and key != "settings":
            default = asdict(RayServeOptions())[key]
            values[key] = type(default)(value) if not isinstance(default, str) else value
        elif key != "settings":
            raise ValueError(f"unknown option {key!r}; expected one of {sorted(known)} or settings.NAME")
    return build_deployment(RayServeOptions(**values))
