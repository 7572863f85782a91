"""The console application: ``create_app(store, settings=...)`` builds the Starlette app.

Routes come from the page modules (:mod:`keel.console._pages`); this module
adds what every console has: ``/login`` and ``/logout``, the ``/live`` event
stream, ``/static/`` assets from the package (no network needed at run time),
``/healthz`` and the console's own ``/metrics``. :class:`~keel.console._guard.Guard`
wraps it all (headers, login, CSRF). The one store watcher of
:class:`~keel.console._live.Hub` runs for the app's lifespan.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jinja2
import markupsafe
from argon2 import PasswordHasher
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from keel.console._audit import Audit
from keel.console._flash import Flashes
from keel.console._guard import Guard
from keel.console._live import Hub, Receive, Scope, Send, live_endpoint
from keel.console._login import login_routes
from keel.console._metrics import ConsoleMetrics
from keel.console._pages import Done, Page, load_pages, render, status_of, to_json, wants_json
from keel.console._ratelimit import LoginLimiter
from keel.console._sessions import Sessions
from keel.console._settings import ConsoleSettings
from keel.console._setup import SetupToken, setup_routes
from keel.console._users import Users
from keel.errors import KeelError
from keel.store import Store

__all__ = ["Console", "create_app"]

log = logging.getLogger("keel.console")
_HERE = Path(__file__).parent


@dataclass
class Console:
    """Everything a console page can reach: the store and the console's parts."""

    store: Store
    settings: ConsoleSettings
    users: Users
    sessions: Sessions
    audit: Audit
    limiter: LoginLimiter
    metrics: ConsoleMetrics
    hub: Hub
    templates: jinja2.Environment
    pages: list[Page] = field(default_factory=list)
    flashes: Flashes = field(default_factory=Flashes)
    setup: SetupToken = field(default_factory=SetupToken)

    async def record(self, actor: str, action: str, done: Done) -> None:
        """Write the audit record of a change (who, what, before, after)."""
        await self.audit.record(
            actor,
            action,
            done.target,
            before=done.before,
            after=done.after,
            detail=dict(done.detail) if done.detail else None,
        )

    def __repr__(self) -> str:
        return f"Console(store={self.store!r}, pages={[p.name for p in self.pages]})"


def templates() -> jinja2.Environment:
    """The console's template environment (autoescape on, undefined names are errors)."""
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(_HERE / "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["tojson_pretty"] = to_json
    env.filters["when"] = when
    env.filters["brief"] = brief
    env.globals["csrf_field"] = _csrf_field
    return env


@jinja2.pass_context
def _csrf_field(context: jinja2.runtime.Context) -> Any:
    token = context.get("csrf_token", "")
    return markupsafe.Markup('<input type="hidden" name="csrf" value="{}">').format(token)


def when(value: object) -> str:
    """A time (epoch seconds or datetime) as ``YYYY-MM-DD HH:MM:SS`` UTC; ``-`` if unknown."""
    if isinstance(value, int | float) and not isinstance(value, bool) and value > 0:
        value = datetime.fromtimestamp(value, UTC)
    if isinstance(value, datetime):
        return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")
    return "-"


_NOISE = frozenset({"at", "by", "note"})


def brief(value: object, limit: int = 60) -> str:
    """A one-line summary of a JSON value (``weight=5 draining``), for tables."""
    if value is None:
        return "∅"
    if isinstance(value, dict):
        parts = []
        for key, item in value.items():
            if key in _NOISE or item in (None, False, "", [], {}):
                continue
            parts.append(str(key) if item is True else f"{key}={brief(item, limit)}")
        text = " ".join(parts) or "-"
    elif isinstance(value, list):
        text = ", ".join(brief(item, limit) for item in value)
    else:
        text = str(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def create_app(
    store: Store,
    *,
    settings: ConsoleSettings | None = None,
    hasher: PasswordHasher | None = None,
    pages: list[Page] | None = None,
) -> Starlette:
    """The console as an ASGI app over ``store``.

    Args:
        store: the store every page reads and changes.
        settings: binding and guard settings (default :class:`ConsoleSettings`).
        hasher: the argon2 hasher (tests pass a cheaper one).
        pages: the pages to serve (default: every page module that exists).
    """
    settings = settings or ConsoleSettings()
    metrics = ConsoleMetrics()
    console = Console(
        store=store,
        settings=settings,
        users=Users(store, hasher=hasher),
        sessions=Sessions(store, ttl_s=settings.session_ttl_s),
        audit=Audit(store),
        limiter=LoginLimiter(
            per_user=settings.login_per_user,
            per_address=settings.login_per_address,
            window_s=settings.login_window_s,
        ),
        metrics=metrics,
        hub=Hub(store, metrics=metrics),
        templates=templates(),
        pages=pages if pages is not None else load_pages(),
    )
    routes: list[BaseRoute] = [
        *login_routes(),
        *setup_routes(),
        Route("/live", _Live(console.hub)),
        Route("/healthz", _healthz),
        Route("/metrics", _metrics),
        Mount("/static", StaticFiles(directory=_HERE / "static"), name="static"),
    ]
    for page in console.pages:
        routes.extend(page.routes)

    @contextlib.asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        task = asyncio.create_task(console.hub.run(), name="keel-console-live")
        try:
            yield
        finally:
            console.hub.close()
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    app = Starlette(routes=routes, lifespan=lifespan, exception_handlers={KeelError: _keel_error})
    app.state.console = console
    app.add_middleware(_GuardFactory, console=console)
    return app


class _GuardFactory(Guard):
    """``add_middleware`` passes keyword arguments; Guard takes them as such."""

    def __init__(self, app: Any, *, console: Console) -> None:
        super().__init__(app, console)


class _Live:
    """``/live`` as a raw ASGI endpoint (the stream must control its own sends)."""

    def __init__(self, hub: Hub) -> None:
        self.hub = hub

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await live_endpoint(self.hub, scope, receive, send)


async def _keel_error(request: Request, exc: Exception) -> Response:
    """A page whose read failed (the store is down, a bad name...): say so, keep serving."""
    assert isinstance(exc, KeelError)
    status = status_of(exc)
    if status == 503:
        log.warning("console page %s failed: %s", request.url.path, exc)
    if wants_json(request):
        return JSONResponse({"ok": False, "error": str(exc)}, status_code=status)
    title = "Store unavailable" if status == 503 else "Cannot show this"
    return render(request, "error.html", status_code=status, title=title, message=str(exc))


async def _healthz(_request: Request) -> Response:
    return PlainTextResponse("ok")


async def _metrics(request: Request) -> Response:
    registry = request.app.state.console.metrics.registry
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
