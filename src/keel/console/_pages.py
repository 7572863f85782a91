"""The page registry and the helpers every console page is written with.

This is the interface page modules build on; it stays stable.

A page is a module in :mod:`keel.console.pages` listed in :data:`PAGE_MODULES`,
exposing:

- ``ROUTES``: a list of Starlette routes (``Route("/jobs", jobs_page)``...).
  Paths are the page's own (``/jobs``, ``/jobs/{name}/trigger``).
- ``NAV``: a :class:`Nav` entry for the menu, or None for no entry.

Every route is behind the login: the app's middleware answers 401 (or a
redirect to ``/login`` for a browser GET) before a page runs, and refuses any
POST/PUT/PATCH/DELETE without the session's CSRF token (403). Pages add:

- ``@require(Role.OPERATOR)`` on a read endpoint that needs more than viewer.
- ``@action(Role.OPERATOR, "config.publish")`` on every endpoint that changes
  something: it checks the role (403), reads the form, runs the handler
  ``async def handler(request, form) -> Done`` and writes the audit record
  from the returned :class:`Done` (who, action, target, before, after). A
  handler raising ``ValidationError``/``ConflictError``/``NotFoundError``
  (keel.errors) becomes a flash message on the page the form came from (303
  redirect), or JSON ``{"ok": false, "error": ...}`` with 400/409/404 when the
  request asks for JSON (``Accept: application/json``). Success redirects
  (303) to ``Done.redirect`` or the form's ``next`` field (a local path), with
  ``Done.message`` flashed; JSON callers get ``{"ok": true, ...}``.
- ``render(request, "jobs.html", **context)`` renders a template of
  ``keel/console/templates`` that extends ``base.html`` (blocks ``title`` and
  ``content``). Templates get ``user``, ``can(role_name)``, ``csrf_field()``,
  ``csrf_token``, ``nav``, ``flashes`` and ``request``. Autoescape is on.
- Live parts: wrap a part of the page in a named block whose element has the
  same id and ``data-live`` topics::

      {% block runs %}<section id="runs" data-live="jobs">...</section>{% endblock %}

  When a store change under a topic happens, ``console.js`` fetches the page
  again with ``?fragment=runs`` and swaps the element; ``render`` answers such
  a request with that block alone. A topic is the first segment of a changed
  key (``services``, ``overrides``, ``health``, ``config``,
  ``config-history``, ``jobs``, ``locks``...), or ``console/<x>`` keys as
  ``audit``, ``users``. See :mod:`keel.console._live`.
- ``console(request)`` is the :class:`~keel.console._app.Console` (store,
  users, sessions, audit, settings); ``current_user(request)`` the user.

Content Security Policy: no inline ``<script>``, no ``on*=`` attributes, no
``style=`` attributes (use classes from ``console.css``); inline SVG with
presentation attributes (``fill``, ``width``...) is fine. Mark destructive
buttons with ``data-confirm="Really roll back?"`` and console.js asks first.
"""

from __future__ import annotations

import functools
import importlib
import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from types import ModuleType
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import BaseRoute

from keel.console._users import Role, User
from keel.errors import ConflictError, KeelError, NotFoundError, ValidationError

if TYPE_CHECKING:
    from keel.console._app import Console

_log = logging.getLogger("keel.console")

__all__ = [
    "PAGE_MODULES",
    "Done",
    "Nav",
    "Page",
    "action",
    "console",
    "current_user",
    "flash",
    "forbidden",
    "load_pages",
    "render",
    "require",
    "status_of",
    "to_json",
    "wants_json",
]

PAGE_MODULES = (
    "overview",
    "services",
    "configs",
    "jobs",
    "coord",
    "sagas",
    "store",
    "audit",
    "users",
)
"""Page modules in menu order; a module not written yet is skipped."""

Endpoint = Callable[[Request], Awaitable[Response]]
Handler = Callable[[Request, FormData], Awaitable["Done"]]


