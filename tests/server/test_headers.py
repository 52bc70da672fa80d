"""server/headers.py: budget and deadline headers, request ids, Server-Timing."""

from __future__ import annotations

import pytest

from models.widths import WIDTHS
from server.errors import BadRequest
from server.headers import Budget, parse_budget, parse_deadline_s, request_id_from, server_timing


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, Budget()),
        ("width=0.7", Budget(width=0.7)),
        ("gflops=40", Budget(flops=40_000_000_000)),
        ("gflops=0.5", Budget(flops=500_000_000)),
        (" gflops = 12.5 , width=1 ", Budget(width=1.0, flops=12_500_000_000)),
        ("width=.5", Budget(width=0.5)),
    ],
)
def test_parse_budget(value, expected):
    assert parse_budget(value, WIDTHS) == expected


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("", "must be 'width=W'"),
        ("width", "must be 'width=W'"),
        ("speed=3", "must be 'width=W'"),
        ("width=0.6", "width must be one of"),
        ("width=abc", "must be 'width=W'"),
        ("gflops=0", "positive number"),
        ("gflops=-1", "must be 'width=W'"),
        ("gflops=nan", "must be 'width=W'"),
        ("gflops=inf", "must be 'width=W'"),
        ("gflops=1e3", "must be 'width=W'"),
        ("GFLOPS=1", "must be 'width=W'"),  # the grammar is exact: lower-case keys, plain decimals
        ("gflops=1,gflops=2", "twice"),
        ("gflops=1,width=1,gflops=2", "must be 'width=W'"),
        ("gflops=\t1", "must be 'width=W'"),
        ("gflops=", "must be 'width=W'"),
    ],
)
def test_malformed_budget_is_400(value, message):
    with pytest.raises(BadRequest, match=message) as caught:
        parse_budget(value, WIDTHS)
    assert caught.value.status == 400 and caught.value.code == "invalid_budget"


def test_parse_deadline():
    assert parse_deadline_s(None) is None
    assert parse_deadline_s("250") == pytest.approx(0.25)
    assert parse_deadline_s("2.5e3") == pytest.approx(2.5)
    assert parse_deadline_s("3600000") == pytest.approx(3600)
    for value in ("0", "-5", "soon", "inf", "nan", " 5", "1_000", "3600001", ""):
        with pytest.raises(BadRequest, match="positive number of milliseconds"):
            parse_deadline_s(value)


def test_request_ids():
    assert request_id_from("abc-123") == "abc-123"
    fresh = request_id_from("has spaces\nand newline")
    assert len(fresh) == 32 and fresh != request_id_from(None)
    assert request_id_from("x" * 129) != "x" * 129


def test_server_timing_is_in_milliseconds():
    assert server_timing(queue=0.0012, compute=0.5) == "queue;dur=1.200, compute;dur=500.000"
