"""Serving the console: uvicorn on the running loop, with TLS when asked.

The console is an operator tool, not a registered service, so it runs its
own small uvicorn server rather than :class:`keel.service.Service` (which
registers instances and has no TLS): it binds where the settings say (a
non-loopback address only with TLS or ``allow_remote``, see
:class:`~keel.console.ConsoleSettings`), serves until cancelled or the
``stop`` event is set, and closes the live streams quickly on shutdown.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Callable, Generator

import uvicorn

from keel.console._app import create_app
from keel.console._settings import ConsoleSettings
from keel.console._users import Users
from keel.errors import ValidationError
from keel.store import Store

__all__ = ["FIRST_USER_HINT", "first_user_hint", "serve"]

FIRST_USER_HINT = (
    "no console user yet: create the first admin with 'keel console adduser NAME --role admin'"
)


class _Server(uvicorn.Server):
    """uvicorn's server leaving signals to the caller (``keel console``, ``keel up``)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


async def first_user_hint(store: Store) -> str | None:
    """The line telling how to create the first user, or None once a user exists."""
    return None if await Users(store).list() else FIRST_USER_HINT


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ValidationError(
            f"cannot bind the console to {host}:{port} ({exc.strerror}): pick another --port"
        ) from exc
    return sock


async def serve(
    store: Store,
    settings: ConsoleSettings,
    *,
    stop: asyncio.Event | None = None,
    on_ready: Callable[[str], None] | None = None,
    on_setup: Callable[[str], None] | None = None,
) -> None:
    """Serve the console over ``store`` until ``stop`` is set (or the task is cancelled).

    Args:
        store: the store every page reads and changes.
        settings: where to bind, TLS, limits.
        stop: set it to shut down.
        on_ready: called with the console's URL once it accepts connections.
        on_setup: while the store has no console user, called (after ``on_ready``)
            with a one-time link that creates the first admin in the browser
            (show it to the operator only: whoever opens it becomes admin).

    Raises:
        ValidationError: the address cannot be bound.
    """
    app = create_app(store, settings=settings)
    sock = _bind(settings.host, settings.port)
    config = uvicorn.Config(
        app,
        loop="none",
        http="httptools",
        lifespan="on",
        log_config=None,
        log_level="warning",
        access_log=False,
        server_header=False,
        ssl_certfile=settings.tls_cert,
        ssl_keyfile=settings.tls_key,
        timeout_graceful_shutdown=1,
    )
    server = _Server(config)
    port = sock.getsockname()[1]
    scheme = "https" if settings.tls else "http"
    host = settings.host if ":" not in settings.host else f"[{settings.host}]"
    url = f"{scheme}://{host}:{port}"
    stop = stop or asyncio.Event()

    async def run() -> None:
        await server.serve(sockets=[sock])

    task = asyncio.ensure_future(run())
    try:
        while not server.started:
            if task.done():
                await task
                return
            await asyncio.sleep(0.02)
        if on_ready is not None:
            on_ready(url)
        if on_setup is not None and not await Users(store).list():
            on_setup(f"{url}/setup?token={app.state.console.setup.issue()}")
        waiter = asyncio.ensure_future(stop.wait())
        await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
        waiter.cancel()
    finally:
        app.state.console.hub.close()
        server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError):
            await task
        sock.close()