@dataclass(frozen=True, slots=True)
class Nav:
    """A menu entry: label, path, and the least role that sees it."""

    label: str
    path: str
    role: Role = Role.VIEWER


@dataclass(frozen=True, slots=True)
class Page:
    """A loaded page module: its name, menu entry and routes."""

    name: str
    nav: Nav | None
    routes: tuple[BaseRoute, ...]


@dataclass(frozen=True, slots=True)
class Done:
    """What an action did, for the audit log and the answer.

    Attributes:
        target: what was changed (``config/orders.yaml``, ``instance/orders/i-1``).
        before: the state or version before (JSON-able), if any.
        after: the state or version after (JSON-able), if any.
        detail: anything else worth keeping (JSON-able mapping).
        message: shown to the operator on success.
        redirect: where to go next (a local path); default the form's ``next``.
        data: extra fields of the JSON answer (``{"ok": true, "message": ..., **data}``).
    """

    target: str
    before: Any = None
    after: Any = None
    detail: Mapping[str, Any] | None = None
    message: str = ""
    redirect: str | None = None
    data: Mapping[str, Any] = field(default_factory=dict)


def load_pages(names: tuple[str, ...] = PAGE_MODULES) -> list[Page]:
    """Import the page modules that exist, in order."""
    pages: list[Page] = []
    for name in names:
        module = _import_page(name)
        if module is None:
            continue
        pages.append(Page(name, getattr(module, "NAV", None), tuple(module.ROUTES)))
    return pages


def _import_page(name: str) -> ModuleType | None:
    qualified = f"keel.console.pages.{name}"
    try:
        return importlib.import_module(qualified)
    except ModuleNotFoundError as exc:
        if exc.name == qualified:
            return None  # that page is not written yet
        raise


def console(request: Request) -> Console:
    """The console (store, users, sessions, audit, settings) serving ``request``."""
    return request.app.state.console  # type: ignore[no-any-return]


def current_user(request: Request) -> User:
    """The logged-in user (every page runs behind the login)."""
    return request.scope["keel.user"]  # type: ignore[no-any-return]


def wants_json(request: Request) -> bool:
    """Whether the caller asked for JSON rather than a page."""
    return "application/json" in request.headers.get("accept", "")


def flash(request: Request, message: str, *, level: str = "info") -> None:
    """Show ``message`` on the next page this session renders."""
    session = request.scope.get("keel.session")
    if session is not None:
        console(request).flashes.add(session.key, level, message)


def render(request: Request, template: str, *, status_code: int = 200, **context: Any) -> Response:
    """Render a page template (or, for ``?fragment=NAME``, its block ``NAME`` alone)."""
    app = console(request)
    tpl = app.templates.get_template(template)
    user: User | None = request.scope.get("keel.user")
    session = request.scope.get("keel.session")
    fragment = request.query_params.get("fragment") or ""
    whole = fragment not in tpl.blocks
    base = {
        "request": request,
        "user": user,
        "can": lambda role: user is not None and user.role >= Role.parse(role),
        "csrf_token": session.csrf if session else "",
        "nav": [p.nav for p in app.pages if p.nav and user and user.role >= p.nav.role],
        "path": request.url.path,
        # only a whole page shows (and so takes) the flashes: a live fragment fetched
        # while the browser follows a redirect must not eat the message meant for it
        "flashes": app.flashes.pop(session.key) if session and whole else [],
        "settings": app.settings,
        # the live hub's revision at render: the browser refreshes on connecting
        # only if the hub has moved since (a change made in between has no event)
        "live_revision": app.hub.revision,
    }
    base.update(context)
    if not whole:
        ctx = tpl.new_context(base)
        html = "".join(tpl.blocks[fragment](ctx))
    else:
        html = tpl.render(base)
    return HTMLResponse(html, status_code=status_code)


