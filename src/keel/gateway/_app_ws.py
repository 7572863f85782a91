"""The gateway's WebSocket phases: the same route match, auth and limits as HTTP, then the relay.

A WebSocket handshake is matched as a ``GET`` of its path. Refusals (no route,
a route that does not forward, bad credentials, a limit) answer with an HTTP
status when the server supports the ASGI ``websocket.http.response``
extension (uvicorn does), else by closing the handshake (the client sees 403).
The session itself is relayed by :meth:`keel.gateway._proxy.Upstreams.websocket`.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import TYPE_CHECKING, Any

from keel.gateway._asgi import error_body, sane_id
from keel.gateway._auth import AuthError, Consumer
from keel.gateway._headers import client_address, upstream_headers
from keel.gateway._logs import AccessRecord
from keel.gateway._match import Hit, normal_host
from keel.gateway._plan import FORWARD, Plan, State

if TYPE_CHECKING:
    from keel.gateway._app import GatewayApp

__all__ = ["websocket"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

_RID = b"x-request-id"


async def websocket(app: GatewayApp, scope: Scope, receive: Receive, send: Send) -> None:
    """Route one WebSocket session (see the module docstring)."""
    start = time.perf_counter()
    headers: list[tuple[bytes, bytes]] = scope["headers"]
    given = next((v for k, v in headers if k == _RID), None)
    request_id = given.decode("ascii") if given is not None and sane_id(given) else app.ids.new()
    record = AccessRecord(request_id, "GET", scope["path"])
    series = app.metrics.route("-")
    state = app.state
    try:
        if state is None:
            await _refuse(scope, receive, send, record, 503, "starting", "no routes yet")
            return
        host = next((v for k, v in headers if k == b"host"), None)
        lookup = dict(headers) if state.router.uses_headers else None
        found = state.router.match("GET", normal_host(host), scope["path"], lookup)
        if not isinstance(found, Hit):
            await _refuse(scope, receive, send, record, 404, "not_found", "no route")
            return
        plan = found.rule.payload
        record.route, series = plan.id, plan.series
        if plan.kind != FORWARD:
            await _refuse(
                scope, receive, send, record, 400, "bad_request", "route does not forward"
            )
            return
        await _session(app, state, plan, found, scope, receive, send, record, host)
    finally:
        series.observe(record.status, time.perf_counter() - start)
        if record.reason is not None:
            series.error(record.reason)
        app.access_log.write(record, time.perf_counter() - start)


async def _session(
    app: GatewayApp,
    state: State,
    plan: Plan,
    hit: Hit[Plan],
    scope: Scope,
    receive: Receive,
    send: Send,
    record: AccessRecord,
    host: bytes | None,
) -> None:
    headers: list[tuple[bytes, bytes]] = scope["headers"]
    consumer: Consumer | None = None
    if plan.auth is not None and state.authenticator is not None:
        try:
            consumer = state.authenticator.authenticate(plan.auth, headers)
        except AuthError as exc:
            kind = "forbidden" if exc.status == 403 else "unauthorized"
            await _refuse(scope, receive, send, record, exc.status, kind, exc.reason)
            return
        record.consumer = consumer.name if consumer is not None else None
    record.client = client = client_address(scope, state.trusted)
    admission = None
    if plan.limits is not None and state.limits is not None:
        admission = await state.limits.admit(plan.id, plan.limits, consumer, client)
        if not admission.allowed:
            plan.series.limit(admission.reason)
            await _refuse(scope, receive, send, record, 429, "limited", "limit reached")
            return
    try:
        peer = scope.get("client")
        out = upstream_headers(
            headers,
            client=str(peer[0]) if peer else None,
            scheme="https" if scope.get("scheme") == "wss" else "http",
            host=host,
            trusted=state.trusted,
            consumer=consumer,
            consumer_header=state.consumer_header,
            style=state.forwarded,
        )
        out = [(k, v) for k, v in out if k != _RID and k not in plan.req_remove]
        out += [*plan.req_set, *plan.req_add, (_RID, record.request_id.encode())]
        raw = scope.get("raw_path") or scope["path"].encode()
        path = plan.upstream_path(raw.split(b"?", 1)[0], hit.params, hit.rest)
        query = scope.get("query_string", b"")
        record.upstream = plan.upstream
        record.status = 101
        await app.upstreams.websocket(
            plan.pick(None, headers), path + b"?" + query if query else path, out, receive, send
        )
    finally:
        if admission is not None:
            admission.release()


async def _refuse(
    scope: Scope,
    receive: Receive,
    send: Send,
    record: AccessRecord,
    status: int,
    reason: str,
    detail: str,
) -> None:
    record.status, record.reason = status, reason
    first = await receive()
    if first["type"] != "websocket.connect":
        return
    if "websocket.http.response" in scope.get("extensions", {}):
        body = error_body(reason, detail, record.request_id)
        with contextlib.suppress(Exception):
            await send(
                {
                    "type": "websocket.http.response.start",
                    "status": status,
                    "headers": [
                        (b"content-type", b"application/json"),
                        (b"content-length", str(len(body)).encode()),
                        (_RID, record.request_id.encode()),
                    ],
                }
            )
            await send({"type": "websocket.http.response.body", "body": body})
            return
    await send({"type": "websocket.close", "code": 1008})
