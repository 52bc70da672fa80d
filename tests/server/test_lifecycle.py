"""server/lifecycle.py: admission (ready, draining, per-client cap) and waiting for idle."""

from __future__ import annotations

import asyncio
import time

import pytest

from server.errors import TooManyRequests, Unavailable
from server.lifecycle import Lifecycle


def test_not_ready_then_ready_then_draining():
    lifecycle = Lifecycle(max_requests_per_client=2)
    with pytest.raises(Unavailable, match="warming up") as caught:
        with lifecycle.admit("a"):
            pass
    assert caught.value.headers() == {"Retry-After": "1"}
    lifecycle.mark_ready()
    assert lifecycle.accepting
    with lifecycle.admit("a"):
        assert lifecycle.in_flight == 1
    lifecycle.begin_drain()
    assert not lifecycle.accepting
    with pytest.raises(Unavailable, match="shutting down"):
        with lifecycle.admit("a"):
            pass


def test_per_client_cap_is_429_and_released_on_exit():
    lifecycle = Lifecycle(max_requests_per_client=2)
    lifecycle.mark_ready()
    with lifecycle.admit("a"), lifecycle.admit("a"):
        with pytest.raises(TooManyRequests, match="client a already has 2 requests in flight; at most 2"):
            with lifecycle.admit("a"):
                pass
        with lifecycle.admit("b"):
            assert lifecycle.in_flight == 3
    with lifecycle.admit("a"):
        pass
    assert lifecycle.in_flight == 0


def test_errors_inside_release_the_slot():
    lifecycle = Lifecycle(max_requests_per_client=1)
    lifecycle.mark_ready()
    with pytest.raises(RuntimeError):
        with lifecycle.admit("a"):
            raise RuntimeError("boom")
    with lifecycle.admit("a"):
        assert lifecycle.in_flight == 1


def test_wait_idle():
    lifecycle = Lifecycle(max_requests_per_client=4)
    lifecycle.mark_ready()

    async def scenario():
        slot = lifecycle.admit("a")
        slot.__enter__()
        assert not await lifecycle.wait_idle(0.02, poll_s=0.005)
        asyncio.get_running_loop().call_later(0.02, slot.__exit__, None, None, None)
        return await lifecycle.wait_idle(1.0, poll_s=0.005)

    assert asyncio.run(scenario())


def test_the_first_drain_timeout_fixes_one_deadline_for_every_shutdown_step():
    lifecycle = Lifecycle(max_requests_per_client=4)
    assert lifecycle.drain_time_left() is None
    lifecycle.begin_drain()  # no timeout: draining, but no deadline yet
    assert lifecycle.draining and lifecycle.drain_time_left() is None
    lifecycle.begin_drain(0.2)
    first = lifecycle.drain_time_left()
    assert first is not None and 0.0 < first <= 0.2
    lifecycle.begin_drain(100.0)  # a later step (the lifespan) keeps the signal's deadline
    later = lifecycle.drain_time_left()
    assert later is not None and later <= first
    time.sleep(0.25)
    assert lifecycle.drain_time_left() == 0.0
