"""Helpers for loadtest tests: serve an ASGI app under uvicorn in a background thread on a free port."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any

import pytest
import uvicorn

from loadtest.server_process import LOOPBACK, free_loopback_port

ServeApp = Callable[..., AbstractContextManager[str]]


@contextmanager
def serve_in_thread(app: Any, lifespan: str = "off", start_timeout_s: float = 60.0) -> Iterator[str]:
    """Run ``app`` on 127.0.0.1:<free port> until the block exits; yields the base URL."""
    config = uvicorn.Config(
        app, host=LOOPBACK, port=free_loopback_port(), log_level="warning", ws="none", lifespan=lifespan
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + start_timeout_s
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.02)
    try:
        yield f"http://{LOOPBACK}:{config.port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)


@pytest.fixture
def serve_app() -> ServeApp:
    return serve_in_thread
