"""Streaming calls through a keel Channel: pinned to one instance for their life.

A server stream (one request) is started again on another instance when its
first read fails with an UNAVAILABLE that never left (the request is known
and nothing was received). Client and bidi streams are grpc.aio's own calls,
unwrapped, with a done-callback that reports their outcome: grpc consumes
their request iterator as soon as they start, so there is nothing safe to
replay once they fail.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator, Callable, Sequence
from typing import TYPE_CHECKING, Any

import grpc

from keel.grpc._calls import Base, Spec, closing_error, own_cancel, report, status_of

if TYPE_CHECKING:
    from keel.grpc._channel import Channel
    from keel.grpc._metrics import MethodSeries
    from keel.grpc._pool import Sub
    from keel.registry import Instance

__all__ = ["UnaryStreamCall", "start_stream"]


class UnaryStreamCall(Base, grpc.aio.UnaryStreamCall):  # type: ignore[misc]  # grpc is untyped
    """A server stream pinned to one instance; restarted elsewhere only before it began."""

    def __init__(
        self,
        channel: Channel,
        spec: Spec,
        request: Any,
        *,
        timeout: float | None,
        metadata: Sequence[tuple[str, str | bytes]] | None,
        extra: dict[str, Any],
    ) -> None:
        super().__init__(channel, spec, timeout, metadata, channel.settings.stream_timeout_s)
        self._request = request
        self._extra = extra
        self._received = 0
        self._aiter: Any = None
        self._finished = False
        self._callbacks: list[Callable[[Any], None]] = []
        self._sub: Sub
        self._inner: Any
        channel.budget.deposit()
        self._open()

    def _open(self) -> None:
        spec = self._spec
        timeout, md = self._attempt_args()
        self._attempts += 1
        try:
            instance, gate, self._sub = self._ch.choose(self._tried, self._key)
        except grpc.aio.AioRpcError as exc:
            self._done(exc.code())
            raise
        self._picked(instance)
        ticket = self._ch.balancer.track(instance)
        call = self._sub.callable(
            "unary_stream", spec.method, spec.ser, spec.deser, spec.registered
        )
        self._inner = call(self._request, timeout=timeout, metadata=md, **self._extra)
        self._inner.add_done_callback(lambda c: report(ticket, gate, status_of(c)[0]))
        self._instance: Instance = instance

    async def read(self) -> Any:
        """The next response, or ``grpc.aio.EOF`` at the end."""
        while True:
            try:
                message = await self._inner.read()
            except grpc.aio.AioRpcError as exc:
                if self._received == 0 and self._restart(exc.code(), exc.details() or ""):
                    continue
                self._done(exc.code())
                raise
            except asyncio.CancelledError:
                if not self._sub.closing or self._inner.cancelled() or own_cancel():
                    self._done(grpc.StatusCode.CANCELLED)
                    raise
                self._done(grpc.StatusCode.UNAVAILABLE)
                raise closing_error(self._sub) from None
            if message is grpc.aio.EOF:
                self._done(grpc.StatusCode.OK)
            else:
                self._received += 1
                if self._spec.series is not None:
                    self._spec.series.received += 1
            return message

    def _restart(self, code: grpc.StatusCode, details: str) -> bool:
        if self._retry_delay(code, details, idempotent=False) is None:
            return False
        self._tried = (self._tried or set()) | {self._instance.id}
        self._open()
        return True

    def __aiter__(self) -> Any:
        if self._aiter is None:
            self._aiter = self._iterate()
        return self._aiter

    async def _iterate(self) -> Any:
        try:
            while (message := await self.read()) is not grpc.aio.EOF:
                yield message
        finally:
            if not self._inner.done():
                self._inner.cancel()
                self._done(grpc.StatusCode.CANCELLED)

    def _done(self, code: grpc.StatusCode) -> None:
        if self._finished:
            return
        self._finished = True
        self._ended(code)
        for callback in self._callbacks:
            callback(self)

    def cancel(self) -> bool:
        """Cancel the stream."""
        cancelled = bool(self._inner.cancel())
        if cancelled:
            self._done(grpc.StatusCode.CANCELLED)
        return cancelled

    def cancelled(self) -> bool:
        """Whether the stream was cancelled."""
        return bool(self._inner.cancelled())

    def done(self) -> bool:
        """Whether the stream has ended."""
        return self._finished

    def time_remaining(self) -> float | None:
        """Seconds left of the stream's deadline (None: no deadline)."""
        left = self._left()
        return None if math.isinf(left) else max(0.0, left)

    def add_done_callback(self, callback: Callable[[Any], None]) -> None:
        """Call ``callback(call)`` when the stream has been read to its end or cancelled."""
        if self._finished:
            callback(self)
        else:
            self._callbacks.append(callback)

    async def initial_metadata(self) -> Any:
        """The serving instance's initial metadata."""
        return await self._inner.initial_metadata()

    async def trailing_metadata(self) -> Any:
        """The serving instance's trailing metadata."""
        return await self._inner.trailing_metadata()

    async def code(self) -> grpc.StatusCode:
        """The stream's final status code."""
        return await self._inner.code()

    async def details(self) -> str:
        """The stream's final status details."""
        return str(await self._inner.details())

    async def wait_for_connection(self) -> None:
        """Wait until the stream's instance has answered with its initial metadata."""
        await self._inner.wait_for_connection()

    def __repr__(self) -> str:
        return (
            f"<keel.grpc UnaryStreamCall {self._spec.method} on {self._instance.id} "
            f"received={self._received} done={self._finished}>"
        )


def start_stream(
    channel: Channel,
    kind: str,
    spec: Spec,
    requests: Any,
    *,
    timeout: float | None,
    metadata: Sequence[tuple[str, str | bytes]] | None,
    extra: dict[str, Any],
) -> Any:
    """Start a client or bidi stream on one instance; return grpc.aio's own call.

    Raises:
        grpc.aio.AioRpcError: UNAVAILABLE when the service has no usable instance.
    """
    base = Base(channel, spec, timeout, metadata, channel.settings.stream_timeout_s)
    try:
        args = base._attempt_args()
        instance, gate, sub = channel.choose(None, base._key)
    except grpc.aio.AioRpcError as exc:
        base._ended(exc.code())
        raise
    base._picked(instance)
    ticket = channel.balancer.track(instance)
    call = sub.callable(kind, spec.method, spec.ser, spec.deser, spec.registered)
    if requests is not None and spec.series is not None:
        requests = _counted(requests, spec.series)
    inner = call(requests, timeout=args[0], metadata=args[1], **extra)

    def done(finished: Any) -> None:
        code = status_of(finished)[0]
        report(ticket, gate, code)
        base._ended(code)

    inner.add_done_callback(done)
    return inner


async def _counted(requests: Any, series: MethodSeries) -> AsyncIterator[Any]:
    """Pass the request messages through (sync or async iterable), counting them as sent."""
    if hasattr(requests, "__aiter__"):
        async for request in requests:
            series.sent += 1
            yield request
    else:
        for request in requests:
            series.sent += 1
            yield request
