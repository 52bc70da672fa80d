"""Checks on the built CPU image, run by deploy/ci/container_test.sh once the image exists.

The image's contents (user, no installer, no build-only files, no torch index in labels or history),
then the container as docs/deploy.md runs it: read-only, capabilities dropped, a CPU limit, a port
published on 127.0.0.1 only, and ``--stop-timeout 45``. It must turn ready and healthy, answer an
upscale and /metrics (process_* included), read its CPU load from its cgroup quota, be scraped by
Debian's real Prometheus with the repository's rule files, answer every query of the Grafana
dashboard and every rule with series, and drain a request in flight on a plain ``docker stop``.

Prints a summary and writes it to ``WORK/container_checks.json`` (the numbers docs/deploy.md quotes).
"""

from __future__ import annotations

import argparse
import io
import json
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import yaml
from PIL import Image
from prometheus_client.parser import text_string_to_metric_families

CONTAINER = "anysr-ci-serve"
LABEL = "io.anysr.ci=1"
CPU_LIMIT = "1"
#: Grafana's variables, as a one-second scrape interval makes them.
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$instance": ".*"}


class CheckFailed(AssertionError):
    pass


def check(condition: bool, message: str) -> None:
    if not condition:
        raise CheckFailed(message)


def log(message: str) -> None:
    print(f"   {message}", flush=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(condition, timeout_s: float, what: str, interval_s: float = 0.25) -> float:
    """Poll ``condition`` until true; returns the seconds it took."""
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        try:
            if condition():
                return time.monotonic() - started
        except (httpx.TransportError, subprocess.CalledProcessError):
            pass
        time.sleep(interval_s)
    raise CheckFailed(f"timed out after {timeout_s:.0f} s waiting for {what}")


class Docker:
    def __init__(self, binary: str) -> None:
        self.binary = binary

    def __call__(self, *args: str, check: bool = True) -> str:
        result = subprocess.run([self.binary, *args], capture_output=True, text=True, timeout=300)
        if check and result.returncode != 0:
            raise CheckFailed(f"docker {' '.join(args)} failed ({result.returncode}): {result.stderr.strip()}")
        return result.stdout

    def logs(self, container: str) -> str:
        """The container's output, stdout and stderr together (the server logs to stderr)."""
        result = subprocess.run([self.binary, "logs", container], capture_output=True, text=True, timeout=60)
        return result.stdout + result.stderr

    def inspect(self, target: str, template: str) -> Any:
        return json.loads(self("inspect", "--format", "{{json " + template + "}}", target))


def png(height: int, width: int, seed: int = 0) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, size=(height, width, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "PNG")
    return buffer.getvalue()


def upscale(base: str, image: bytes, scale: float, width: float | None = None, timeout: float = 300) -> httpx.Response:
    headers = {"content-type": "image/png"}
    if width is not None:
        headers["x-anysr-budget"] = f"width={width}"
    return httpx.post(f"{base}/upscale?scale={scale}", content=image, headers=headers, timeout=timeout)


def scrape(base: str) -> dict[tuple[str, tuple], float]:
    text = httpx.get(f"{base}/metrics", timeout=10).text
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


# -- the image -------------------------------------------------------------------------------------------


def check_image(docker: Docker, image: str, forbidden: list[str]) -> dict[str, Any]:
    config = docker.inspect(image, ".Config")
    check(config["User"] == "10001:10001", f"image user is {config['User']!r}")
    check(config.get("Healthcheck") is not None, "image has no HEALTHCHECK")
    metadata = json.dumps(config) + docker("history", "--no-trunc", "--format", "{{.CreatedBy}}", image)
    for text in [*forbidden, "anysr-ci", "ca-bundle", "PIP_CERT"]:
        check(text not in metadata, f"{text!r} is in the image's config or history")
    probe = (
        "import importlib.util as u, os, pathlib, sys\n"
        "bad = [m for m in ('pip', 'setuptools', 'wheel') if u.find_spec(m)]\n"
        "assert not bad, f'installers in the image: {bad}'\n"
        "weights = sorted(p.name for p in pathlib.Path('/app/weights').iterdir())\n"
        "assert weights == ['MODEL_CARD.md', 'anysr-edsr-liif.safetensors'], weights\n"
        "assert not pathlib.Path('/usr/local/share/anysr-ci').exists(), 'CI CA bundle shipped'\n"
        "assert 'PIP_CERT' not in os.environ\n"
        "import torch; print(torch.__version__, os.getuid())\n"
    )
    output = docker("run", "--rm", "--label", LABEL, "--network", "none", "--entrypoint", "python3", image, "-c", probe)
    log(f"image: user 10001, no pip/setuptools/wheel, served weights only, no CA or index traces ({output.strip()})")
    size = int(docker("image", "inspect", "--format", "{{.Size}}", image))
    return {"image_size_bytes": size, "torch_in_image": output.split()[0]}


# -- Prometheus ------------------------------------------------------------------------------------------


def rule_files(repo: Path) -> list[Path]:
    return sorted((repo / "deploy" / "prometheus" / "rules").glob("*.yml"))


def start_prometheus(work: Path, repo: Path, target_port: int) -> tuple[subprocess.Popen, str]:
    """Debian's Prometheus scraping the published port every second, with the repository's rules."""
    home = work / "prometheus"
    shutil.rmtree(home, ignore_errors=True)
    home.mkdir(parents=True)
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(path) for path in rule_files(repo)],
        "scrape_configs": [
            {
                "job_name": "anysr",
                "metrics_path": "/metrics",
                "static_configs": [{"targets": [f"127.0.0.1:{target_port}"]}],
            }
        ],
    }
    config_path = home / "prometheus.yml"
    config_path.write_text(yaml.safe_dump(config))
    subprocess.run(["promtool", "check", "config", str(config_path)], check=True, capture_output=True)
    port = free_port()
    process = subprocess.Popen(
        [
            "prometheus",
            f"--config.file={config_path}",
            f"--storage.tsdb.path={home / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=(home / "prometheus.log").open("w"),
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    wait_until(lambda: httpx.get(f"{base}/-/ready", timeout=2).status_code == 200, 60, "Prometheus to be ready")
    return process, base


def query(prometheus: str, expr: str) -> list[dict[str, Any]]:
    response = httpx.get(f"{prometheus}/api/v1/query", params={"query": expr}, timeout=10)
    body = response.json()
    check(body.get("status") == "success", f"query failed to run: {expr}\n   {body.get('error', response.text)}")
    return body["data"]["result"]


def alert_signal(expr: str) -> str:
    """The ``signal`` of an alert written as ``signal OP number`` (tests/test_monitoring.py holds them to it)."""
    match = re.fullmatch(r"(.+?)\s*(==|!=|>=|<=|>|<)\s*[-+0-9.e]+", " ".join(expr.split()))
    check(match is not None, f"alert expression is not 'signal OP threshold': {expr}")
    return match[1]


def every_query(repo: Path) -> list[tuple[str, str]]:
    """(where, PromQL) for every dashboard target, recording rule and alert of the repository."""
    queries: list[tuple[str, str]] = []
    dashboard = json.loads((repo / "deploy" / "grafana" / "dashboards" / "anysr-serve.json").read_text())
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            expr = target["expr"]
            for variable, value in GRAFANA_VARIABLES.items():
                expr = expr.replace(variable, value)
            check("$" not in expr, f"unsubstituted variable in {expr}")
            queries.append((f"panel {panel['id']} {target['refId']} ({panel['title']})", expr))
    for path in rule_files(repo):
        for group in yaml.safe_load(path.read_text())["groups"]:
            for rule in group["rules"]:
                if "record" in rule:
                    queries.append((f"recording rule {rule['record']} (expression)", rule["expr"]))
                    queries.append((f"recording rule {rule['record']} (recorded series)", rule["record"]))
                else:
                    queries.append((f"alert {rule['alert']} (signal)", alert_signal(rule["expr"])))
    return queries


def check_queries(prometheus: str, repo: Path) -> list[dict[str, Any]]:
    results = []
    for where, expr in every_query(repo):
        series = query(prometheus, expr)
        check(len(series) > 0, f"{where} returned no series: {expr}")
        results.append({"where": where, "expr": expr, "series": len(series)})
    for path in rule_files(repo):
        for group in yaml.safe_load(path.read_text())["groups"]:
            for rule in group["rules"]:
                if "alert" in rule:
                    query(prometheus, rule["expr"])  # the whole expression parses and runs (it need not fire)
    response = httpx.get(f"{prometheus}/api/v1/label/instance/values", params={"match[]": "anysr_ready"}, timeout=10)
    check(response.json()["data"], "the dashboard's instance variable (label_values(anysr_ready, instance)) is empty")
    return results


# -- the container ---------------------------------------------------------------------------------------


def run_container(docker: Docker, image: str, port: int) -> float:
    """Start the container as docs/deploy.md does (plus a 1-CPU limit); returns when it started."""
    docker("rm", "-f", CONTAINER, check=False)
    docker(
        "run", "-d", "--name", CONTAINER, "--label", LABEL,
        "--read-only", "--tmpfs", "/tmp", "--cap-drop", "ALL", "--security-opt", "no-new-privileges",
        "--cpus", CPU_LIMIT, "-e", f"ANYSR_TORCH_THREADS={CPU_LIMIT}", "--stop-timeout", "45",
        "-p", f"127.0.0.1:{port}:8000",
        image,
    )  # fmt: skip
    return time.monotonic()


def check_drain(docker: Docker, base: str) -> dict[str, Any]:
    """``docker stop`` (no -t) with an upscale in flight: the request completes, the process exits 0."""
    results: list[httpx.Response | Exception] = []

    def send() -> None:
        try:
            results.append(upscale(base, png(96, 96, seed=7), 4.0, width=1.0))
        except httpx.HTTPError as error:
            results.append(error)

    sender = threading.Thread(target=send)
    sender.start()
    wait_until(lambda: scrape(base)[("anysr_in_flight_requests", ())] == 1, 60, "the request to be in flight", 0.05)
    stop: dict[str, float] = {}

    def stop_container() -> None:
        began = time.monotonic()
        docker("stop", CONTAINER)
        stop["seconds"] = time.monotonic() - began

    stopper = threading.Thread(target=stop_container)
    stopper.start()
    # While draining: still listening, /readyz 503 (the load balancer's cue), new upscales refused.
    wait_until(lambda: httpx.get(f"{base}/readyz", timeout=5).status_code == 503, 20, "/readyz to turn 503", 0.05)
    refused = upscale(base, png(16, 16), 2.0, timeout=30)
    check(refused.status_code == 503 and refused.json()["error"]["code"] == "draining", f"during drain: {refused.text}")
    sender.join(120)
    stopper.join(120)
    check(bool(results) and isinstance(results[0], httpx.Response), f"in-flight request failed: {results}")
    answer = results[0]
    check(answer.status_code == 200, f"in-flight request answered {answer.status_code}: {answer.text[:200]}")
    state = docker.inspect(CONTAINER, ".State")
    check(state["ExitCode"] == 0 and not state["OOMKilled"], f"container exit: {state}")
    check(stop.get("seconds", 99.0) < 45.0, f"docker stop took {stop.get('seconds')} s (killed at the timeout?)")
    log(
        f"drain: docker stop returned in {stop['seconds']:.1f} s; the in-flight 96x96 x4 upscale answered 200 "
        f"({answer.headers.get('x-anysr-width')} width); a new one got 503 draining; exit code 0"
    )
    return {"docker_stop_s": round(stop["seconds"], 2), "in_flight_status": answer.status_code}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--docker", required=True)
    parser.add_argument("--image", required=True)
    parser.add_argument("--repo", type=Path, required=True)
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--forbidden", action="append", default=[], help="text that must not appear in the image")
    args = parser.parse_args()
    docker = Docker(args.docker)
    summary: dict[str, Any] = check_image(docker, args.image, args.forbidden)

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    prometheus_process = None
    try:
        started = run_container(docker, args.image, port)
        wait_until(lambda: httpx.get(f"{base}/readyz", timeout=2).status_code == 200, 240, "/readyz")
        summary["ready_s"] = round(time.monotonic() - started, 1)
        wait_until(lambda: docker.inspect(CONTAINER, ".State.Health.Status") == "healthy", 60, "healthy")
        summary["healthy_s"] = round(time.monotonic() - started, 1)
        log(f"ready after {summary['ready_s']} s, healthy after {summary['healthy_s']} s (HEALTHCHECK every 5 s)")
        config = docker.inspect(CONTAINER, ".HostConfig")
        check(config["ReadonlyRootfs"] and config["NanoCpus"] == int(float(CPU_LIMIT) * 1e9), "run flags not applied")
        bindings = config["PortBindings"]["8000/tcp"]
        check([item["HostIp"] for item in bindings] == ["127.0.0.1"], f"published beyond 127.0.0.1: {bindings}")

        info = httpx.get(f"{base}/v1/model", timeout=10).json()
        check(info["untrained"] is False, "the image serves untrained weights")
        began = time.monotonic()
        answer = upscale(base, png(48, 40), 2.0)
        summary["first_upscale_s"] = round(time.monotonic() - began, 2)
        check(answer.status_code == 200, f"upscale answered {answer.status_code}: {answer.text[:300]}")
        check(Image.open(io.BytesIO(answer.content)).size == (80, 96), "wrong output size")
        for header in ("x-anysr-width", "x-anysr-reason", "x-anysr-flops", "x-request-id"):
            check(header in answer.headers, f"upscale answer lacks {header}")
        samples = scrape(base)
        check(samples[("anysr_requests_total", (("status", "200"),))] == 1, "anysr_requests_total{status=200} != 1")
        for name in ("process_resident_memory_bytes", "process_open_fds", "process_cpu_seconds_total"):
            check(samples.get((name, ()), 0) > 0, f"/metrics lacks {name}")
        log(f"upscale 48x40 x2: 200 in {summary['first_upscale_s']} s, width {answer.headers['x-anysr-width']}")

        signal = re.search(r"CPU load signal: (.*)", docker.logs(CONTAINER))
        check(
            signal is not None and f"quota {CPU_LIMIT} cores" in signal[1], f"CPU load signal: {signal and signal[1]}"
        )
        summary["cpu_load_signal"] = signal[1]
        log(f"CPU load signal: {signal[1]}")

        prometheus_process, prometheus = start_prometheus(args.work, args.repo, port)
        # Traffic at every width, a client error, then enough scrapes and rule evaluations for rates.
        for index, width in enumerate((0.5, 0.7, 0.9, 1.0)):
            check(upscale(base, png(32, 32, seed=index), 2.0, width=width).status_code == 200, f"width {width}")
        bad = httpx.post(f"{base}/upscale?scale=2", content=b"not an image", headers={"content-type": "image/png"})
        check(bad.status_code in (400, 415, 422), f"bad input answered {bad.status_code}")
        wait_until(lambda: query(prometheus, 'anysr_ready{job="anysr"} == 1'), 30, "Prometheus to scrape anysr_ready")
        time.sleep(6)
        up = query(prometheus, "anysr_requests_total")
        log(f"Prometheus {prometheus} scrapes {base}: {len(up)} anysr_requests_total series")
        results = check_queries(prometheus, args.repo)
        summary["queries"] = results
        log(f"{len(results)} dashboard and rule queries parsed and returned series (the alerts' expressions ran too)")

        summary.update(check_drain(docker, base))
    finally:
        if prometheus_process is not None:
            prometheus_process.terminate()
            prometheus_process.wait(30)
        (args.work / "container.log").write_text(docker.logs(CONTAINER))
        docker("rm", "-f", CONTAINER, check=False)
    (args.work / "container_checks.json").write_text(json.dumps(summary, indent=2) + "\n")
    brief = {key: value for key, value in summary.items() if key != "queries"}
    log(f"summary: {json.dumps(brief)}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except CheckFailed as failure:
        print(f"CHECK FAILED: {failure}", file=sys.stderr)
        sys.exit(1)
