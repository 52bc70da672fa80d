"""Start and stop ``anysr serve`` for a policy comparison: a subprocess on 127.0.0.1 and a free port.

The server is a separate process (never imported), started with ``--policy`` and the caller's flags,
its output written to a log file. Start-up waits for ``GET /readyz`` to answer 200 (the server warms
every width first, which takes a while on a CPU), and fails with the log's tail if the process exits
or the wait times out. Stopping sends SIGTERM, so the server drains as in production, and kills the
process only if it outlives the stop timeout.
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx

LOOPBACK = "127.0.0.1"
DEFAULT_COMMAND: tuple[str, ...] = (sys.executable, "-m", "cli", "serve")


#: The server's policy syntax (``server/scheduler.py`` parses it; the server validates the width itself).
_POLICY = re.compile(r"^(adaptive|scale-groups|fixed:(0|1)?\.\d+|fixed:1)$")


def check_policy(text: str) -> str:
    """``adaptive``, ``scale-groups`` or ``fixed:W``, lower-cased and stripped; ValueError otherwise."""
    policy = text.strip().lower()
    if not _POLICY.match(policy):
        raise ValueError(f"policy must be adaptive, scale-groups or fixed:W (e.g. fixed:1.0), got {text!r}")
    return policy


class ServerStartError(RuntimeError):
    """The server exited or did not become ready in time."""


@dataclass(frozen=True)
class ServerOptions:
    """How to start each server: the command, flags for every policy, and the waits."""

    command: tuple[str, ...] = DEFAULT_COMMAND
    allow_untrained: bool = False
    weights: Path | None = None
    max_requests_per_client: int | None = None
    extra_args: tuple[str, ...] = ()
    ready_timeout_s: float = 600.0
    stop_timeout_s: float = 60.0
    env: dict[str, str] = field(default_factory=dict)

    @staticmethod
    def parse_command(text: str | None) -> tuple[str, ...]:
        return DEFAULT_COMMAND if not text else tuple(shlex.split(text))


def free_loopback_port() -> int:
    """A TCP port that is free on 127.0.0.1 right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((LOOPBACK, 0))
        return int(probe.getsockname()[1])


def serve_command(policy: str, port: int, options: ServerOptions) -> list[str]:
    """The full argv for one server; the caller's extra flags come last so they can override ours."""
    argv = [*options.command, "--host", LOOPBACK, "--port", str(port), "--policy", policy]
    if options.allow_untrained:
        argv.append("--allow-untrained")
    if options.weights is not None:
        argv += ["--weights", str(options.weights)]
    if options.max_requests_per_client is not None:
        argv += ["--max-requests-per-client", str(options.max_requests_per_client)]
    return argv + list(options.extra_args)


def _log_tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def wait_ready(url: str, process: subprocess.Popen[bytes], timeout_s: float, log_path: Path) -> float:
    """Poll ``/readyz`` until 200; return the seconds it took. Raises if the process dies or time runs out."""
    started = time.monotonic()
    with httpx.Client(timeout=httpx.Timeout(5.0), trust_env=False) as client:
        while True:
            code = process.poll()
            if code is not None:
                raise ServerStartError(f"server exited with status {code} before it was ready:\n{_log_tail(log_path)}")
            try:
                if client.get(f"{url}/readyz").status_code == 200:
                    return time.monotonic() - started
            except httpx.HTTPError:
                pass  # not listening yet
            if time.monotonic() - started > timeout_s:
                raise ServerStartError(f"server not ready after {timeout_s:.0f} s:\n{_log_tail(log_path)}")
            time.sleep(0.25)


def stop_server(process: subprocess.Popen[bytes], timeout_s: float) -> int:
    """SIGTERM (the server drains), then SIGKILL after ``timeout_s``; returns the exit status."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            return process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
    return process.wait()


@dataclass
class RunningServer:
    policy: str
    url: str
    argv: list[str]
    log_path: Path
    ready_after_s: float
    exit_status: int | None = None


@contextlib.contextmanager
def running_server(policy: str, options: ServerOptions, log_path: Path) -> Iterator[RunningServer]:
    """Start a server for ``policy``, yield it once ready, stop it on exit (also after an error)."""
    port = free_loopback_port()
    argv = serve_command(policy, port, options)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONUNBUFFERED": "1", **options.env}
    with log_path.open("wb") as log:
        process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        url = f"http://{LOOPBACK}:{port}"
        server = RunningServer(policy, url, argv, log_path, ready_after_s=0.0)
        try:
            server.ready_after_s = wait_ready(url, process, options.ready_timeout_s, log_path)
            yield server
        finally:
            server.exit_status = stop_server(process, options.stop_timeout_s)


def describe_argv(argv: Sequence[str]) -> str:
    return shlex.join(argv)
