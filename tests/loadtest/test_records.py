"""Reading the server's answer: Server-Timing, error JSON, width/FLOPs headers and output size."""

from __future__ import annotations

import io

import httpx
from PIL import Image

from loadtest.records import RequestRecord, error_code_of, fill_from_response, parse_server_timing


def test_server_timing_parsing() -> None:
    header = "queue;dur=13.801, decode;dur=28.9, compute;dur=167.424, encode;dur=1.346, total;dur=223.6"
    assert parse_server_timing(header) == {
        "queue": 13.801,
        "decode": 28.9,
        "compute": 167.424,
        "encode": 1.346,
        "total": 223.6,
    }
    assert parse_server_timing('cache;desc="hit", db;dur="5.5";desc=x, bad;dur=oops') == {"db": 5.5}
    assert parse_server_timing(None) == {}


def test_error_code() -> None:
    assert error_code_of(b'{"error": {"code": "queue_full", "message": "busy"}}') == "queue_full"
    assert error_code_of(b"<html>502</html>") is None
    assert error_code_of(b'{"detail": "x"}') is None


def blank_record() -> RequestRecord:
    return RequestRecord(index=0, scheduled_s=0.0, outcome="client_timeout", scale=2.5, input_pixels=100)


def test_fill_from_a_success() -> None:
    buffer = io.BytesIO()
    Image.new("RGB", (30, 20)).save(buffer, format="PNG")
    headers = httpx.Headers(
        {
            "X-AnySR-Width": "0.7",
            "X-AnySR-FLOPs": "123456",
            "X-AnySR-Reason": "cpu_busy",
            "Server-Timing": "queue;dur=2.0, compute;dur=40.0, total;dur=50.0",
        }
    )
    record = blank_record()
    fill_from_response(record, 200, headers, buffer.getvalue())
    assert record.ok and record.width == 0.7 and record.flops == 123456 and record.reason == "cpu_busy"
    assert (record.server_queue_ms, record.server_compute_ms, record.server_total_ms) == (2.0, 40.0, 50.0)
    assert record.output_pixels == 600


def test_fill_from_an_error() -> None:
    record = blank_record()
    fill_from_response(record, 503, httpx.Headers({"Retry-After": "1"}), b'{"error": {"code": "draining"}}')
    assert record.outcome == "503" and record.error_code == "draining" and not record.ok and record.width is None
