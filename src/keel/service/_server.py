"""The pieces a Service and its worker processes share: the uvicorn server, binding, app import."""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import socket
from collections.abc import Generator
from typing import Any

import uvicorn

from keel.errors import ValidationError
from keel.service._asgi import ASGIApp

__all__ = ["Server", "bind", "import_app", "server_config", "split_app"]


class Server(uvicorn.Server):
    """uvicorn's server with signal handling left to the Service, and a startup event."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.started_event = asyncio.Event()

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield  # the Service owns SIGTERM/SIGINT

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        self.started_event.set()


def server_config(
    app: ASGIApp,
    *,
    grace_s: float,
    log_level: str,
    proxy_headers: bool = True,
    http: type[asyncio.Protocol] | str = "httptools",
) -> uvicorn.Config:
    """uvicorn on the running loop (uvloop when the caller runs one), httptools, no access log.

    ``proxy_headers=False`` leaves ``X-Forwarded-*`` alone (an edge such as the gateway
    decides itself whom to believe); ``http`` may name a subclass of uvicorn's
    httptools protocol (the gateway's coalesces writes).
    """
    return uvicorn.Config(
        app,
        loop="none",
        http=http,
        lifespan="auto",
        log_config=None,
        log_level=log_level,
        access_log=False,
        # uvicorn hands it to asyncio.wait_for, which takes float seconds.
        timeout_graceful_shutdown=grace_s,  # type: ignore[arg-type]
        server_header=False,
        proxy_headers=proxy_headers,
    )


def bind(host: str, port: int, *, reuse_port: bool = False) -> socket.socket:
    """A TCP socket bound to ``host:port`` (not listening yet), inheritable.

    With ``reuse_port`` several processes bind the same port and the kernel
    spreads new connections over their listeners (Linux ``SO_REUSEPORT``).

    Raises:
        ValidationError: the address is taken or cannot be bound.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY only on sockets that say they are TCP,
    # and without it Nagle plus delayed ACKs hold every response ~40 ms (uvloop sets it anyway)
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ValidationError(
            f"cannot bind {host}:{port} ({exc.strerror}): pick another port or port=0"
        ) from exc
    sock.set_inheritable(True)
    return sock


def split_app(spec: str) -> tuple[str, str]:
    """``module:attribute`` as (module, attribute), without importing anything.

    Raises:
        ValidationError: ``spec`` is not of that form.
    """
    module_name, sep, attribute = spec.partition(":")
    if not sep or not module_name or not attribute:
        raise ValidationError(f"app {spec!r}: write module:attribute, e.g. 'myapp:app'")
    return module_name, attribute


def import_app(spec: str) -> Any:
    """The object ``module:attribute`` (dots allowed in the attribute) names.

    Raises:
        ValidationError: not ``module:attribute``, or the import or a lookup failed.
    """
    module_name, attribute = split_app(spec)
    try:
        target: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise ValidationError(f"app {spec!r}: cannot import {module_name!r} ({exc})") from exc
    for part in attribute.split("."):
        if not hasattr(target, part):
            raise ValidationError(f"app {spec!r}: {module_name!r} has no attribute {part!r}")
        target = getattr(target, part)
    return target
