"""``anysr serve``: run the HTTP service (uvicorn) with settings from ``ANYSR_*`` env vars and flags.

Flags are generated from ``server.settings.Settings`` (one per field, same name with dashes), so the
two never drift; a flag given on the command line overrides the environment. A relative weights path
is resolved as ``server.model_source.weights_candidates`` says, so the default works from any
directory. Start-up stops with exit status 2 on an invalid setting or a missing weights file (unless
``--allow-untrained``), naming every place it looked.
"""

from __future__ import annotations

import argparse
import logging
import socket
import sys
import typing
from typing import Any

from pydantic import ValidationError

HELP = "Run the super-resolution HTTP server (settings: ANYSR_* env vars, overridden by flags)."


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _is_bool(annotation: Any) -> bool:
    return annotation is bool or (typing.get_origin(annotation) is not None and bool in typing.get_args(annotation))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from server.settings import Settings

    for name, field in Settings.model_fields.items():
        default = field.default
        if isinstance(default, tuple):
            default = ",".join(str(item) for item in default)
        help_text = f"{field.description} [env ANYSR_{name.upper()}; default {default}]"
        if _is_bool(field.annotation):
            parser.add_argument(
                _flag(name), dest=name, action=argparse.BooleanOptionalAction, default=None, help=help_text
            )
        else:
            parser.add_argument(_flag(name), dest=name, default=None, metavar=name.upper(), help=help_text)


def settings_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The flags actually given, as raw strings for pydantic to validate (``none`` clears an optional)."""
    from server.settings import Settings

    overrides: dict[str, Any] = {}
    for name in Settings.model_fields:
        value = getattr(args, name, None)
        if value is None:
            continue
        overrides[name] = None if isinstance(value, str) and value.strip().lower() == "none" else value
    return overrides


def run(args: argparse.Namespace) -> int:
    from server.app import create_app
    from server.lifecycle import GracefulServer
    from server.model_source import resolve_weights
    from server.settings import Settings

    try:
        settings = Settings(**settings_overrides(args))
    except ValidationError as error:
        print(f"anysr serve: invalid settings:\n{error}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )
    found, looked = resolve_weights(settings.weights, settings.data_dir)
    if found is not None:
        settings = settings.model_copy(update={"weights": found})
        logging.getLogger("anysr.server.model").info("weights file: %s", found)
    elif not settings.allow_untrained:
        places = "".join(f"\n    {path}" for path in looked)
        print(
            f"anysr serve: weights file {settings.weights} not found; looked at:{places}\n"
            "  Train one (anysr train), point --weights / ANYSR_WEIGHTS at an existing file (or ANYSR_DATA_DIR at\n"
            "  a directory holding it), or pass --allow-untrained to serve random weights (smoke tests only).",
            file=sys.stderr,
        )
        return 2
    app = create_app(settings)
    config = uvicorn_config(app, settings)
    sockets = None
    if settings.admin_port is not None:  # one server, two listening sockets; the app routes by port
        sockets = [config.bind_socket(), bind_socket(settings.host, settings.admin_port)]
    server = GracefulServer(config, app.state.lifecycle, settings.drain_timeout_s)
    server.run(sockets=sockets)
    return 0 if server.started else 1


def uvicorn_config(app: Any, settings: Any) -> Any:
    """uvicorn's configuration for ``app``: our h11 protocol (header timeout, connection cap), no proxy
    trusted unless ``forwarded_allow_ips`` names one, one second of grace after the drain."""
    import uvicorn

    from server.connections import guarded_protocol

    return uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        lifespan="on",
        # In-flight requests have already drained (GracefulServer) by the time uvicorn shuts down, or
        # the drain deadline has passed: connections still open then get one more second, not a
        # second drain timeout.
        timeout_graceful_shutdown=1,
        log_config=None,
        http=guarded_protocol(settings.header_timeout_s, settings.max_connections),
        # No proxy is trusted unless named: otherwise any client on a trusted address could pick its own
        # client address with X-Forwarded-For, and with it its own per-client limit.
        proxy_headers=settings.forwarded_allow_ips is not None,
        forwarded_allow_ips=settings.forwarded_allow_ips or "",
    )


def bind_socket(host: str, port: int) -> socket.socket:
    """A listening-ready TCP socket on ``host:port`` (for the admin port)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.set_inheritable(True)
    return sock
