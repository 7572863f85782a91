"""The gateway's server side: uvicorn's httptools protocol, with a response's writes coalesced.

uvicorn writes a response head and its body with two ``send`` system calls
(the head when ``http.response.start`` comes, the body when
``http.response.body`` does), even when both come in the same step of the
app's task, as they do for every small forwarded response. On loopback a
``send`` costs the sender the receiver's TCP work too, and the gateway's
profile under ``wrk -c64`` showed the three writes per request (upstream
request, client head, client body) at about 30% of its CPU.
:class:`CoalescingTransport` keeps the writes made during one pass of the
event loop and sends them together at its end, so a small response leaves in
one system call, as nginx's does. One callback per pass flushes every
connection with something queued (:class:`Flushes`, one per loop), which
schedules less than a handle per connection (in interleaved A/B runs on
``bench/gateway.py``'s machine: from no difference to 5% more requests per
second). Writing at once, before the pass ends, measured worse: it wakes the
client while the gateway still has the pass's other requests to do.

Everything else is uvicorn's: parsing, keep-alive, pipelining, 100-continue,
flow control, WebSocket upgrades (the upgraded connection keeps the
coalescing transport: its frames go out at the end of the pass as well),
graceful shutdown. Why not a server of our own: uvicorn's server side costs
about what the hello upstream costs in total (~27 us per request on the
bench), and a second HTTP/1.1 server to keep correct is a bigger risk than
that saving is worth.
"""

from __future__ import annotations

import asyncio
import weakref
from typing import Any, ClassVar, Protocol

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle

__all__ = [
    "CoalescingTransport",
    "Flushes",
    "GatewayHttpProtocol",
    "Relaying",
    "flushes_of",
    "relaying_protocol",
]


class Flushes:
    """The transports of one loop with writes queued: all flushed by one callback per pass.

    Args:
        loop: the loop whose passes these are.
    """

    __slots__ = ("_due", "_loop")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._due: list[CoalescingTransport] = []

    def add(self, transport: CoalescingTransport) -> None:
        """Flush ``transport`` at the end of this pass (the first of a pass schedules it)."""
        due = self._due
        if not due:
            self._loop.call_soon(self.run)
        due.append(transport)

    def run(self) -> None:
        """Flush every transport queued so far."""
        due, self._due = self._due, []
        for transport in due:
            transport.flush()

    def __repr__(self) -> str:
        return f"<Flushes due={len(self._due)}>"


_FLUSHES: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Flushes] = (
    weakref.WeakKeyDictionary()
)


def flushes_of(loop: asyncio.AbstractEventLoop) -> Flushes:
    """The :class:`Flushes` of ``loop`` (made on first use)."""
    found = _FLUSHES.get(loop)
    if found is None:
        found = _FLUSHES[loop] = Flushes(loop)
    return found


class CoalescingTransport:
    """Wraps a transport: writes within one loop pass go out as one write at its end.

    Args:
        transport: the connection's transport.
        loop: the running loop (its :class:`Flushes` sends what is queued).
    """

    __slots__ = ("_flushes", "_pending", "_size", "transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self.transport = transport
        self._flushes = flushes_of(loop)
        self._pending: list[bytes] | None = None
        self._size = 0

    def write(self, data: bytes | bytearray | memoryview) -> None:
        """Queue ``data``; the first write of a pass puts the transport in the loop's flushes."""
        if not data:
            return
        pending = self._pending
        if pending is None:
            self._pending = [bytes(data)]
            self._size = len(data)
            self._flushes.add(self)
        else:
            pending.append(bytes(data))
            self._size += len(data)

    def writelines(self, lines: Any) -> None:
        """Queue each piece (as :meth:`write`)."""
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        """Write what is queued (in one call) to the transport."""
        pending, self._pending = self._pending, None
        self._size = 0
        if pending and not self.transport.is_closing():
            self.transport.write(pending[0] if len(pending) == 1 else b"".join(pending))

    def get_write_buffer_size(self) -> int:
        """Bytes not sent yet: queued here and in the transport."""
        return self._size + self.transport.get_write_buffer_size()

    def write_eof(self) -> None:
        """Flush, then close the write side."""
        self.flush()
        self.transport.write_eof()

    def close(self) -> None:
        """Flush, then close (as the transport does, after its buffer is sent)."""
        self.flush()
        self.transport.close()

    def abort(self) -> None:
        """Close at once, dropping what is queued."""
        self._pending = None
        self._size = 0
        self.transport.abort()

    def is_closing(self) -> bool:
        """Whether the transport is closing."""
        return self.transport.is_closing()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.transport, name)  # reading, extra info, protocol: the transport's

    def __repr__(self) -> str:
        return f"<CoalescingTransport queued={self._size} {self.transport!r}>"


