"""anysr_ray: the app as a Ray Serve deployment on a local Ray instance, with two CPU replicas.

Requests must spread over both replicas (each answer names its replica), the server's own refusals (a
422 admission refusal, a 429 with its Retry-After) must reach the client unchanged through Ray's HTTP
proxy, and the queued-work autoscaling policy must
size the deployment from the replicas' reported work. Skips with its reason where Ray is absent (CI
installs the ``[ray]`` extra for this file; docs/deploy.md#ray-serve). That the core server never
imports Ray is checked in tests/server/test_imports.py, with or without Ray installed.
"""

from __future__ import annotations

import socket
import threading
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest

from tests.server.helpers import encode, random_image

ray = pytest.importorskip("ray", reason="Ray is not installed: pip install -e '.[ray]' (CI installs it for this file)")
serve = pytest.importorskip("ray.serve")

from anysr_ray.deployment import (  # noqa: E402 (only importable with Ray)
    QUEUE_WORK_METRIC,
    REPLICA_HEADER,
    RayServeOptions,
    build_app,
    build_deployment,
    queued_work_policy,
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def ray_app():
    """Two CPU replicas (one thread each) of the shipped model behind Ray's proxy on 127.0.0.1."""
    port = free_port()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        options = RayServeOptions(
            replicas=2,
            gpus_per_replica=0,
            cpus_per_replica=1,
            settings={"warmup_size": 8, "max_requests_per_client": 1, "log_level": "warning"},
        )
        serve.run(build_deployment(options), name="anysr", route_prefix="/", blocking=False)
        base = f"http://127.0.0.1:{port}"
        ready = httpx.get(f"{base}/readyz", timeout=60)
        assert ready.status_code == 200, ready.text
        yield base
    finally:
        serve.shutdown()
        ray.shutdown()


@pytest.mark.slow
def test_requests_spread_over_both_replicas(ray_app):
    png = encode(random_image(24, 20))
    replicas = []
    for _ in range(24):
        answer = httpx.post(
            f"{ray_app}/upscale?scale=2", content=png, headers={"content-type": "image/png"}, timeout=60
        )
        assert answer.status_code == 200, answer.text
        assert answer.headers["x-anysr-width"] and answer.headers["x-anysr-flops"]
        replicas.append(answer.headers[REPLICA_HEADER])
    counts = {replica: replicas.count(replica) for replica in set(replicas)}
    assert len(counts) == 2, f"answers came from {counts}"
    # Both replicas are real servers with their own metrics.
    assert "anysr_requests_total" in httpx.get(f"{ray_app}/metrics", timeout=10).text


@pytest.mark.slow
def test_server_backpressure_passes_through_the_proxy(ray_app):
    # The server's admission refusal (a deadline no width could meet even when idle: 422, not 503,
    # since waiting would not help) comes back with its status and JSON error untouched.
    png = encode(random_image(64, 64))
    refused = httpx.post(
        f"{ray_app}/upscale?scale=4",
        content=png,
        headers={"content-type": "image/png", "x-anysr-deadline-ms": "1"},
        timeout=60,
    )
    assert refused.status_code == 422, refused.text
    assert refused.json()["error"]["code"] == "request_too_costly"
    assert refused.headers[REPLICA_HEADER]

    # 429: one request in flight per client per replica; three at once over two replicas -> at least one 429.
    big = encode(random_image(128, 128, seed=3))
    answers: list[httpx.Response] = []

    def send() -> None:
        answers.append(
            httpx.post(
                f"{ray_app}/upscale?scale=2",
                content=big,
                headers={"content-type": "image/png", "x-anysr-budget": "width=1.0"},
                timeout=120,
            )
        )

    senders = [threading.Thread(target=send) for _ in range(3)]
    for sender in senders:
        sender.start()
    for sender in senders:
        sender.join(180)
    statuses = sorted(answer.status_code for answer in answers)
    assert 429 in statuses and set(statuses) <= {200, 429}, statuses
    limited = next(answer for answer in answers if answer.status_code == 429)
    assert limited.json()["error"]["code"] == "too_many_requests" and limited.headers[REPLICA_HEADER]
    assert int(limited.headers["retry-after"]) >= 1  # the server's backpressure hint survives the proxy


def context(work: dict[str, float], minimum: int = 1, maximum: int = 8) -> SimpleNamespace:
    return SimpleNamespace(
        aggregated_metrics={QUEUE_WORK_METRIC: work},
        capacity_adjusted_min_replicas=minimum,
        capacity_adjusted_max_replicas=maximum,
    )


def test_queued_work_policy_sizes_replicas_to_the_target():
    assert queued_work_policy(context({"a": 0.0, "b": 0.0}))[0] == 1  # idle: the minimum
    assert queued_work_policy(context({"a": 0.5, "b": 0.5}), target_queue_work_s=0.25)[0] == 4
    assert queued_work_policy(context({"a": 30.0}), target_queue_work_s=0.25)[0] == 8  # capped
    assert queued_work_policy(context({}, minimum=2))[0] == 2  # no reports yet


def test_options_keep_one_replica_per_gpu_and_build_from_command_line_args():
    with pytest.raises(ValueError, match="one replica per GPU"):
        RayServeOptions(gpus_per_replica=0.5)
    queued = RayServeOptions(autoscaling="queued_work", min_replicas=1, replicas=2, max_replicas=4)
    config = queued.autoscaling_config()
    assert config.policy.policy_function.endswith(":queued_work_policy") and config.max_replicas == 4
    ongoing = RayServeOptions(autoscaling="ongoing", target_ongoing_requests=3).autoscaling_config()
    assert ongoing.target_ongoing_requests == 3
    application = build_app({"replicas": "2", "gpus_per_replica": "0", "settings.policy": "scale-groups"})
    assert application is not None
    with pytest.raises(ValueError, match="unknown option"):
        build_app({"replica": "2"})


def test_the_shipped_serve_config_validates_and_builds():
    import yaml
    from ray.serve.schema import ServeDeploySchema

    config = yaml.safe_load((Path(__file__).resolve().parents[1] / "deploy" / "ray" / "serve-config.yaml").read_text())
    schema = ServeDeploySchema.model_validate(config)
    (application,) = schema.applications
    assert application.import_path == "anysr_ray.deployment:build_app"
    assert build_app(application.args) is not None
    options = RayServeOptions(**{key: value for key, value in application.args.items()})
    assert options.gpus_per_replica == 1 and options.autoscaling_config().policy is not None
