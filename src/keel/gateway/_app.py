"""The gateway's ASGI app: each request through its phases, on the current compiled document.

Phases, in order (ARCHITECTURE: apisix's plugin phases, as plain code):

1. request id: the client's ``x-request-id`` when it is short printable ASCII,
   else a new one; sent upstream and back to the client;
2. match (:mod:`keel.gateway._match`): 404, or 405 with ``Allow``; a path with
   ``.``/``..`` segments is refused (400) rather than passed to an upstream that
   would resolve it past the route's prefix;
3. CORS preflight on routes with ``cors: true`` (matched by the method it asks for);
4. body size: a ``content-length`` above the route's limit gets 413 at once; a
   body without one is counted as it streams and cut off at the limit;
5. authentication (401/403), then limits (429 with ``Retry-After``);
6. the action: forward (weighted share, path rewrite, cleaned headers plus the
   route's header operations, through :class:`~keel.gateway._proxy.Upstreams`),
   redirect, or the fixed response;
7. access log line and metrics.

``/healthz``, ``/readyz`` and ``/metrics`` are answered before this app by the
service runtime. The app holds one :class:`~keel.gateway._plan.State`; a
publish replaces it in one assignment (:meth:`GatewayApp.install`), so
requests in flight finish on the document they started on and no connection
is touched.
"""

from __future__ import annotations

import math
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from opentelemetry import trace

from keel.gateway._asgi import (
    Counted,
    RequestIds,
    dot_segments,
    error_body,
    guard,
    length_ok,
    lifespan,
    sane_id,
    send_response,
)
from keel.gateway._auth import AuthError, Consumer
from keel.gateway._headers import client_address, upstream_headers
from keel.gateway._logs import AccessLog, AccessRecord
from keel.gateway._match import Hit, normal_host
from keel.gateway._metrics import GatewayMetrics
from keel.gateway._plan import FORWARD, REDIRECT, Plan, State
from keel.gateway._proxy import ResponseAbortedError, Upstreams

