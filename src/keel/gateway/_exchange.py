"""One forwarded request: its attempts, the streamed request body, the streamed response.

State a retry must see (instances tried, the body in hand, the current
connection and tickets) lives on one slotted :class:`Exchange` per request.
The request body is replayable only when it came whole in the first ASGI
message (bodies of idempotent requests usually are empty); a longer body is
streamed to the upstream by a writer task as it arrives and is never kept, so
such a request is retried only when it was never sent (connect failure).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from keel.balance import Ticket
from keel.gateway._h1 import Connection, UpstreamClosedError, UpstreamProtocolError
from keel.gateway._pool import ConnectFailedError
from keel.gateway._settings import ResponseAbortedError
from keel.gateway._wire import RequestHead, response_headers
from keel.resilience import BreakerTicket, remaining

if TYPE_CHECKING:
    from keel.gateway._pick import Target, _NoTicket
    from keel.gateway._proxy import Upstreams

__all__ = ["Exchange", "Tally", "UpstreamError"]

Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
_BROKEN = (UpstreamClosedError, UpstreamProtocolError)
_SMALL = 64 * 1024  # bodies up to this size are sent to the client in one piece


def _unframed(headers: list[tuple[bytes, bytes]], status: int, method: str) -> bool:
    """Whether a whole response needs a ``content-length`` (it came chunked or until close)."""
    if status in (204, 304) or method == "HEAD":
        return False
    return not any(name == b"content-length" for name, _ in headers)


class Tally(Protocol):
    """Where the response's status and size are noted (the access record)."""

    status: int
    bytes_out: int


