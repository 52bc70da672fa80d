"""Which servers the load generator may hit: loopback only.

A load generator is a small denial-of-service tool, so it refuses any target that is not this
machine: ``localhost``, an IPv4 address in ``127.0.0.0/8`` or ``::1``. The check looks at the URL
literally (no DNS lookup), so a name that merely resolves to loopback is refused too; use the address.
"""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

ALLOWED_SCHEMES = ("http", "https")


class TargetNotAllowed(ValueError):
    """The URL is malformed or does not point at this machine."""


def is_loopback_host(host: str) -> bool:
    """True for ``localhost``, ``127.0.0.0/8`` and ``::1`` (brackets allowed), False for anything else."""
    name = host.strip().lower().removeprefix("[").removesuffix("]")
    if name == "localhost":
        return True
    try:
        address = ipaddress.ip_address(name)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_loopback


def check_target_url(url: str) -> str:
    """Return ``url`` without a trailing slash if it is an http(s) URL on loopback; raise otherwise."""
    parts = urlsplit(url.strip())
    if parts.scheme not in ALLOWED_SCHEMES:
        raise TargetNotAllowed(f"target URL must start with http:// or https://, got {url!r}")
    host = parts.hostname
    if not host:
        raise TargetNotAllowed(f"target URL has no host: {url!r}")
    if not is_loopback_host(host):
        raise TargetNotAllowed(
            f"refusing to load-test {host!r}: only loopback targets are allowed "
            "(localhost, 127.0.0.0/8 or ::1), got "
            f"{url!r}"
        )
    try:
        _ = parts.port  # raises on a non-numeric or out-of-range port
    except ValueError as error:
        raise TargetNotAllowed(f"target URL has an invalid port: {url!r} ({error})") from None
    return url.strip().rstrip("/")