__all__ = ["REQUEST_ID", "GatewayApp"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

REQUEST_ID = b"x-request-id"
"""The request id header (kept from the client when sane, else generated)."""

_CONTENT_LENGTH = b"content-length"
_TRANSFER_ENCODING = b"transfer-encoding"
_HOST = b"host"
_JSON = b"application/json"


class GatewayApp:
    """The ASGI app; :meth:`install` a compiled state before serving.

    Args:
        upstreams: the upstream client (forwarding and WebSockets).
        metrics: the gateway's series.
        access_log: where access lines go.
    """

    def __init__(
        self, upstreams: Upstreams, *, metrics: GatewayMetrics, access_log: AccessLog | None = None
    ) -> None:
        self.upstreams = upstreams
        self.metrics = metrics
        self.access_log = access_log or AccessLog()
        self.state: State | None = None
        self.ids = RequestIds()
        self._unmatched = metrics.route("-")

    def install(self, state: State) -> None:
        """Serve ``state`` from the next request on (in-flight requests keep theirs)."""
        self.state = state
        self.metrics.route_count = len(state.router)
        self.metrics.config_version = state.version

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            await self._http(scope, receive, send)
        elif kind == "websocket":
            await self._websocket(scope, receive, send)
        elif kind == "lifespan":
            await lifespan(receive, send)

    # -- HTTP ----------------------------------------------------------------------

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        start = time.perf_counter()
        state = self.state
        headers: list[tuple[bytes, bytes]] = scope["headers"]
        rid = None
        host = length = None
        chunked = False
        for name, value in headers:
            if name == REQUEST_ID:
                rid = value
            elif name == _HOST:
                host = value
            elif name == _CONTENT_LENGTH:
                length = value
            elif name == _TRANSFER_ENCODING:
                chunked = True  # a body of unknown length: counted as it streams
        request_id = rid.decode("ascii") if rid is not None and sane_id(rid) else self.ids.new()
        record = AccessRecord(request_id, scope["method"], scope["path"])
        rid_header = (REQUEST_ID, request_id.encode("ascii"))
        self.metrics.in_flight += 1
        series = self._unmatched
        try:
            if state is None:
                await self._error(
                    record, send, 503, "starting", "the gateway has no routes yet", rid_header
                )
                return
            record.client = client_address(scope, state.trusted)
            plan = await self._route(state, scope, host, headers, record, send, rid_header)
            if plan is None:
                return
            series = plan.series
            scope["route"] = plan.scope_route
            own: tuple[bytes, bytes] | None = rid_header
            if plan.wrap or chunked or (plan.cors and state.cors is not None):
                # every answer, the gateway's own too, gets the route's response headers
                send = self._responder(state, plan, headers, send, record, rid_header)
                own = None  # the responder adds the request id
            # else (a plain forward): the proxy adds the id and fills the record itself
            if length is not None and not length_ok(length, plan.max_body):
                detail = f"the body is over {plan.max_body} bytes"
                await self._error(record, send, 413, "too_large", detail, own)
                return
            await self._admitted(
                state, plan, scope, receive, send, record, rid_header, own, host, length, chunked
            )
        finally:
            self.metrics.in_flight -= 1
            duration = time.perf_counter() - start
            series.observe(record.status, duration)
            if record.reason is not None:
                series.error(record.reason)
            self.access_log.write(record, duration)

    async def _route(
        self,
        state: State,
        scope: Scope,
        host: bytes | None,
        headers: list[tuple[bytes, bytes]],
        record: AccessRecord,
        send: Send,
        rid: tuple[bytes, bytes],
    ) -> Plan | None:
        """Match the request (and answer a CORS preflight); None when already answered."""
        path: str = scope["path"]
        if "/." in path and dot_segments(path):
            await self._error(
                record, send, 400, "bad_request", "'.' and '..' path segments are refused", rid
            )
            return None
        method: str = scope["method"]
        preflight = None
        if method == "OPTIONS":
            for name, value in headers:
                if name == b"access-control-request-method":
                    preflight = value.decode("latin-1")
        router = state.router
        lookup = dict(headers) if router.uses_headers else None
        found = router.match(preflight or method, normal_host(host), path, lookup)
        if not isinstance(found, Hit):
            if found is None:
                await self._error(
                    record, send, 404, "not_found", f"no route for {method} {path}", rid
                )
            else:
                allow = ", ".join(sorted(found)).encode()
                await self._error(
                    record,
                    send,
                    405,
                    "method",
                    f"{method} is not allowed here",
                    rid,
                    [(b"allow", allow)],
                )
            return None
        plan = found.rule.payload
        record.route = plan.id
        scope["keel.gateway.hit"] = found
        span = trace.get_current_span()
        if span.is_recording():
            span.update_name(f"{method} {plan.id}")
            span.set_attribute("keel.gateway.route", plan.id)
        if preflight is not None and plan.cors and state.cors is not None:
            answer = state.cors.preflight(method, headers)
            if answer is not None:
                record.status = answer[0]
                await send_response(
                    send, answer[0], [*answer[1], rid, (b"content-length", b"0")], b""
                )
                return None
        return plan

    async def _admitted(
        self,
        state: State,
        plan: Plan,
        scope: Scope,
        receive: Receive,
        send: Send,
        record: AccessRecord,
        rid: tuple[bytes, bytes],
        own: tuple[bytes, bytes] | None,
        host: bytes | None,
        length: bytes | None,
        chunked: bool,
    ) -> None:
        """Authentication, limits, then the action (``own``: the id header to add, if any)."""
        headers: list[tuple[bytes, bytes]] = scope["headers"]
        consumer: Consumer | None = None
        if plan.auth is not None and state.authenticator is not None:
            try:
                consumer = state.authenticator.authenticate(plan.auth, headers)
            except AuthError as exc:
                kind = "forbidden" if exc.status == 403 else "unauthorized"
                await self._error(record, send, exc.status, kind, exc.reason, own, exc.headers)
                return
            record.consumer = consumer.name if consumer is not None else None
        client = record.client or ""
        admission = None
        if plan.limits is not None and state.limits is not None:
            admission = await state.limits.admit(plan.id, plan.limits, consumer, client)
            if not admission.allowed:
                plan.series.limit(admission.reason)
                wait = str(max(1, math.ceil(admission.retry_after_s))).encode()
                await self._error(
                    record,
                    send,
                    429,
                    "limited",
                    f"{admission.reason} limit reached",
                    own,
                    [(b"retry-after", wait)],
                )
                return
        try:
            if plan.kind == FORWARD:
                await self._forward(
                    state,
                    plan,
                    scope,
                    receive,
                    send,
                    record,
                    consumer,
                    host,
                    length,
                    chunked,
                    rid,
                    own,
                )
            elif plan.kind == REDIRECT:
                await self._redirect(plan, scope, send, record)
            else:
                record.status = plan.status
                await send_response(
                    send,
                    plan.status,
                    [*plan.headers, (b"content-length", str(len(plan.body)).encode())],
                    plan.body,
                )
        finally:
            if admission is not None:
                admission.release()

    def _responder(
        self,
        state: State,
        plan: Plan,
        headers: list[tuple[bytes, bytes]],
        send: Send,
        record: AccessRecord,
        rid: tuple[bytes, bytes],
    ) -> Send:
        """``send`` with the response header operations, CORS headers and the request id."""
        extra = [rid]
        if plan.cors and state.cors is not None:
            extra += state.cors.response_headers(headers)

        async def respond(message: Message) -> None:
            if message["type"] == "http.response.start":
                record.status = message["status"]
                out = message["headers"]
                if plan.resp_ops:
                    out = [(k, v) for k, v in out if k not in plan.resp_remove]
                    out += plan.resp_set
                    out += plan.resp_add
                message["headers"] = [*out, *extra]
            else:
                record.bytes_out += len(message.get("body", b""))
            await send(message)

        return respond

    async def _forward(
        self,
        state: State,
        plan: Plan,
        scope: Scope,
        receive: Receive,
        send: Send,
        record: AccessRecord,
        consumer: Consumer | None,
        host: bytes | None,
        length: bytes | None,
        chunked: bool,
        rid: tuple[bytes, bytes],
        own: tuple[bytes, bytes] | None,
    ) -> None:
        headers: list[tuple[bytes, bytes]] = scope["headers"]
        hit: Hit[Plan] = scope["keel.gateway.hit"]
        target = plan.pick(None, headers)
        record.upstream = plan.upstream
        peer = scope.get("client")
        out = upstream_headers(
            headers,
            client=str(peer[0]) if peer else None,
            scheme=scope.get("scheme", "http"),
            host=host,
            trusted=state.trusted,
            consumer=consumer,
            consumer_header=state.consumer_header,
            drop=plan.req_drop,
            style=state.forwarded,
        )
        if plan.req_set:
            out += plan.req_set
        if plan.req_add:
            out += plan.req_add
        out.append(rid)
        raw = scope.get("raw_path") or scope["path"].encode()
        path = plan.upstream_path(raw.split(b"?", 1)[0], hit.params, hit.rest)
        query = scope.get("query_string", b"")
        path_qs = path + b"?" + query if query else path
        has_body = chunked or length is not None
        counted = Counted(receive, record, plan.max_body if chunked else None) if has_body else None
        detail = f"the body is over {plan.max_body} bytes"
        if chunked:
            assert counted is not None
            send = guard(send, counted, record, detail)
        try:
            if own is not None:  # a plain forward: no wrapper around send
                await self.upstreams.forward(
                    target,
                    scope["method"],
                    path_qs,
                    out,
                    counted or receive,
                    send,
                    body=has_body,
                    extra=(own,),
                    tally=record,
                )
            else:
                await self.upstreams.forward(
                    target, scope["method"], path_qs, out, counted or receive, send, body=has_body
                )
        except ResponseAbortedError:
            # The upstream failed after its head was sent: returning with the response
            # unfinished makes the server drop the connection (one log line, no traceback).
            record.reason = "upstream_aborted"
            return
        if counted is not None and counted.over and not record.status:
            # the body went over before anything was sent (send adds the id)
            await self._error(record, send, 413, "too_large", detail, own)

    async def _redirect(self, plan: Plan, scope: Scope, send: Send, record: AccessRecord) -> None:
        hit: Hit[Plan] = scope["keel.gateway.hit"]
        location = plan.location
        if "{" in location:
            location = location.replace("{rest}", hit.rest)
            for name, value in hit.params.items():
                location = location.replace("{" + name + "}", value)
        query = scope.get("query_string", b"")
        target = location.encode("latin-1", "replace")
        if plan.keep_query and query:
            target += (b"&" if b"?" in target else b"?") + query
        record.status = plan.status
        await send_response(
            send, plan.status, [(b"location", target), (b"content-length", b"0")], b""
        )

    async def _error(
        self,
        record: AccessRecord,
        send: Send,
        status: int,
        reason: str,
        detail: str,
        rid: tuple[bytes, bytes] | None,
        extra: list[tuple[bytes, bytes]] | None = None,
    ) -> None:
        """A small JSON answer made by the gateway itself."""
        record.status, record.reason = status, reason
        body = error_body(reason, detail, record.request_id)
        headers = [(b"content-type", _JSON), (b"content-length", str(len(body)).encode())]
        if rid is not None:
            headers.append(rid)
        headers += extra or ()
        await send_response(send, status, headers, body)

    # -- WebSocket -------------------------------------------------------------------

    async def _websocket(self, scope: Scope, receive: Receive, send: Send) -> None:
        from keel.gateway._app_ws import websocket  # only when a WebSocket comes

        await websocket(self, scope, receive, send)

    def __repr__(self) -> str:
        return f"<GatewayApp {self.state!r}>"
