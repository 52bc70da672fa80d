"""Loopback only: the generator refuses every target that is not this machine, with a clear error."""

from __future__ import annotations

import argparse

import pytest

from loadtest.command import add_arguments, run
from loadtest.target import TargetNotAllowed, check_target_url


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8000",
        "http://127.0.0.1:8000/",
        "http://127.5.6.7",
        "http://localhost:1234",
        "https://LOCALHOST",
        "http://[::1]:8000",
        "http://[::ffff:127.0.0.1]:80",
    ],
)
def test_loopback_targets_are_accepted(url: str) -> None:
    assert check_target_url(url) == url.rstrip("/")


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http://10.0.0.1:8000", "only loopback targets are allowed"),
        ("http://example.com", "refusing to load-test 'example.com'"),
        ("http://0.0.0.0:8000", "only loopback"),
        ("http://127.0.0.1.nip.io", "only loopback"),
        ("http://[::ffff:8.8.8.8]", "only loopback"),
        ("http://[2001:db8::1]", "only loopback"),
        ("ftp://127.0.0.1", "must start with http:// or https://"),
        ("127.0.0.1:8000", "must start with http:// or https://"),
        ("http://", "has no host"),
        ("http://127.0.0.1:99999", "invalid port"),
    ],
)
def test_other_targets_are_refused(url: str, message: str) -> None:
    with pytest.raises(TargetNotAllowed, match=message):
        check_target_url(url)


def test_the_command_refuses_before_sending(capsys: pytest.CaptureFixture[str]) -> None:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(["run", "--url", "http://192.168.1.10:8000", "--quiet"])
    assert run(args) == 2
    assert "only loopback targets are allowed" in capsys.readouterr().err
