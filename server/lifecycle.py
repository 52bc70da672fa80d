"""Readiness, draining and in-flight accounting, plus the uvicorn server that drains on SIGTERM.

:class:`Lifecycle` is plain state (no event loop needed), so a signal handler can flip it. The
app's lifespan marks it ready after warm-up; routes admit requests through it. On SIGTERM,
:class:`GracefulServer` flips readiness (``/readyz`` → 503) and refuses new upscales with 503, lets
in-flight requests finish for up to the drain timeout, and only then lets uvicorn stop. A second
signal forces an immediate exit.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import Awaitable, Callable, Iterator
from types import FrameType

import uvicorn

from server.errors import TooManyRequests, Unavailable

logger = logging.getLogger("anysr.server.lifecycle")


class Lifecycle:
    """Whether the server takes work, and how much it is doing, per client and in total."""

    def __init__(self, max_requests_per_client: int, max_requests_per_key: int | None = None) -> None:
        self.max_requests_per_client = max_requests_per_client
        self.max_requests_per_key = max_requests_per_key or max_requests_per_client
        self.ready = False
        self.draining = False
        self.in_flight = 0
        self._per_client: dict[str, int] = {}
        self._per_key: dict[str, int] = {}
        self._drain_deadline: float | None = None
        self._expiry_hooks: list[Callable[[], Awaitable[None]]] = []
        #: Set when the drain deadline passes: request bodies still arriving then end with 503 draining.
        self.drain_expired = asyncio.Event()

    def mark_ready(self) -> None:
        self.ready = True

    def begin_drain(self, timeout_s: float | None = None) -> None:
        """Stop taking new work; in-flight requests carry on. Idempotent.

        The first call that gives ``timeout_s`` fixes one drain deadline, which every later shutdown
        step (uvicorn's exit, the lifespan's wait, the batcher's close) spends from: a straggling request
        then costs the drain timeout once, not once per step.
        """
        if not self.draining:
            logger.info("draining: refusing new requests, %d in flight", self.in_flight)
        self.draining = True
        if self._drain_deadline is None and timeout_s is not None:
            self._drain_deadline = time.monotonic() + timeout_s

    def on_drain_expired(self, hook: Callable[[], Awaitable[None]]) -> None:
        """Run ``hook`` when the drain deadline passes with requests still in flight (the app closes
        its batcher there, so stragglers' queued tiles fail as 503 ``draining`` before uvicorn cancels
        their handlers, which would answer 500)."""
        self._expiry_hooks.append(hook)

    async def expire_drain(self) -> None:
        """The drain deadline has passed: run the expiry hooks once."""
        self.drain_expired.set()
        hooks, self._expiry_hooks = self._expiry_hooks, []
        for hook in hooks:
            await hook()

    def drain_time_left(self) -> float | None:
        """Seconds left before the drain deadline (never negative), or None if none was set."""
        if self._drain_deadline is None:
            return None
        return max(0.0, self._drain_deadline - time.monotonic())

    @property
    def accepting(self) -> bool:
        return self.ready and not self.draining

    @contextlib.contextmanager
    def admit(self, client: str, key_id: str | None = None) -> Iterator[None]:
        """Count one request from ``client`` (and API key ``key_id``, if any) for its duration; 503 if not
        accepting, 429 if the address or the key already has its most requests in flight."""
        if self.draining:
            raise Unavailable("draining", "server is shutting down; retry on another instance", retry_after_s=1)
        if not self.ready:
            raise Unavailable("not_ready", "server is warming up; retry shortly", retry_after_s=1)
        current = self._per_client.get(client, 0)
        if current >= self.max_requests_per_client:
            raise TooManyRequests(
                "too_many_requests",
                f"client {client} already has {current} requests in flight; at most "
                f"{self.max_requests_per_client} are allowed",
                retry_after_s=1,
            )
        if key_id is not None and self._per_key.get(key_id, 0) >= self.max_requests_per_key:
            raise TooManyRequests(
                "too_many_requests",
                f"API key {key_id} already has {self._per_key[key_id]} requests in flight; at most "
                f"{self.max_requests_per_key} are allowed",
                retry_after_s=1,
            )
        _bump(self._per_client, client, +1)
        if key_id is not None:
            _bump(self._per_key, key_id, +1)
        self.in_flight += 1
        try:
            yield
        finally:
            self.in_flight -= 1
            _bump(self._per_client, client, -1)
            if key_id is not None:
                _bump(self._per_key, key_id, -1)

    async def wait_idle(self, timeout_s: float, poll_s: float = 0.05) -> bool:
        """Wait until no request is in flight or ``timeout_s`` passes; True if idle."""
        deadline = time.monotonic() + timeout_s
        while self.in_flight and time.monotonic() < deadline:
            await asyncio.sleep(poll_s)
        return self.in_flight == 0


class GracefulServer(uvicorn.Server):
    """uvicorn, but SIGTERM/SIGINT drain first: readiness flips, new work gets 503, in-flight finishes."""

    def __init__(self, config: uvicorn.Config, lifecycle: Lifecycle, drain_timeout_s: float) -> None:
        super().__init__(config)
        self.lifecycle = lifecycle
        self.drain_timeout_s = drain_timeout_s
        self._drain_started_at: float | None = None

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self._drain_started_at is not None or not self.started:
            # Second signal, or a signal before start-up finished: stop now.
            logger.warning("signal %s: stopping without waiting for in-flight requests", signal.Signals(sig).name)
            self.force_exit = self._drain_started_at is not None
            self.should_exit = True
            return
        logger.info("signal %s: draining for up to %.1f s", signal.Signals(sig).name, self.drain_timeout_s)
        self._drain_started_at = time.monotonic()
        self.lifecycle.begin_drain(self.drain_timeout_s)

    async def on_tick(self, counter: int) -> bool:
        if self._drain_started_at is not None and not self.should_exit:
            waited = time.monotonic() - self._drain_started_at
            if self.lifecycle.in_flight == 0:
                logger.info("drained after %.2f s", waited)
                self.should_exit = True
            elif (self.lifecycle.drain_time_left() or 0.0) <= 0.0:
                logger.error("drain timeout: %d requests still in flight", self.lifecycle.in_flight)
                await self.lifecycle.expire_drain()
                self.should_exit = True
        return await super().on_tick(counter)


def _bump(counts: dict[str, int], name: str, delta: int) -> None:
    remaining = counts.get(name, 0) + delta
    if remaining > 0:
        counts[name] = remaining
    else:
        counts.pop(name, None)
