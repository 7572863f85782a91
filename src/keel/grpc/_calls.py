"""The call objects a keel Channel hands to generated stubs.

A unary call is one retry loop (``_UnaryCall._attempts``): per attempt pick an
instance, admit it through its breaker, send with what is left of the
deadline, report the outcome; retry elsewhere only where ``_pick`` says it
is safe. The loop runs inline in the awaiting task (no extra task per call,
as grpc.aio's own call has one already); ``code()``, ``initial_metadata()``
and friends start it in a task when asked before ``await``.

Streams are pinned to the instance picked at their start. A server stream
(one request) is started again on another instance when its first read fails
with an UNAVAILABLE that never left; client and bidi streams are grpc.aio's
own calls, unwrapped, with a done-callback that reports their outcome: grpc
consumes their request iterator as soon as they start, so there is nothing
safe to replay.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable, Generator, Sequence
from typing import TYPE_CHECKING, Any

import grpc
from opentelemetry import context as otel_context
from opentelemetry import trace

from keel.grpc._errors import rpc_error
from keel.grpc._pick import FAILURE_CODES, call_timeout, should_retry
from keel.observe import inject
from keel.resilience import BreakerTicket, backoff_delay, remaining

if TYPE_CHECKING:
    from keel.balance import Ticket
    from keel.grpc._channel import Channel
    from keel.grpc._metrics import MethodSeries
    from keel.grpc._pool import Sub
    from keel.registry import Instance

__all__ = ["Base", "Spec", "UnaryCall", "closing_error", "own_cancel", "report", "status_of"]

_CODES = {code.value[0]: code for code in grpc.StatusCode}
DEADLINE_KEY = "keel-deadline"
Pairs = tuple[tuple[str, str | bytes], ...]


class Spec:
    """What a multicallable knows: method, (de)serializers, registration, metric series."""

    __slots__ = ("deser", "method", "registered", "ser", "series", "series_sends_one")

    def __init__(
        self,
        method: str,
        ser: Any,
        deser: Any,
        registered: bool,
        series: MethodSeries | None,
        unary_request: bool,
    ) -> None:
        self.method = method
        self.ser = ser
        self.deser = deser
        self.registered = registered
        self.series = series
        self.series_sends_one = unary_request  # one request message per call


def status_of(call: Any) -> tuple[grpc.StatusCode, str]:
    """The final status of a finished grpc.aio call, read without awaiting.

    grpc.aio exposes the status only through coroutines; a done-callback
    cannot await, so this reads the status grpc keeps on the cython call (the
    attribute grpc.aio's own ``__await__`` reads).
    """
    status = getattr(getattr(call, "_cython_call", None), "_status", None)
    if status is None:
        return (grpc.StatusCode.CANCELLED if call.cancelled() else grpc.StatusCode.UNKNOWN), ""
    return _CODES.get(status.code(), grpc.StatusCode.UNKNOWN), status.details() or ""


def report(ticket: Ticket, gate: BreakerTicket, code: grpc.StatusCode) -> None:
    """Tell the balancer and the instance's breaker how an attempt ended."""
    if code in FAILURE_CODES:
        ticket.failed()
        gate.failed()
    elif code is grpc.StatusCode.CANCELLED:
        ticket.failed()
        gate.cancelled()
    else:
        ticket.succeeded()
        gate.succeeded()


class Base:
    """Deadline, metadata and trace context captured when the stub method is called."""

    def __init__(
        self,
        channel: Channel,
        spec: Spec,
        timeout: float | None,
        metadata: Sequence[tuple[str, str | bytes]] | None,
        default_s: float | None,
    ) -> None:
        self._ch = channel
        self._spec = spec
        left = call_timeout(timeout, remaining(), default_s)
        self._expires = time.monotonic() + left
        pairs: Pairs = tuple(metadata) if metadata else ()
        self._key = channel.hash_value(pairs)
        self._span = span = channel.start_span(spec.method)
        ctx = otel_context.get_current() if span is None else trace.set_span_in_context(span)
        if ctx:  # an empty context (no span, no baggage) has nothing to propagate
            carrier: dict[str, str] = {}
            inject(carrier, ctx)
            pairs = (*pairs, *carrier.items())
        self._metadata: Pairs = pairs
        self._start = time.perf_counter()
        if spec.series is not None:
            spec.series.started += 1
            if spec.series_sends_one:
                spec.series.sent += 1
        self._tried: set[str] | None = None
        self._attempts = 0

    def _left(self) -> float:
        return self._expires - time.monotonic()

    def _attempt_args(self) -> tuple[float | None, Pairs]:
        """The grpc ``timeout=`` and the metadata of the next attempt."""
        left = self._left()
        if math.isinf(left):
            return None, self._metadata
        if left <= 0:
            raise rpc_error(
                grpc.StatusCode.DEADLINE_EXCEEDED,
                f"the deadline of {self._spec.method} passed before attempt "
                f"{self._attempts + 1} to {self._ch.service!r}",
            )
        return left, (*self._metadata, (DEADLINE_KEY, f"{left:.3f}"))

    def _retry_delay(self, code: grpc.StatusCode, details: str, idempotent: bool) -> float | None:
        """Seconds to wait before the next attempt, or None to give up (pure but for budget)."""
        ch = self._ch
        if self._attempts >= ch.settings.retry.max_attempts:
            return None
        if not should_retry(code, details, idempotent=idempotent):
            return None
        delay = backoff_delay(ch.settings.retry, self._attempts - 1, 0.0, ch.rng)
        if delay >= self._left() or not ch.budget.try_withdraw():
            return None
        ch.retried()
        return delay

    def _picked(self, instance: Instance) -> None:
        """Name the instance an attempt goes to on the span (a retry's replaces the first's)."""
        if self._span is not None:
            self._span.set_attributes(
                {"server.address": instance.address, "server.port": instance.port}
            )

    def _ended(self, code: grpc.StatusCode) -> None:
        """Record the call's end once: metrics, span."""
        elapsed = time.perf_counter() - self._start
        self._ch.ended(code)
        if self._spec.series is not None:
            self._spec.series.handled(code.name, elapsed)
        span, self._span = self._span, None
        if span is not None:
            span.set_attribute("rpc.grpc.status_code", code.value[0])
            if code is not grpc.StatusCode.OK:
                span.set_status(trace.Status(trace.StatusCode.ERROR, code.name))
            span.end()


def closing_error(sub: Sub) -> grpc.aio.AioRpcError:
    return rpc_error(
        grpc.StatusCode.UNAVAILABLE,
        f"the sub-channel of instance {sub.instance.id} closed during the call "
        "(the instance left discovery, or the channel was closed)",
    )


def own_cancel() -> bool:
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


class UnaryCall(Base, grpc.aio.UnaryUnaryCall):  # type: ignore[misc]  # grpc is untyped
    """One unary call: a budgeted retry loop over instances (awaitable once)."""

    def __init__(
        self,
        channel: Channel,
        spec: Spec,
        request: Any,
        *,
        timeout: float | None,
        metadata: Sequence[tuple[str, str | bytes]] | None,
        extra: dict[str, Any],
        idempotent: bool,
    ) -> None:
        super().__init__(channel, spec, timeout, metadata, channel.settings.timeout_s)
        self._request = request
        self._extra = extra
        self._idempotent = idempotent
        self._inner: Any = None
        self._started = self._finished = self._cancelled = False
        self._task: asyncio.Task[None] | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._response: Any = None
        self._error: BaseException | None = None
        self._callbacks: list[Callable[[Any], None]] = []

    def __await__(self) -> Generator[Any, None, Any]:
        if not self._started:
            self._started = True
            return (yield from self._drive(raise_=True).__await__())
        yield from self._wait().__await__()
        if self._error is not None:
            raise self._error
        return self._response

    async def _drive(self, *, raise_: bool) -> Any:
        code = grpc.StatusCode.OK
        try:
            if self._cancelled:
                raise asyncio.CancelledError
            self._response = await self._attempts_loop()
            return self._response
        except grpc.aio.AioRpcError as exc:
            code, self._error = exc.code(), exc
            if raise_:
                raise
        except asyncio.CancelledError as exc:
            code, self._error = grpc.StatusCode.CANCELLED, exc
            raise
        finally:
            self._finish(code)
        return None

    def _finish(self, code: grpc.StatusCode) -> None:
        self._finished = True
        self._ended(code)
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)
        for callback in self._callbacks:
            callback(self)

    async def _attempts_loop(self) -> Any:
        ch, spec = self._ch, self._spec
        ch.budget.deposit()
        while True:
            timeout, md = self._attempt_args()
            self._attempts += 1
            instance, gate, sub = ch.choose(self._tried, self._key)
            self._picked(instance)
            ticket = ch.balancer.track(instance)
            call = sub.callable("unary_unary", spec.method, spec.ser, spec.deser, spec.registered)
            self._inner = call(self._request, timeout=timeout, metadata=md, **self._extra)
            try:
                response = await self._inner
            except grpc.aio.AioRpcError as exc:
                report(ticket, gate, exc.code())
                error = exc
            except asyncio.CancelledError:
                report(ticket, gate, grpc.StatusCode.CANCELLED)
                if not sub.closing or self._cancelled or own_cancel():
                    raise
                error = closing_error(sub)
            else:
                report(ticket, gate, grpc.StatusCode.OK)
                if spec.series is not None:
                    spec.series.received += 1
                return response
            delay = self._retry_delay(error.code(), error.details() or "", self._idempotent)
            if delay is None:
                raise error
            self._tried = (self._tried or set()) | {instance.id}
            if delay > 0:
                await asyncio.sleep(delay)

    async def _wait(self) -> None:
        if not self._started:
            self._started = True
            self._task = asyncio.ensure_future(self._drive(raise_=False))
        if self._finished:
            return
        if self._waiter is None:
            self._waiter = asyncio.get_running_loop().create_future()
        await asyncio.shield(self._waiter)

    def cancel(self) -> bool:
        """Cancel the call (the attempt in flight, and any retry to come)."""
        if self._finished:
            return False
        self._cancelled = True
        if self._inner is not None:
            self._inner.cancel()
        if self._task is not None:
            self._task.cancel()
        return True

    def cancelled(self) -> bool:
        """Whether the call was cancelled."""
        return self._cancelled

    def done(self) -> bool:
        """Whether the call has finished."""
        return self._finished

    def time_remaining(self) -> float | None:
        """Seconds left of the call's deadline (None: no deadline)."""
        left = self._left()
        return None if math.isinf(left) else max(0.0, left)

    def add_done_callback(self, callback: Callable[[Any], None]) -> None:
        """Call ``callback(call)`` when the call finishes."""
        if self._finished:
            callback(self)
        else:
            self._callbacks.append(callback)

    async def initial_metadata(self) -> Any:
        """The last attempt's initial metadata."""
        await self._wait()
        return grpc.aio.Metadata() if self._inner is None else await self._inner.initial_metadata()

    async def trailing_metadata(self) -> Any:
        """The last attempt's trailing metadata."""
        await self._wait()
        if self._inner is None:
            return grpc.aio.Metadata()
        return await self._inner.trailing_metadata()

    async def code(self) -> grpc.StatusCode:
        """The call's final status code."""
        await self._wait()
        if isinstance(self._error, grpc.aio.AioRpcError):
            return self._error.code()
        return grpc.StatusCode.CANCELLED if self._error is not None else grpc.StatusCode.OK

    async def details(self) -> str:
        """The call's final status details."""
        await self._wait()
        if isinstance(self._error, grpc.aio.AioRpcError):
            return str(self._error.details() or "")
        return ""

    async def wait_for_connection(self) -> None:
        """Wait until the call has finished (a unary call's response is its connection)."""
        await self._wait()

    def __repr__(self) -> str:
        state = "done" if self._finished else "running" if self._started else "new"
        return f"<keel.grpc UnaryCall {self._spec.method} {state} attempts={self._attempts}>"
