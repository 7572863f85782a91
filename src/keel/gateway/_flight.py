"""One relayed request (see ``_relay.py``): its attempts, its deadline, its answer.

A :class:`Flight` is driven by callbacks: the relay starts it, the upstream
connection calls :meth:`Flight._responded` when the response is whole (or its
head is in, or the exchange failed), the relay's :class:`Deadlines` call
:meth:`Flight.timed_out` when the route's ``timeout_s`` passes first. Only a connect (no idle pooled
connection at hand) or a long response's streaming runs as a task. The rules
are the proxy's: retries on another instance while the retry budget allows
(a bodyless request is replayable), breaker and balancer tickets settled on
every path, 502/503/504 answered as ``Upstreams`` answers them.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from typing import TYPE_CHECKING, Any

from uvicorn.protocols.http.httptools_impl import STATUS_LINE, RequestResponseCycle

from keel.gateway._asgi import error_body
from keel.gateway._auth import Consumer
from keel.gateway._exchange import Exchange, UpstreamError
from keel.gateway._h1 import Connection, UpstreamClosedError
from keel.gateway._headers import plain_head, upstream_headers
from keel.gateway._logs import AccessRecord
from keel.gateway._match import Hit
from keel.gateway._pick import NO_TICKET
from keel.gateway._pool import ConnectFailedError
from keel.gateway._settings import ResponseAbortedError
from keel.gateway._wire import (
    HIDDEN,
    HOP_BY_HOP,
    RequestHead,
    error_json,
    request_head,
    response_headers,
)

if TYPE_CHECKING:
    from keel.gateway._plan import Plan, State
    from keel.gateway._proxy import Target
    from keel.gateway._relay import Relay

__all__ = ["Flight"]

log = logging.getLogger("keel.gateway")

_SMALL = 64 * 1024  # as the proxy: bodies up to this size go to the client in one piece
_NO_BODY = (204, 304)
_KINDS = {502: "failed", 503: "unavailable", 504: "timed_out"}
_JSON = b"application/json"
_NOT_RELAYED = HOP_BY_HOP | HIDDEN  # response headers (see _wire.response_headers)


class Flight(AccessRecord):
    """One relayed request: its attempts, its timer, and the answer.

    It is its own access record (one object per request, not two).
    """

    __slots__ = (
        "admission",
        "app",
        "attempt",
        "auth",
        "batch",
        "candidates",
        "conn",
        "cycle",
        "deadlines",
        "expires",
        "gate",
        "has_host",
        "hit",
        "host",
        "instance",
        "plan",
        "prefix",
        "relay",
        "rid",
        "start_t",
        "state",
        "target",
        "task",
        "tasks",
        "ticket",
        "tried",
        "u",
    )

    def __init__(
        self,
        relay: Relay,
        cycle: RequestResponseCycle,
        tasks: set[asyncio.Task[None]],
        state: State,
        plan: Plan,
        hit: Hit[Plan],
        target: Target,
        candidates: tuple[Any, ...],
        request_id: str,
        client: str,
        consumer: Consumer | None,
        host: bytes | None,
    ) -> None:
        scope: Any = cycle.scope
        super().__init__(request_id, scope["method"], scope["path"], client, plan.id, plan.upstream)
        if consumer is not None:
            self.consumer = consumer.name
        self.relay, self.app, self.u = relay, relay.app, relay.app.upstreams
        self.cycle, self.tasks, self.state, self.plan, self.hit = cycle, tasks, state, plan, hit
        self.target, self.candidates = target, candidates
        self.auth, self.host = consumer, host
        self.batch, self.deadlines = relay.batch, relay.deadlines
        self.rid = (b"x-request-id", request_id.encode("ascii"))
        self.admission: Any = None
        self.attempt = 0
        self.tried: set[str] | None = None
        self.conn: Connection | None = None
        self.instance: Any = None
        self.gate: Any = None
        self.ticket: Any = None
        self.task: asyncio.Task[None] | None = None
        self.prefix = b""
        self.has_host = False
        self.start_t = self.expires = 0.0

    # -- the request ----------------------------------------------------------------

    def start(self) -> None:
        """Build the upstream head, arm the deadline and make the first attempt."""
        self.start_t = time.perf_counter()
        self.app.metrics.in_flight += 1
        u, plan, target = self.u, self.plan, self.target
        scope: Any = self.cycle.scope
        u.counts["requests"] += 1
        raw = scope["raw_path"]
        if plan.path_mode == "keep":
            path = raw
        else:
            path = plan.upstream_path(raw, self.hit.params, self.hit.rest)
        query = scope["query_string"]
        path_qs = path + b"?" + query if query else path
        if target.url is not None:
            path_qs = u.picker.fixed(target.url).base_path + path_qs
        self._head(scope, path_qs)
        budget = target.timeout_s
        self.expires = time.monotonic() + budget
        self.deadlines.add(self, budget)
        u.budget.deposit()
        self._next()

    def _head(self, scope: Any, path_qs: bytes) -> None:
        """The upstream head: one pass in the common case, else the proxy's two."""
        plan, state, consumer = self.plan, self.state, self.auth
        peer = scope["client"]
        client = str(peer[0]) if peer else None
        skip = plan.relay_skip
        if skip is not None and not (consumer is not None and consumer.hide_authorization):
            name, value = self.rid
            tail = plan.relay_tail + name + b": " + value + b"\r\n"
            if consumer is not None:
                tail = state.consumer_header + b": " + consumer.name.encode() + b"\r\n" + tail
            line = scope["method"].encode() + b" " + (path_qs or b"/") + b" HTTP/1.1\r\n"
            found = plain_head(
                line,
                scope["headers"],
                skip=skip,
                client=client,
                scheme=scope["scheme"],
                host=self.host,
                trusted=state.trusted,
                tail=tail,
                style=state.forwarded,
            )
            if found is not None:
                self.prefix, self.has_host = found
                return
        out = upstream_headers(
            scope["headers"],
            client=client,
            scheme=scope["scheme"],
            host=self.host,
            trusted=state.trusted,
            consumer=consumer,
            consumer_header=state.consumer_header,
            drop=plan.req_drop,
            style=state.forwarded,
        )
        out += plan.req_set
        out += plan.req_add
        out.append(self.rid)
        head = request_head(scope["method"], path_qs, out)
        self.prefix, self.has_host = head.prefix, head.has_host

    def refuse(self, admission: Any) -> None:
        """A limit refused the request: 429 with ``Retry-After`` (as the app answers it)."""
        self.start_t = time.perf_counter()
        self.app.metrics.in_flight += 1
        self.admission = None
        reason = admission.reason
        self.plan.series.limit(reason)
        self.reason = "limited"
        body = error_body("limited", f"{reason} limit reached", self.request_id)
        wait = b"%d" % max(1, math.ceil(admission.retry_after_s))
        headers = [(b"content-type", _JSON), (b"content-length", b"%d" % len(body))]
        self._write(429, headers, body, [(b"retry-after", wait)])

    def _next(self) -> None:
        """One attempt: choose an instance, then write on an idle connection (or connect)."""
        self.attempt += 1
        u = self.u
        try:
            i, gate, ticket = u.picker.choose(self.target, self.candidates, self.tried)
        except UpstreamError as exc:  # no instance, or every breaker open
            self._answer(exc.status, exc.detail)
            return
        self.instance, self.gate, self.ticket = i, gate, ticket
        key = (i.scheme, i.address, i.port)
        conn = u.pool.try_acquire(key)
        if conn is None:
            self.task = self._spawn(self._connect(key))
            return
        self._send(conn, self.attempt == 1)

    def _retries_left(self) -> bool:
        """Whether another attempt may follow (the route's retries, then the retry budget)."""
        return self.attempt <= self.target.retries and self.u.retried(self.target)

    async def _connect(self, key: tuple[str, str, int]) -> None:
        try:
            conn = await self.u.pool.acquire(key)
        except ConnectFailedError as exc:
            self.task = None
            self._failed()
            if self._retries_left():
                self._next()
            else:
                self._answer(502, str(exc))
            return
        self.task = None
        self._send(conn, False)

    def _send(self, conn: Connection, first: bool) -> None:
        """Write the head on ``conn`` (``first``: the first attempt, without a wait before it)."""
        self.conn = conn
        if conn.closed:
            self._broken(UpstreamClosedError("upstream connection closed before the request"))
            return
        # first: microseconds after start, the whole budget is left
        left = self.target.timeout_s if first else max(0.0, self.expires - time.monotonic())
        if self.has_host:
            data = b"%skeel-deadline: %.3f\r\n\r\n" % (self.prefix, left)
        else:
            i = self.instance
            data = b"%shost: %s:%d\r\nkeel-deadline: %.3f\r\n\r\n" % (
                self.prefix,
                i.address.encode(),
                i.port,
                left,
            )
        batch = self.batch
        assert batch is not None
        batch.add(conn, data)
        conn.expect_response(_SMALL, self._responded)

    def _responded(self) -> None:
        """The upstream connection's callback: a whole small response, a head, or a failure."""
        conn = self.conn
        assert conn is not None
        if conn.error is not None:
            self._broken(conn.error)
            return
        status = conn.status
        gate, ticket, self.gate, self.ticket = self.gate, self.ticket, None, None
        if status < 500:
            gate.succeeded()
            if ticket is not NO_TICKET:
                ticket.succeeded()
        else:
            gate.failed()
            ticket.failed()
            if status in self.u.settings.retry_statuses and self._retries_left():
                self._drop()
                self._next()
                return
        self.deadlines.discard(self)
        if conn.complete and status in STATUS_LINE:
            self._reply(conn, status)
        else:
            conn.stop_expecting()
            self.task = self._spawn(self._stream(conn))

    def _broken(self, exc: BaseException) -> None:
        self._failed()
        if self._retries_left():
            self._next()
        else:
            self._answer(502, f"upstream {self.instance.id}: {exc}")

    def _failed(self) -> None:
        gate, ticket, self.gate, self.ticket = self.gate, self.ticket, None, None
        if gate is not None:
            gate.failed()
        if ticket is not None:
            ticket.failed()
        self._drop()

    def _drop(self) -> None:
        if self.tried is None:
            self.tried = set()
        self.tried.add(self.instance.id)
        self._close_conn()

    def _close_conn(self) -> None:
        conn, self.conn = self.conn, None
        if conn is not None:
            conn.stop_expecting()
            conn.close()
            self.u.pool.release(conn)

    def timed_out(self) -> None:
        """The route's ``timeout_s`` passed before a response head came (:class:`Deadlines`)."""
        gate, ticket, self.gate, self.ticket = self.gate, self.ticket, None, None
        if gate is not None:
            gate.failed()
        if ticket is not None:
            ticket.failed()
        task, self.task = self.task, None
        if task is not None:
            task.cancel()
        self._close_conn()
        upstream = self.target.service or self.target.url or "?"
        self._answer(504, f"no response from {upstream!r} within {self.target.timeout_s:g} s")

    def _spawn(self, work: Any) -> asyncio.Task[None]:
        task: asyncio.Task[None] = asyncio.ensure_future(work)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return task

    # -- the answer -----------------------------------------------------------------

    def _reply(self, conn: Connection, status: int) -> None:
        """Write a whole upstream response to the client in one piece."""
        body = conn.take_buffered()
        # response_headers' filter, serialized in the same pass
        parts = [STATUS_LINE[status], b""]  # (the server's lines go in [1])
        for name, value in conn.headers:
            if name not in _NOT_RELAYED:
                parts += (name, b": ", value, b"\r\n")
            elif name == b"connection":  # it names more headers to drop: response_headers' way
                kept = response_headers(conn.headers)
                parts[2:] = [piece for k, v in kept for piece in (k, b": ", v, b"\r\n")]
                break
        self.conn = None
        self.u.pool.release(conn)
        if (
            conn.length is None
            and status not in _NO_BODY
            and b"content-length" not in parts[2::4]  # (the names of the lines kept)
        ):
            parts += (b"content-length: ", b"%d" % len(body), b"\r\n")
        self._upstream_done(status)
        self._send_answer(status, parts, body)

    def _answer(self, status: int, detail: str) -> None:
        """The proxy's own 502/503/504 (as ``Upstreams._answer``)."""
        self.deadlines.discard(self)
        kind = _KINDS.get(status)
        if kind is not None:
            self.u.counts[kind] += 1
        self._upstream_done(status)
        body = error_json(status, detail)
        headers = [(b"content-type", _JSON), (b"content-length", b"%d" % len(body))]
        self._write(status, headers, body)

    def _upstream_done(self, status: int) -> None:
        metrics = self.u.metrics
        if metrics is not None:
            upstream = self.target.service or self.target.url or "?"
            metrics.upstream_request(
                self.target.route, upstream, status, time.perf_counter() - self.start_t
            )

    def _write(
        self,
        status: int,
        headers: list[tuple[bytes, bytes]],
        body: bytes,
        after: list[tuple[bytes, bytes]] | None = None,
    ) -> None:
        """Status line, the server's default headers, ``headers``, the request id, ``after``,
        ``body``: in the order the app's answers have them."""
        parts = [STATUS_LINE[status], b""]
        for name, value in headers:
            parts += (name, b": ", value, b"\r\n")
        self._send_answer(status, parts, body, after)

    def _send_answer(
        self,
        status: int,
        parts: list[bytes],
        body: bytes,
        after: list[tuple[bytes, bytes]] | None = None,
    ) -> None:
        """Finish ``parts`` (status line, a slot for the server's lines, header lines) with
        the request id, ``after`` and ``body``, and write them to the client in one piece."""
        cycle = self.cycle
        self.status = status
        self.bytes_out += len(body)
        transport = cycle.transport
        if not cycle.disconnected and not transport.is_closing():
            server = _server_lines
            if server.of is not cycle.default_headers:
                server.refresh(cycle.default_headers)
            parts[1] = server.lines
            name, value = self.rid
            parts += (name, b": ", value, b"\r\n")
            if after is not None:
                for name, value in after:
                    parts += (name, b": ", value, b"\r\n")
            if not cycle.keep_alive:
                parts.append(b"connection: close\r\n")
            parts += (b"\r\n", body)
            cycle.response_started = cycle.response_complete = True
            transport.write(b"".join(parts))
            if not cycle.keep_alive:
                transport.close()
            cycle.on_response()  # (no receive() waits on a relayed request: no event to set)
        self._done()

    async def _stream(self, conn: Connection) -> None:
        """A long or unframed response: the proxy's streaming, through uvicorn's ``send``."""
        cycle, u = self.cycle, self.u
        head = RequestHead(self.prefix, self.has_host, None, None)
        exchange = Exchange(u, self.target, self.method, head, cycle.receive)  # type: ignore[arg-type]
        exchange.conn = conn
        self.conn = None
        try:
            await exchange.respond(
                cycle.send,  # type: ignore[arg-type]
                u.settings.body_idle_timeout_s,
                (self.rid,),
                self,
            )
        except ResponseAbortedError:
            u.counts["aborted"] += 1
            self.reason = "upstream_aborted"
            cycle.transport.close()  # the response is cut: so is the connection
        except Exception:
            log.exception("gateway: relayed response failed")
            cycle.transport.close()
        else:
            self._upstream_done(self.status)
        finally:
            self._done()

    def _done(self) -> None:
        """Metrics, the access line, and the limit's slot back."""
        app = self.app
        app.metrics.in_flight -= 1
        duration = time.perf_counter() - self.start_t
        series = self.plan.series
        series.observe(self.status, duration)
        if self.reason is not None:
            series.error(self.reason)
        log = app.access_log
        if log.enabled:
            log.write(self, duration)
        admission, self.admission = self.admission, None
        if admission is not None:
            admission.release()

    def __repr__(self) -> str:
        return f"<Flight {self.method} {self.path} attempt={self.attempt}>"


class _ServerLines:
    """The server's default header lines as bytes, for the list uvicorn holds now.

    uvicorn replaces the list (it does not change it) when its date changes.
    """

    __slots__ = ("lines", "of")

    def __init__(self) -> None:
        self.of: list[tuple[bytes, bytes]] | None = None
        self.lines = b""

    def refresh(self, default_headers: list[tuple[bytes, bytes]]) -> None:
        """Join the lines of ``default_headers``."""
        self.lines = b"".join(k + b": " + v + b"\r\n" for k, v in default_headers)
        self.of = default_headers


_server_lines = _ServerLines()
