"""A small HTTP/1.1 keep-alive client connection for the proxy: asyncio protocol + httptools.

Why hand-written (httpx and httpcore do this already): the gateway's per-request
path is the product. Measured with ``python bench/gateway_clients.py`` (one
client process under uvloop, 32 concurrent keep-alive GETs of a 13-byte hello
from a uvicorn upstream; medians of 3 x 2 s on a shared 2-core box), requests
per second:

- ``httpx.AsyncHTTPTransport``: 271
- ``httpcore.AsyncConnectionPool`` directly: 308
- this module (asyncio ``Protocol`` + ``httptools`` response parser): 23,800

One request at a time on the default asyncio loop the gap is smaller but still
8x: 873 (httpx), 837 (httpcore), 7,065 (this). httpx and httpcore spend their
time in layers a proxy does not need (URL and header models rebuilt per
request, h11's pure-Python state machine, and a pool that checks every idle
connection for readability on each request: a poll syscall per connection,
which is what sinks them at 32 connections); here a request is one ``write`` of prebuilt bytes
and the response is parsed in C. Streaming keeps memory bounded both ways:
reading pauses once 256 KiB of response body wait unconsumed, and writers
wait for the transport's buffer to drain.

A :class:`Connection` carries one exchange at a time; :class:`Pool` (in
``_pool.py``) keeps idle ones per instance.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Callable
from typing import cast

import httptools

__all__ = ["Connection", "UpstreamClosedError", "UpstreamProtocolError", "WriteBatch"]

_HIGH_WATER = 256 * 1024
_LOW_WATER = 64 * 1024


class UpstreamClosedError(ConnectionError):
    """The upstream closed or reset the connection before the response ended."""


class UpstreamProtocolError(ConnectionError):
    """The upstream sent something that is not HTTP/1.1."""


class Connection(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection to an upstream instance.

    Args:
        key: the pool key (scheme, host, port) this connection belongs to.
        loop: the running loop.
    """

    def __init__(self, key: tuple[str, str, int], loop: asyncio.AbstractEventLoop) -> None:
        self.key = key
        self._loop = loop
        self._whole_limit = 0
        self.transport: asyncio.Transport | None = None
        self._parser = httptools.HttpResponseParser(self)
        self.closed = False
        self.idle_since = 0.0
        self.uses = 0
        self.on_lost: Callable[[Connection], None] | None = None  # set while idle in a pool
        self.on_event: Callable[[], None] | None = None  # a callback instead of a waiter (relay)
        self._write_paused = False
        self._drain: asyncio.Future[None] | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._reset_exchange()

    def _reset_exchange(self) -> None:
        self.on_event = None
        self.status = 0
        self.length: int | None = None  # the response's Content-Length
        self.headers: list[tuple[bytes, bytes]] = []
        self.head = False
        self.complete = False
        self.keep_alive = False
        self.received = False
        self.error: BaseException | None = None
        self._interim = False
        self._framed = False  # a Content-Length or Transfer-Encoding came
        self._until_eof = False
        self._chunks: collections.deque[bytes] = collections.deque()
        self._buffered = 0
        self._reading_paused = False
        self._whole = False  # read_response: wake at the end of a small body, not at its head

    # -- asyncio.Protocol -------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Keep the transport (asyncio sets TCP_NODELAY on TCP transports)."""
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        """Feed the response parser; its callbacks fill the exchange state."""
        self.received = True
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(UpstreamProtocolError(f"invalid HTTP response from upstream: {exc}"))
            self.close()

    def eof_received(self) -> bool:
        """The upstream closed its side: end a read-until-close body, else fail."""
        self._lost(None)
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        """The connection ended: finish or fail the exchange, wake everyone."""
        self._lost(exc)
        if self.on_lost is not None:
            self.on_lost(self)
        drain, self._drain = self._drain, None
        if drain is not None and not drain.done():
            drain.set_result(None)

    def _lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.complete or self.error is not None:
            return
        if self.head and self._until_eof:
            self.complete = True
            self.keep_alive = False
            self._wake()
            return
        what = "reset" if exc is not None else "closed"
        self._fail(UpstreamClosedError(f"upstream {what} the connection mid-exchange"))

    def pause_writing(self) -> None:
        """The transport's write buffer is full: writers wait."""
        self._write_paused = True

    def resume_writing(self) -> None:
        """The write buffer drained: wake a waiting writer."""
        self._write_paused = False
        drain, self._drain = self._drain, None
        if drain is not None and not drain.done():
            drain.set_result(None)

    # -- httptools callbacks ----------------------------------------------------

    def on_header(self, name: bytes, value: bytes) -> None:
        """A response header, its name lowercased (httptools joins partial names and values)."""
        name = name.lower()
        self.headers.append((name, value))
        if name == b"content-length":
            self._framed = True
            self.length = int(value) if value.isdigit() else None
        elif name == b"transfer-encoding":
            self._framed = True

    def on_headers_complete(self) -> None:
        """The head is parsed: record it, skip 1xx interim responses."""
        status = self._parser.get_status_code()
        if status < 200:
            self._interim = True
            self.headers = []
            self.length, self._framed = None, False
            return
        self.status = status
        self.head = True
        self._until_eof = not self._framed and status not in (204, 304)
        if self._whole and self.length is not None and self.length <= self._whole_limit:
            return  # the body follows: one wake-up when it is all here
        self._wake()

    def on_body(self, body: bytes) -> None:
        """A piece of the response body: queue it, pause reading past the high water mark."""
        self._chunks.append(body)
        self._buffered += len(body)
        if self._buffered > _HIGH_WATER and not self._reading_paused and self.transport:
            self._reading_paused = True
            self.transport.pause_reading()
        if not self._whole:
            self._wake()

    def on_message_complete(self) -> None:
        """The response ended."""
        if self._interim:
            self._interim = False
            return
        self.complete = True
        self.keep_alive = self._parser.should_keep_alive()
        self._wake()

    # -- exchange API -------------------------------------------------------------

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_result(None)
            return
        callback = self.on_event
        if callback is not None:
            self.on_event = None
            callback()

    def _fail(self, error: BaseException) -> None:
        if self.error is None:
            self.error = error
        self._wake()

    async def _wait(self) -> None:
        waiter = self._waiter = self._loop.create_future()
        await waiter

    def begin(self) -> None:
        """Start a new exchange on this (idle or new) connection."""
        self.uses += 1
        if self.uses > 1:
            self._reset_exchange()

    def write(self, data: bytes | bytearray | memoryview) -> None:
        """Queue bytes for the upstream (no wait)."""
        if self.closed or self.transport is None:
            raise UpstreamClosedError("upstream connection closed before the request was written")
        self.transport.write(data)

    async def drain(self) -> None:
        """Wait until the transport accepts more bytes (flow control)."""
        while self._write_paused and not self.closed:
            drain = self._drain = self._loop.create_future()
            await drain
        if self.closed and not self.complete:
            raise UpstreamClosedError("upstream closed the connection while the body was sent")

    def expect_response(self, small: int, callback: Callable[[], None]) -> None:
        """Call ``callback`` once, as :meth:`read_response` would return or raise.

        That is: at the end of a response whose body is at most ``small`` bytes,
        at the head of a longer (or unframed) one, or when the exchange fails.
        The callback runs inside the parser's callbacks; it reads ``complete``,
        ``head`` and ``error`` to tell which. This is the relay's way of waiting
        without a task.
        """
        self._whole, self._whole_limit = True, small
        self.on_event = callback

    def stop_expecting(self) -> None:
        """Back to waiter mode after :meth:`expect_response` (its callback came or is unwanted)."""
        self._whole = False
        self.on_event = None

    async def read_response(self, small: int) -> None:
        """Wait for the head, and for the whole body too when its length is at most ``small``.

        One wake-up for a small response even when its body comes in a later
        packet than its head (uvicorn writes them apart), where :meth:`read_head`
        then :meth:`read_rest` would resume the caller twice.

        Raises:
            UpstreamClosedError: the connection ended first.
            UpstreamProtocolError: the upstream's bytes are not an HTTP response.
        """
        self._whole, self._whole_limit = True, small
        try:
            while not self.complete:
                if self.error is not None:
                    raise self.error
                if self.head and (self.length is None or self.length > small):
                    return
                await self._wait()
        finally:
            self._whole = False

    async def read_head(self) -> None:
        """Wait for the response head (``status`` and ``headers``).

        Raises:
            UpstreamClosedError: the connection ended first.
            UpstreamProtocolError: the upstream's bytes are not an HTTP response.
        """
        while not self.head:
            if self.error is not None:
                raise self.error
            await self._wait()

    def take_buffered(self) -> bytes:
        """All body bytes received so far, joined (the whole body once ``complete``)."""
        chunks = self._chunks
        if not chunks:
            return b""
        data = chunks.popleft() if len(chunks) == 1 else b"".join(chunks)
        chunks.clear()
        self._buffered = 0
        self._resume_reading()
        return data

    def end_without_body(self) -> None:
        """The response has no body whatever its head says (a HEAD request): do not reuse."""
        self.complete = True
        self.keep_alive = False
        self._chunks.clear()

    async def read_chunk(self, timeout_s: float | None = None) -> bytes:
        """The next piece of the body (``b""`` once it has ended).

        Args:
            timeout_s: longest wait for the next piece (None: no limit).

        Raises:
            UpstreamClosedError: the connection ended before the body did.
            TimeoutError: nothing came within ``timeout_s``.
        """
        while True:
            chunks = self._chunks
            if chunks:
                data = chunks.popleft()
                self._buffered -= len(data)
                if self._buffered < _LOW_WATER:
                    self._resume_reading()
                return data
            if self.complete:
                return b""
            if self.error is not None:
                raise self.error
            if timeout_s is None:
                await self._wait()
            else:
                async with asyncio.timeout(timeout_s):
                    await self._wait()

    async def read_rest(self) -> None:
        """Wait until the whole body has arrived (for small bodies of known length only).

        Raises:
            UpstreamClosedError: the connection ended before the body did.
        """
        while not self.complete:
            if self.error is not None:
                raise self.error
            await self._wait()

    def _resume_reading(self) -> None:
        if self._reading_paused and self.transport is not None and not self.closed:
            self._reading_paused = False
            self.transport.resume_reading()

    @property
    def reusable(self) -> bool:
        """Whether the exchange ended cleanly with keep-alive."""
        return self.complete and self.keep_alive and not self.closed and self.error is None

    def close(self) -> None:
        """Close the connection (no wait)."""
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    def __repr__(self) -> str:
        state = "closed" if self.closed else ("busy" if self.head and not self.complete else "idle")
        return f"<Connection {self.key[1]}:{self.key[2]} {state} uses={self.uses}>"


class WriteBatch:
    """Requests for several connections, written together at the end of the loop's pass.

    The relay queues each request head here rather than writing it at once:
    the upstream is then woken once for the requests of a pass and finds them
    all ready, instead of once per request while the gateway is still
    parsing the next ones (measured: less CPU per request on both sides).
    A connection closed before the flush gets nothing; its exchange fails
    through :meth:`Connection.connection_lost` as any other would.

    Args:
        loop: the running loop.
    """

    __slots__ = ("_loop", "_pending")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._pending: list[tuple[Connection, bytes]] | None = None

    def add(self, conn: Connection, data: bytes) -> None:
        """Queue ``data`` for ``conn``; the first of a pass schedules the flush."""
        pending = self._pending
        if pending is None:
            self._pending = [(conn, data)]
            self._loop.call_soon(self.flush)
        else:
            pending.append((conn, data))

    def flush(self) -> None:
        """Write everything queued."""
        pending, self._pending = self._pending, None
        for conn, data in pending or ():
            transport = conn.transport
            if not conn.closed and transport is not None:
                transport.write(data)

    def __repr__(self) -> str:
        return f"<WriteBatch queued={len(self._pending or ())}>"
