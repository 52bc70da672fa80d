"""cli/serve.py: flags over env, start-up refusals, and one real server in a subprocess (post, scrape, drain)."""

from __future__ import annotations

import argparse
import io
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
import torch
from PIL import Image
from prometheus_client.parser import text_string_to_metric_families

from cli import serve
from models import ModelSpec, build_model, count_flops
from server.settings import Settings
from tests.server.helpers import encode, random_image

REPO = Path(__file__).resolve().parents[2]


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    serve.add_arguments(parser)
    return parser.parse_args(argv)


def test_every_setting_has_a_flag_and_flags_override_env(monkeypatch):
    monkeypatch.setenv("ANYSR_PORT", "9100")
    monkeypatch.setenv("ANYSR_POLICY", "scale-groups")
    args = parse(["--port", "9001", "--widths", "0.5,1.0", "--tile-halo", "none", "--allow-untrained"])
    settings = Settings(**serve.settings_overrides(args))
    assert settings.port == 9001  # flag beats env
    assert settings.policy == "scale-groups"  # env beats default
    assert settings.widths == (0.5, 1.0)
    assert settings.tile_halo is None
    assert settings.allow_untrained is True
    assert set(vars(parse([]))) == set(Settings.model_fields)


def test_missing_weights_stop_start_up(tmp_path, capsys):
    code = serve.run(parse(["--weights", str(tmp_path / "absent.safetensors")]))
    assert code == 2
    error = capsys.readouterr().err
    assert "absent.safetensors not found" in error and "--allow-untrained" in error


def test_invalid_settings_stop_start_up(capsys):
    assert serve.run(parse(["--tile-size", "2"])) == 2
    assert "tile_size" in capsys.readouterr().err


# -- the real thing ------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(condition, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if condition():
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def scrape(base: str) -> dict[tuple[str, tuple], float]:
    text = httpx.get(f"{base}/metrics", timeout=10).text
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


@pytest.mark.slow
def test_real_server_serves_scrapes_and_drains_on_sigterm(tmp_path):
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    command = [
        sys.executable,
        "-m",
        "cli",
        "serve",
        "--port",
        str(port),
        "--weights",
        str(tmp_path / "absent.safetensors"),
        "--allow-untrained",
        "--warmup-size",
        "8",
        "--torch-threads",
        "1",
        # Each request waits this long for its batch of up to 8 tiles to fill (the CPU default is 1 tile,
        # which never waits), which keeps one in flight while SIGTERM lands.
        "--max-batch-tiles",
        "8",
        "--max-batch-wait-ms",
        "3000",
        "--log-level",
        "warning",
    ]
    log = (tmp_path / "server.log").open("w")
    process = subprocess.Popen(command, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, env=os.environ.copy())
    try:
        wait_until(lambda: httpx.get(f"{base}/readyz", timeout=5).status_code == 200, 240, "readiness")
        png = encode(random_image(24, 20))
        response = httpx.post(
            f"{base}/upscale?scale=2",
            content=png,
            headers={"content-type": "image/png", "x-request-id": "subprocess-1"},
            timeout=120,
        )
        assert response.status_code == 200, response.text
        width = float(response.headers["x-anysr-width"])
        with torch.device("meta"):
            meta = build_model(ModelSpec())
        assert int(response.headers["x-anysr-flops"]) == count_flops(meta, (24, 20), (48, 40), width).total
        assert response.headers["x-anysr-reason"]
        assert response.headers["x-request-id"] == "subprocess-1"
        assert "compute;dur=" in response.headers["server-timing"]
        assert Image.open(io.BytesIO(response.content)).size == (40, 48)

        samples = scrape(base)
        assert samples[("anysr_requests_total", (("status", "200"),))] == 1
        assert samples[("anysr_flops_total", (("width", f"{width:.1f}"),))] == int(response.headers["x-anysr-flops"])
        decision = (("reason", response.headers["x-anysr-reason"]), ("width", f"{width:.1f}"))
        assert samples[("anysr_width_selected_total", decision)] == 1
        assert samples[("anysr_ready", ())] == 1

        results: list[httpx.Response] = []
        sender = threading.Thread(
            target=lambda: results.append(
                httpx.post(f"{base}/upscale?scale=2", content=png, headers={"content-type": "image/png"}, timeout=120)
            )
        )
        sender.start()
        wait_until(lambda: scrape(base)[("anysr_in_flight_requests", ())] == 1, 60, "a request in flight")
        process.send_signal(signal.SIGTERM)
        wait_until(lambda: httpx.get(f"{base}/readyz", timeout=5).status_code == 503, 30, "readiness to flip")
        refused = httpx.post(f"{base}/upscale?scale=2", content=png, headers={"content-type": "image/png"}, timeout=30)
        assert refused.status_code == 503 and refused.json()["error"]["code"] == "draining"
        sender.join(120)
        assert results and results[0].status_code == 200  # the in-flight request completed
        assert process.wait(timeout=60) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        log.close()


