"""``/login`` and ``/logout``: rate-limited password login, a fresh session each time.

The login form is protected against cross-site posting by a double-submit
token (a random value in a SameSite=Strict cookie that the form repeats);
once logged in, the session's own CSRF token takes over.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from keel.console._csrf import FIELD, LOGIN_COOKIE, new_token, origin_ok, token_matches
from keel.console._pages import _local_path, console, render
from keel.console._sessions import COOKIE

if TYPE_CHECKING:
    from keel.console._app import Console

__all__ = ["login_routes"]

log = logging.getLogger("keel.console")
_LOGIN_TOKEN_TTL_S = 3600


def login_routes() -> list[BaseRoute]:
    """The login and logout routes."""
    return [
        Route("/login", login_form, methods=["GET"]),
        Route("/login", login, methods=["POST"]),
        Route("/logout", logout, methods=["POST"]),
    ]


async def login_form(request: Request, *, error: str = "", status_code: int = 200) -> Response:
    """The login page (sets a fresh double-submit token)."""
    token = new_token()
    app = console(request)
    no_users = not await app.users.list() if not error else False
    response = render(
        request,
        "login.html",
        status_code=status_code,
        login_token=token,
        next=_local_path(request.query_params.get("next")) or "/",
        error=error,
        no_users=no_users,
    )
    _set_cookie(response, app, LOGIN_COOKIE, token, max_age=_LOGIN_TOKEN_TTL_S, path="/login")
    return response


async def login(request: Request) -> Response:
    """Check the password (rate-limited) and start a new session."""
    app = console(request)
    form = await request.form()
    name = str(form.get("username", ""))[:64].strip().lower()
    password = str(form.get("password", ""))
    if not origin_ok(request) or not token_matches(
        request.cookies.get(LOGIN_COOKIE, ""), str(form.get(FIELD, ""))
    ):
        app.metrics.logins.labels("csrf").inc()
        return await login_form(request, error="The form expired: try again.", status_code=403)
    address = request.client.host if request.client else "?"
    wait = app.limiter.retry_after(name, address)
    if wait > 0:
        app.metrics.logins.labels("limited").inc()
        log.warning("console login rate-limited for %r from %s", name, address)
        response = await login_form(
            request, error="Too many failed attempts: wait and try again.", status_code=429
        )
        response.headers["retry-after"] = str(int(wait) + 1)
        return response
    user = await app.users.verify(name, password)
    if user is None:
        app.limiter.failed(name, address)
        app.metrics.logins.labels("failed").inc()
        log.info("console login failed for %r from %s", name, address)
        return await login_form(request, error="Wrong user name or password.", status_code=401)
    app.limiter.succeeded(name, address)
    old = await app.sessions.get(request.cookies.get(COOKIE))
    if old is not None:
        await app.sessions.end(old)
    token, _session = await app.sessions.create(user.name)
    app.metrics.logins.labels("ok").inc()
    log.info("console login: %s from %s", user.name, address)
    response = RedirectResponse(_local_path(form.get("next")) or "/", status_code=303)
    _set_cookie(response, app, COOKIE, token, max_age=app.settings.session_ttl_s)
    response.delete_cookie(LOGIN_COOKIE, path="/login", httponly=True, samesite="strict")
    return response


async def logout(request: Request) -> Response:
    """End the session (behind the guard: needs the CSRF token like any change)."""
    app = console(request)
    session = request.scope.get("keel.session")
    if session is not None:
        await app.sessions.end(session)
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(
        COOKIE, path="/", secure=app.settings.secure_cookies, httponly=True, samesite="strict"
    )
    return response


def _set_cookie(
    response: Response, app: Console, name: str, value: str, *, max_age: int, path: str = "/"
) -> None:
    response.set_cookie(
        name,
        value,
        max_age=max_age,
        path=path,
        httponly=True,
        samesite="strict",
        secure=app.settings.secure_cookies,
    )