class Relaying(Protocol):
    """What serves a request without the ASGI app (the gateway's ``_relay.Relay``)."""

    def take(self, cycle: RequestResponseCycle, tasks: set[asyncio.Task[None]]) -> bool:
        """Serve ``cycle``'s request and return True, or return False (the app serves it)."""
        ...


class GatewayHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol writing through a :class:`CoalescingTransport`.

    When :attr:`relay` is set (see :func:`relaying_protocol`) each parsed
    request is offered to it first, where uvicorn would start the app's task.
    """

    relay: ClassVar[Relaying | None] = None
    _idle_since: float | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Wrap the transport, then let uvicorn set the connection up."""
        wrapped = CoalescingTransport(transport, self.loop)  # type: ignore[arg-type]
        super().connection_made(wrapped)  # type: ignore[arg-type]

    # Keep-alive: uvicorn arms a timer after every response and cancels it when the
    # next request's bytes come (two timer operations per request). Here a timer is
    # armed only when none is, and when it fires it closes the connection if it has
    # been idle for the whole timeout, or re-arms for the rest.

    def _unset_keepalive_if_required(self) -> None:
        self._idle_since = None  # busy: bytes came (or the connection ends)

    def on_response_complete(self) -> None:
        """A response ended: start the next pipelined request, or count idle time."""
        self.server_state.total_requests += 1
        if self.transport.is_closing():
            return
        if self.flow.read_paused:
            self.flow.resume_reading()
        if self.pipeline:
            self._idle_since = None
            cycle, app = self.pipeline.pop()
            self._start_asgi_task(cycle, app)
            return
        self._idle_since = self.loop.time()
        if self.timeout_keep_alive_task is None:
            self._arm_keepalive(self.timeout_keep_alive)

    def _arm_keepalive(self, delay: float) -> None:
        self.timeout_keep_alive_task = self.loop.call_later(delay, self._keepalive_due)

    def _keepalive_due(self) -> None:
        self.timeout_keep_alive_task = None
        since = self._idle_since
        if since is None or self.transport.is_closing():
            return  # busy now: the response's end arms the next timer
        left = since + self.timeout_keep_alive - self.loop.time()
        if left > 0:
            self._arm_keepalive(left)
        else:
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        """As uvicorn's, and the keep-alive timer goes."""
        timer, self.timeout_keep_alive_task = self.timeout_keep_alive_task, None
        if timer is not None:
            timer.cancel()
        super().connection_lost(exc)

    def _start_asgi_task(self, cycle: RequestResponseCycle, app: Any) -> None:
        relay = self.relay
        if relay is not None and app is self.app and relay.take(cycle, self.tasks):
            return
        super()._start_asgi_task(cycle, app)


def relaying_protocol(relay: Relaying) -> type[GatewayHttpProtocol]:
    """A :class:`GatewayHttpProtocol` class whose requests are offered to ``relay`` first."""
    return type("RelayingHttpProtocol", (GatewayHttpProtocol,), {"relay": relay})