@pytest.mark.slow
def test_a_straggler_costs_the_drain_timeout_once(tmp_path):
    """A request still running at the drain deadline gets 503 and does not hold shutdown for further
    timeouts (uvicorn's graceful wait, the lifespan's wait, the batcher's close): one deadline serves all."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    drain_s = 3.0
    command = [sys.executable, "-m", "cli", "serve", "--port", str(port)]
    command += ["--weights", str(tmp_path / "absent.safetensors"), "--allow-untrained", "--warmup-size", "8"]
    command += ["--torch-threads", "1", "--log-level", "warning", "--drain-timeout-s", str(drain_s)]
    command += ["--max-batch-tiles", "8", "--max-batch-wait-ms", "60000"]  # a lone tile waits a minute for company
    log = (tmp_path / "server.log").open("w")
    process = subprocess.Popen(command, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, env=os.environ.copy())
    try:
        wait_until(lambda: httpx.get(f"{base}/readyz", timeout=5).status_code == 200, 240, "readiness")
        png = encode(random_image(24, 20))
        results: list[httpx.Response | Exception] = []

        def send() -> None:
            try:
                results.append(
                    httpx.post(
                        f"{base}/upscale?scale=2", content=png, headers={"content-type": "image/png"}, timeout=120
                    )
                )
            except httpx.HTTPError as error:
                results.append(error)

        sender = threading.Thread(target=send)
        sender.start()
        wait_until(lambda: scrape(base)[("anysr_in_flight_requests", ())] == 1, 60, "a request in flight")
        signalled = time.monotonic()
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)
        stopped_after = time.monotonic() - signalled
        sender.join(30)
        # Drain deadline + uvicorn's one-second grace + interpreter exit on a busy machine; before one
        # deadline served every step, this took three drain timeouts or (a lost cancellation) a minute.
        assert stopped_after < drain_s + 5.0, f"shutdown took {stopped_after:.1f} s"
        # Its queued tile was failed at the deadline, so it got a clean 503 rather than a cancelled 500.
        assert results and isinstance(results[0], httpx.Response), results
        assert results[0].status_code == 503 and results[0].json()["error"]["code"] == "draining"
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        log.close()


# -- finding the default weights ---------------------------------------------------------------------


@pytest.mark.weights
def test_default_weights_are_found_from_outside_the_repository(tmp_path, monkeypatch):
    """`anysr serve` run from another directory used to miss weights/...: the path was cwd-relative."""
    from server.model_source import resolve_weights
    from server.settings import DEFAULT_WEIGHTS

    monkeypatch.chdir(tmp_path)
    found, looked = resolve_weights(DEFAULT_WEIGHTS, None)
    assert found == REPO / DEFAULT_WEIGHTS
    assert looked == [tmp_path / DEFAULT_WEIGHTS, REPO / DEFAULT_WEIGHTS]


def test_data_dir_comes_first_and_absolute_paths_stand_alone(tmp_path, monkeypatch):
    from server.model_source import resolve_weights

    data = tmp_path / "data"
    (data / "weights").mkdir(parents=True)
    (data / "weights" / "mine.safetensors").write_bytes(b"x")
    monkeypatch.chdir(tmp_path)
    found, looked = resolve_weights(Path("weights/mine.safetensors"), data)
    assert found == data / "weights" / "mine.safetensors" and looked[0] == found
    absolute = tmp_path / "elsewhere.safetensors"
    assert resolve_weights(absolute, data) == (None, [absolute])


def test_missing_weights_name_every_place_looked(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("ANYSR_DATA_DIR", str(tmp_path / "data"))
    assert serve.run(parse(["--weights", "weights/absent.safetensors"])) == 2
    error = capsys.readouterr().err
    for base in (tmp_path / "data", tmp_path, REPO):
        assert str(base / "weights" / "absent.safetensors") in error
    assert "ANYSR_DATA_DIR" in error


def test_no_proxy_is_trusted_unless_named():
    from server.app import create_app

    settings = Settings(allow_untrained=True)
    config = serve.uvicorn_config(create_app(settings), settings)
    assert config.proxy_headers is False
    config.load()
    assert type(config.loaded_app).__name__ != "ProxyHeadersMiddleware"
    named = Settings(allow_untrained=True, forwarded_allow_ips="10.0.0.7")
    config = serve.uvicorn_config(create_app(named), named)
    assert config.proxy_headers is True and config.forwarded_allow_ips == "10.0.0.7"


def raw_connection(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    return sock


def read_all(sock: socket.socket) -> bytes:
    chunks = []
    while True:
        try:
            chunk = sock.recv(65536)
        except (ConnectionResetError, TimeoutError):
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks)


@pytest.mark.slow
def test_real_server_closes_slow_headers_caps_connections_serves_admin_port_and_ends_stalled_uploads_at_drain(
    tmp_path,
):
    port, admin_port = free_port(), free_port()
    base, admin = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{admin_port}"
    command = [sys.executable, "-m", "cli", "serve", "--port", str(port), "--admin-port", str(admin_port)]
    command += ["--weights", str(tmp_path / "absent.safetensors"), "--allow-untrained", "--warmup-size", "8"]
    command += ["--torch-threads", "1", "--log-level", "info", "--drain-timeout-s", "2"]
    command += ["--header-timeout-s", "1", "--max-connections", "3", "--body-timeout-s", "60"]
    log_path = tmp_path / "server.log"
    log = log_path.open("w")
    process = subprocess.Popen(command, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, env=os.environ.copy())
    try:
        wait_until(lambda: httpx.get(f"{admin}/readyz", timeout=5).status_code == 200, 240, "readiness")
        assert httpx.get(f"{base}/readyz", timeout=5).status_code == 404  # admin routes live on the admin port

        # Slow loris: a request head that never completes is closed after the header timeout.
        loris = raw_connection(port)
        loris.sendall(b"POST /upscale?scale=2 HTTP/1.1\r\nHost: x\r\n")
        started = time.monotonic()
        assert read_all(loris) == b""
        assert 0.5 < time.monotonic() - started < 5
        loris.close()

        # Connection cap: three idle connections are allowed, a fourth gets the JSON 503 and is closed.
        idle = [raw_connection(port) for _ in range(3)]
        time.sleep(0.2)
        extra = raw_connection(port)
        answer = read_all(extra)
        assert answer.startswith(b"HTTP/1.1 503") and b'"too_many_connections"' in answer
        for sock in [*idle, extra]:
            sock.close()
        time.sleep(1.5)  # the idle ones are gone (closed here, or by the header timeout)

        # A stalled upload during a drain ends at the drain deadline with the JSON 503, and the server exits.
        stalled = raw_connection(port)
        stalled.sendall(b"POST /upscale?scale=2 HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n")
        stalled.sendall(b"Content-Length: 10000\r\n\r\n" + b"\x89PNG" + b"\0" * 100)
        wait_until(lambda: scrape(admin)[("anysr_in_flight_requests", ())] == 1, 30, "the upload in flight")
        process.send_signal(signal.SIGTERM)
        stalled.settimeout(20)
        answer = read_all(stalled)
        stalled.close()
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 503"), answer[:200]
        assert b"application/json" in head.lower() and b'"draining"' in body
        assert process.wait(timeout=30) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        log.close()
    text = log_path.read_text()
    assert "closed a connection that sent no complete request head" in text
    assert "Traceback" not in text
