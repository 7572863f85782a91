"""The console's gate: security headers on every answer, login and CSRF before any page.

A pure ASGI middleware (bodies stream through; the live SSE stream too):

- on a loopback bind, a request whose ``Host`` is not a loopback name is
  refused (421): a page on another site that rebinds its DNS name to
  127.0.0.1 reaches nothing, not even ``/metrics``;
- every response gets a Content Security Policy without inline scripts or
  styles, ``X-Frame-Options: DENY``, ``nosniff``, ``Referrer-Policy``, and
  ``Cache-Control: no-store`` unless it is a static asset;
- outside :data:`PUBLIC` paths, a request without a valid session gets 401
  (or, for a browser page, a 303 to ``/login?next=...``);
- a request that may change something (any method but GET/HEAD/OPTIONS)
  must come from the console's own origin and carry the session's CSRF token
  (header or form field), else 403; its body (at most ``max_body_bytes``,
  else 413) is read here and replayed to the page.
"""

from __future__ import annotations

import time
from collections.abc import MutableMapping
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response

from keel.console._csrf import SAFE_METHODS, origin_ok, submitted_token, token_matches
from keel.console._live import Receive, Scope, Send
from keel.console._sessions import COOKIE
from keel.console._settings import is_loopback
from keel.errors import KeelError

if TYPE_CHECKING:
    from keel.console._app import Console

__all__ = ["CSP", "PUBLIC", "Guard"]

PUBLIC = frozenset({"/login", "/setup", "/healthz", "/metrics", "/favicon.ico"})
"""Paths served without a session (everything under ``/static/`` too)."""

CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)

_HEADERS = [
    (b"content-security-policy", CSP.encode()),
    (b"x-frame-options", b"DENY"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"same-origin"),
    (b"cross-origin-opener-policy", b"same-origin"),
]


class _BodyTooLarge(Exception):
    pass


class Guard:
    """Wraps the console's routes; see the module docstring."""

    def __init__(self, app: Any, console: Console) -> None:
        self.app = app
        self.console = console

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        send = self._headers(scope, send)
        if not self._host_ok(scope):
            await PlainTextResponse("unexpected Host header", status_code=421)(scope, receive, send)
            return
        path: str = scope["path"]
        if path in PUBLIC or path.startswith("/static/"):
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        try:
            session = await self.console.sessions.get(request.cookies.get(COOKIE))
            user = await self.console.users.get(session.user) if session else None
        except KeelError as exc:  # the store is down: say so, keep serving
            unavailable = PlainTextResponse(f"store unavailable: {exc}", status_code=503)
            await unavailable(scope, receive, send)
            return
        if session is None or user is None:
            await _unauthenticated(request)(scope, receive, send)
            return
        scope["keel.session"], scope["keel.user"] = session, user
        if scope["method"] not in SAFE_METHODS:
            refused, receive = await self._check_change(scope, receive, session.csrf)
            if refused is not None:
                await refused(scope, receive, send)
                return
        await self.app(scope, receive, send)
        if path != "/live":
            self.console.metrics.latency.observe(time.perf_counter() - started)

    def _host_ok(self, scope: Scope) -> bool:
        """On a loopback bind, only loopback host names (a DNS-rebinding page gets nothing)."""
        if not is_loopback(self.console.settings.host):
            return True
        host = Request(scope).headers.get("host", "")
        name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
        return is_loopback(name.strip("[]")) or name.endswith(".localhost")

    async def _check_change(
        self, scope: Scope, receive: Receive, csrf: str
    ) -> tuple[Response | None, Receive]:
        try:
            body = await _read_body(receive, self.console.settings.max_body_bytes)
        except _BodyTooLarge:
            return PlainTextResponse("request body too large", status_code=413), receive
        request = Request(scope, _replay(body, receive))
        if not origin_ok(request):
            return PlainTextResponse("cross-origin request refused", status_code=403), receive
        if not token_matches(csrf, await submitted_token(request)):
            return _csrf_refused(request), receive
        return None, _replay(body, receive)

    def _headers(self, scope: Scope, send: Send) -> Send:
        static = scope["path"].startswith("/static/")
        metrics = self.console.metrics

        async def with_headers(message: MutableMapping[str, Any]) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                names = {name.lower() for name, _ in headers}
                headers.extend(h for h in _HEADERS if h[0] not in names)
                if not static and b"cache-control" not in names:
                    headers.append((b"cache-control", b"no-store"))
                if self.console.settings.tls:
                    headers.append((b"strict-transport-security", b"max-age=31536000"))
                message["headers"] = headers
                metrics.requests.labels(scope["method"], str(message["status"])).inc()
            await send(message)

        return with_headers


def _unauthenticated(request: Request) -> Response:
    accept = request.headers.get("accept", "")
    if request.method == "GET" and "text/html" in accept and request.url.path != "/live":
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        return RedirectResponse(f"/login?next={quote(target, safe='')}", status_code=303)
    if "application/json" in accept:
        return JSONResponse({"ok": False, "error": "log in first"}, status_code=401)
    return PlainTextResponse("log in first", status_code=401)


def _csrf_refused(request: Request) -> Response:
    message = "missing or wrong CSRF token: reload the page and try again"
    if "application/json" in request.headers.get("accept", ""):
        return JSONResponse({"ok": False, "error": message}, status_code=403)
    return PlainTextResponse(message, status_code=403)


async def _read_body(receive: Receive, limit: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise _BodyTooLarge
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


def _replay(body: bytes, receive_more: Receive) -> Receive:
    sent = False

    async def receive() -> MutableMapping[str, Any]:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive_more()  # after the body: only the disconnect is left to hear

    return receive