class UpstreamError(Exception):
    """The gateway answers ``status`` itself (502/503/504; 0: the client went away)."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


class Exchange:
    """The attempts and streams of one forwarded request."""

    __slots__ = (
        "body",
        "conn",
        "gate",
        "head",
        "method",
        "more",
        "receive",
        "status",
        "target",
        "ticket",
        "tried",
        "u",
        "writer",
    )

    def __init__(
        self, u: Upstreams, target: Target, method: str, head: RequestHead, receive: Receive
    ) -> None:
        self.u = u
        self.target = target
        self.method = method
        self.head = head
        self.receive = receive
        self.body = b""
        self.more = False
        self.conn: Connection | None = None
        self.gate: BreakerTicket | None = None
        self.ticket: Ticket | _NoTicket | None = None
        self.writer: asyncio.Task[None] | None = None
        self.tried: set[str] | None = None
        self.status = 0

    async def open(self) -> None:
        """Take the first body message (the whole body for most requests).

        Raises:
            UpstreamError: status 0 when the client already went away.
        """
        message = await self.receive()
        if message["type"] == "http.disconnect":
            raise UpstreamError(0, "the client went away")
        self.body = message.get("body", b"")
        self.more = message.get("more_body", False)

    def _framing(self) -> bytes:
        length = self.head.content_length
        if self.more:
            if length is not None:
                return b"content-length: " + length + b"\r\n"
            return b"transfer-encoding: chunked\r\n"
        if self.body or length is not None or self.method in _BODY_METHODS:
            return b"content-length: %d\r\n" % len(self.body)
        return b""

    async def attempts(self) -> None:
        """Send the request until an instance answers with a head (or give up).

        Raises:
            UpstreamError: 502 (no instance, connect failure, reset), 503 (breakers open).
        """
        u, target = self.u, self.target
        candidates = await u.picker.instances(target)
        replayable = self.method in u.settings.idempotent_methods and not self.more
        attempts = 1 + max(0, target.retries)
        framing = self._framing()
        u.budget.deposit()
        attempt = 0
        while True:
            attempt += 1
            instance, self.gate, self.ticket = u.picker.choose(target, candidates, self.tried)
            try:
                conn = self.conn = await u.pool.acquire(
                    (instance.scheme, instance.address, instance.port)
                )
                self._write(conn, instance, framing)
                if self.method == "HEAD":
                    await conn.read_head()
                    conn.end_without_body()  # whatever its head says of a body
                else:
                    # A small body split from its head (uvicorn writes them apart) is
                    # awaited with it, within the deadline, rather than streamed.
                    await conn.read_response(_SMALL)
            except ConnectFailedError as exc:
                self._failed(instance.id)
                if attempt < attempts and u.retried(target):
                    continue
                raise UpstreamError(502, str(exc)) from exc
            except _BROKEN as exc:
                self._failed(instance.id)
                if replayable and attempt < attempts and u.retried(target):
                    continue
                raise UpstreamError(502, f"upstream {instance.id}: {exc}") from exc
            status = conn.status
            if status < 500:
                self.gate.succeeded()
                self.ticket.succeeded()
            else:
                self.gate.failed()
                self.ticket.failed()
                if (
                    replayable
                    and status in u.settings.retry_statuses
                    and attempt < attempts
                    and u.retried(target)
                ):
                    self._drop(instance.id)
                    continue
            self.status = status
            return

    def _write(self, conn: Connection, instance: Any, framing: bytes) -> None:
        head = self.head
        parts = [head.prefix]
        if not head.has_host:
            parts.append(b"host: %s:%d\r\n" % (instance.address.encode(), instance.port))
        left = remaining()
        if left != float("inf"):
            parts.append(b"keel-deadline: %.3f\r\n" % left)
        parts.append(framing)
        parts.append(b"\r\n")
        body = self.body
        if body:
            if self.more and head.content_length is None:
                parts.append(b"%x\r\n" % len(body))
                parts.append(body)
                parts.append(b"\r\n")
            else:
                parts.append(body)
        conn.write(b"".join(parts))
        if self.more:
            self.writer = asyncio.get_running_loop().create_task(self._pump(conn))

    async def _pump(self, conn: Connection) -> None:
        """Stream the rest of the request body from the client to the upstream."""
        chunked = self.head.content_length is None
        receive = self.receive
        try:
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    conn.close()  # the client went away mid-body: so does this request
                    return
                chunk = message.get("body", b"")
                if chunk:
                    if chunked:
                        conn.write(b"%x\r\n" % len(chunk))
                        conn.write(chunk)
                        conn.write(b"\r\n")
                    else:
                        conn.write(chunk)
                    await conn.drain()
                if not message.get("more_body", False):
                    break
            if chunked:
                conn.write(b"0\r\n\r\n")
        except _BROKEN:
            return  # the reader sees the same failure

    def _failed(self, instance_id: str) -> None:
        if self.gate is not None:
            self.gate.failed()
        if self.ticket is not None:
            self.ticket.failed()
        self._drop(instance_id)

    def _drop(self, instance_id: str) -> None:
        if self.tried is None:
            self.tried = set()
        self.tried.add(instance_id)
        self._stop_writer()
        conn, self.conn = self.conn, None
        if conn is not None:
            conn.close()
            self.u.pool.release(conn)

    def _stop_writer(self) -> None:
        writer, self.writer = self.writer, None
        if writer is not None and not writer.done():
            writer.cancel()

    def abandon(self, *, timed_out: bool) -> None:
        """The exchange ended without a response: settle tickets, drop the connection."""
        if self.gate is not None:
            if timed_out:
                self.gate.failed()
            else:
                self.gate.cancelled()
        if self.ticket is not None:
            self.ticket.failed()
        self._stop_writer()
        conn, self.conn = self.conn, None
        if conn is not None:
            conn.close()
            self.u.pool.release(conn)

    async def respond(
        self,
        send: Send,
        idle_timeout_s: float | None,
        extra: Sequence[tuple[bytes, bytes]] = (),
        tally: Tally | None = None,
    ) -> None:
        """Stream the upstream's response to the client, then give the connection back.

        Args:
            send: the client's ASGI send.
            idle_timeout_s: longest wait for each body piece after the head.
            extra: headers added to the upstream's.
            tally: notes the status and the body bytes sent.

        Raises:
            ResponseAbortedError: the upstream failed after the head was sent.
        """
        conn = self.conn
        assert conn is not None
        headers = response_headers(conn.headers)
        if extra:
            headers += extra
        start = {"type": "http.response.start", "status": conn.status, "headers": headers}
        if tally is not None:
            tally.status = conn.status
        watcher: asyncio.Task[None] | None = None
        try:
            if conn.complete:
                body = conn.take_buffered()
                if _unframed(headers, conn.status, self.method):  # not chunked: before `extra`
                    headers.insert(
                        len(headers) - len(extra), (b"content-length", b"%d" % len(body))
                    )
                await send(start)
                await send({"type": "http.response.body", "body": body})
                if tally is not None:
                    tally.bytes_out += len(body)
                return
            await send(start)
            if self.writer is None or self.writer.done():
                watcher = asyncio.get_running_loop().create_task(self._watch(conn))
            while chunk := await conn.read_chunk(idle_timeout_s):
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
                if tally is not None:
                    tally.bytes_out += len(chunk)
            await send({"type": "http.response.body", "body": b""})
        except (*_BROKEN, TimeoutError) as exc:
            conn.close()
            if watcher is not None and watcher.done():
                return  # the client left first: nobody to tell
            raise ResponseAbortedError(f"upstream broke off the response: {exc!r}") from exc
        finally:
            if watcher is not None:
                watcher.cancel()
            self._release(conn)

    async def _watch(self, conn: Connection) -> None:
        """Close the upstream connection when the client disconnects mid-response.

        (uvicorn drops sends after a disconnect silently, so without this an
        endless event stream would be read for nobody.)
        """
        with contextlib.suppress(Exception):
            while (await self.receive())["type"] != "http.disconnect":
                pass
            conn.close()

    def _release(self, conn: Connection) -> None:
        self.conn = None
        writer = self.writer
        if writer is not None and not writer.done():
            writer.cancel()  # answered before the body was all sent: not reusable
            conn.close()
        self.writer = None
        self.u.pool.release(conn)