def require(role: Role) -> Callable[[Endpoint], Endpoint]:
    """Decorate an endpoint that needs at least ``role`` (403 otherwise)."""

    def decorate(endpoint: Endpoint) -> Endpoint:
        @functools.wraps(endpoint)
        async def guarded(request: Request) -> Response:
            if current_user(request).role < role:
                return forbidden(request, role)
            return await endpoint(request)

        return guarded

    return decorate


def forbidden(request: Request, role: Role) -> Response:
    """403: the user's role is below ``role``."""
    message = f"needs the {role.label} role"
    if wants_json(request):
        return JSONResponse({"ok": False, "error": message}, status_code=403)
    return render(request, "error.html", status_code=403, title="Forbidden", message=message)


def action(role: Role, name: str) -> Callable[[Handler], Endpoint]:
    """Decorate a change handler: role check, form, audit record, answer.

    Args:
        role: the least role allowed (403 below it).
        name: the action's name in the audit log (``config.publish``).
    """

    def decorate(handler: Handler) -> Endpoint:
        @functools.wraps(handler)
        async def endpoint(request: Request) -> Response:
            user = current_user(request)
            if user.role < role:
                return forbidden(request, role)
            form = await request.form()
            back = _local_path(form.get("next")) or _local_path(request.headers.get("referer"))
            app = console(request)
            try:
                done = await handler(request, form)
            except KeelError as exc:  # refused, or the store failed: nothing was done
                app.metrics.actions.labels(name, "refused").inc()
                return _refused(request, exc, back)
            app.metrics.actions.labels(name, "done").inc()
            unaudited = await _audit(app, user.name, name, done)
            if wants_json(request):
                extra = {"audit_error": unaudited} if unaudited else {}
                return JSONResponse({"ok": True, "message": done.message, **done.data, **extra})
            if done.message:
                flash(request, done.message)
            if unaudited:
                flash(request, unaudited, level="error")
            return RedirectResponse(done.redirect or back or "/", status_code=303)

        return endpoint

    return decorate


async def _audit(app: Console, actor: str, action: str, done: Done) -> str | None:
    """Write the audit record of a change that is done; say why if it could not be written.

    The change itself stands (it was committed before): answering with an
    error would invite the operator to make it again. The miss is logged and
    counted (``keel_console_actions_total{outcome="unaudited"}``) instead.
    """
    try:
        await app.record(actor, action, done)
    except KeelError as exc:
        app.metrics.actions.labels(action, "unaudited").inc()
        _log.error(
            "console action %s by %s on %s was not audited: %s", action, actor, done.target, exc
        )
        return f"done, but its audit record could not be written ({exc}); the change stands"
    return None


def status_of(exc: KeelError) -> int:
    """The HTTP status that answers ``exc``: 400, 404, 409, or 503 for a store failure."""
    for kind, status in _STATUS:
        if isinstance(exc, kind):
            return status
    return 503


_STATUS: tuple[tuple[type[KeelError], int], ...] = (
    (ValidationError, 400),
    (NotFoundError, 404),
    (ConflictError, 409),
)


def _refused(request: Request, exc: KeelError, back: str | None) -> Response:
    status = status_of(exc)
    if wants_json(request):
        return JSONResponse({"ok": False, "error": str(exc)}, status_code=status)
    flash(request, str(exc), level="error")
    return RedirectResponse(back or "/", status_code=303)


def _local_path(value: object) -> str | None:
    """``value`` as a path on this site, or None (never an open redirect)."""
    if not isinstance(value, str) or not value:
        return None
    parts = urlsplit(value)
    path = parts.path
    if not path.startswith("/") or path.startswith("//") or "\\" in path:
        return None
    return path + (f"?{parts.query}" if parts.query else "")


def to_json(value: Any) -> str:
    """A JSON text of ``value`` for display (sorted keys, indented)."""
    return json.dumps(value, indent=2, sort_keys=True, default=str)
