"""The upscale guard on the ASGI channel: body timeout (408), drain deadline (503), client disconnect (499).

The app is driven with hand-made ``receive`` channels, since a test client always sends whole bodies:
a body that stalls part-way, one that stalls until the drain deadline, one whose client goes away.
"""

from __future__ import annotations

import asyncio
import json
import logging

import pytest

from tests.server.helpers import TestClient, fast_settings, make_app
from tests.server.routes.test_upscale import PNG, requests_total


def scope_for(path: str = "/upscale", query: bytes = b"scale=2") -> dict:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": query,
        "root_path": "",
        "headers": [(b"content-type", b"image/png"), (b"host", b"test")],
        "client": ("127.0.0.1", 5000),
        "server": ("127.0.0.1", 8000),
        "state": {},
    }


def drive(client: TestClient, messages: list, stall: asyncio.Event | None = None) -> tuple[int, dict, dict]:
    """Run one request through the app on the client's event loop: ``messages`` are received in turn,
    then the channel stalls (or, if the last item is "disconnect", reports a disconnect)."""

    async def scenario():
        queue = list(messages)
        sent: list[dict] = []

        async def receive():
            if queue:
                item = queue.pop(0)
                if item == "disconnect":
                    return {"type": "http.disconnect"}
                return {"type": "http.request", "body": item, "more_body": True}
            await asyncio.Event().wait()  # the client stalls forever

        async def send(message):
            sent.append(message)

        await client.app(scope_for(), receive, send)
        start = next(message for message in sent if message["type"] == "http.response.start")
        body = b"".join(message.get("body", b"") for message in sent if message["type"] == "http.response.body")
        headers = {key.decode(): value.decode() for key, value in start["headers"]}
        return start["status"], headers, json.loads(body)

    return client.portal.call(scenario)


def test_a_body_that_stalls_gets_408_and_a_closed_connection():
    with TestClient(make_app(fast_settings(body_timeout_s=0.2))) as client:
        status, headers, body = drive(client, [PNG[:50]])
        assert status == 408 and body["error"]["code"] == "body_timeout" and "0.2 s" in body["error"]["message"]
        assert headers["connection"] == "close"
        assert client.app.state.lifecycle.in_flight == 0  # the slot is free again
        assert requests_total(client, 408) == 1


def test_a_body_still_arriving_at_the_drain_deadline_gets_the_json_503():
    with TestClient(make_app(fast_settings(body_timeout_s=60))) as client:
        lifecycle = client.app.state.lifecycle

        async def expire_soon():
            await asyncio.sleep(0.2)
            lifecycle.begin_drain(0.0)
            await lifecycle.expire_drain()

        client.portal.start_task_soon(expire_soon)
        status, headers, body = drive(client, [PNG[:50]])
        assert status == 503 and body["error"]["code"] == "draining"
        assert headers["retry-after"] == "1"


def test_a_client_that_disconnects_mid_upload_is_499_with_one_info_line_and_no_traceback(caplog):
    with TestClient(make_app()) as client:
        with caplog.at_level(logging.DEBUG, logger="anysr"):
            status, _, body = drive(client, [PNG[:50], "disconnect"])
        assert status == 499 and body["error"]["code"] == "client_closed"
        assert requests_total(client, 499) == 1 and requests_total(client, 500) == 0
        records = [record for record in caplog.records if record.levelno >= logging.INFO]
        assert len(records) == 1 and records[0].levelno == logging.INFO and "disconnected" in records[0].getMessage()
        assert records[0].exc_info is None


@pytest.mark.parametrize("form", [False, True])
def test_a_disconnect_during_a_multipart_upload_is_499_too(form):
    with TestClient(make_app()) as client:

        async def scenario():
            sent: list[dict] = []
            scope = scope_for()
            scope["headers"] = [(b"content-type", b"multipart/form-data; boundary=xx" if form else b"image/png")]
            messages = [{"type": "http.request", "body": b"--xx\r\n", "more_body": True}, {"type": "http.disconnect"}]

            async def receive():
                return messages.pop(0) if messages else {"type": "http.disconnect"}

            async def send(message):
                sent.append(message)

            await client.app(scope, receive, send)
            return next(message["status"] for message in sent if message["type"] == "http.response.start")

        assert client.portal.call(scenario) == 499
