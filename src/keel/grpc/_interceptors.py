"""The server interceptor of keel.grpc: deadline, trace context, metrics, access log.

grpc.aio server interceptors see a call before its handler runs and return the
``RpcMethodHandler`` to run; they never see how it ended. So
:class:`KeelServerInterceptor` returns a copy of the handler whose behaviour
(``unary_unary``, ``unary_stream``, ``stream_unary`` or ``stream_stream``) is
wrapped: the wrapper enters keel's deadline, opens the server span, runs the
behaviour and reads the status code from the context (``context.code()``, set
by ``abort``/``set_code``) or from the exception that escaped (``UNKNOWN``).

Cost: the wrapped handler is built once per method and cached (the
continuation returns the same handler object for every call of a method); per
call the wrapper reads the invocation metadata once, bumps plain numbers
(:mod:`keel.grpc._metrics`) and only formats the access log line when the
``keel.grpc.access`` logger is enabled for INFO.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import math
import time
import urllib.parse
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import Any

import grpc
from opentelemetry import context as otel_context
from opentelemetry import propagate, trace

from keel.errors import DeadlineExceededError
from keel.grpc._metrics import GrpcMetrics, MethodSeries, grpc_metrics, split_method
from keel.observe import tracer
from keel.resilience import deadline

__all__ = ["ACCESS_LOGGER", "HEALTH_WATCH", "KeelServerInterceptor"]

ACCESS_LOGGER = "keel.grpc.access"
HEALTH_WATCH = "/grpc.health.v1.Health/Watch"
access_log = logging.getLogger(ACCESS_LOGGER)

_TRACE_KEYS = ("traceparent", "tracestate", "baggage")
_OK = "OK"
Behaviour = Callable[..., Any]


class _Call:
    """What every wrapper does around one call; one per method, reused."""

    __slots__ = ("_interceptor", "busy", "full_method", "grpc_type", "series")

    def __init__(
        self, interceptor: KeelServerInterceptor, full_method: str, grpc_type: str
    ) -> None:
        self._interceptor = interceptor
        self.full_method = full_method
        self.grpc_type = grpc_type
        self.series: MethodSeries = interceptor.metrics.server(grpc_type, full_method)
        # Whether the call keeps a draining server busy (a health watch never ends).
        self.busy = full_method not in interceptor.idle_methods

    def begin(self, context: grpc.aio.ServicerContext) -> tuple[Any, Any, float]:
        """Count the start; open the span (or attach the caller's trace context)."""
        self.series.started += 1
        if self.busy:
            # Counted until grpc has ended the call (its status sent), not until the
            # handler returns: a drain that stopped the server in between would cut
            # off a call whose handler had finished.
            self._interceptor.busy += 1
            context.add_done_callback(self._interceptor.left_busy)
        start = time.perf_counter()
        carrier: dict[str, str] | None = None
        for key, value in context.invocation_metadata() or ():
            if key in _TRACE_KEYS:
                if carrier is None:
                    carrier = {}
                carrier[key] = value if isinstance(value, str) else value.decode("latin-1")
        parent = propagate.extract(carrier) if carrier is not None else None
        interceptor = self._interceptor
        if interceptor.tracing(start):
            service, method = split_method(self.full_method)
            attributes = {"rpc.system": "grpc", "rpc.service": service, "rpc.method": method}
            span = interceptor.tracer.start_span(
                self.full_method.lstrip("/"),
                context=parent,
                kind=trace.SpanKind.SERVER,
                attributes={**attributes, **_peer(context.peer())},
            )
            return span, otel_context.attach(trace.set_span_in_context(span, parent)), start
        if parent is not None:
            return None, otel_context.attach(parent), start
        return None, None, start

    def end(
        self,
        context: grpc.aio.ServicerContext,
        state: tuple[Any, Any, float],
        exc: BaseException | None,
    ) -> None:
        """Count the outcome, close the span, write the access log line."""
        span, token, start = state
        duration = time.perf_counter() - start
        code = _code(context, exc)
        self.series.handled(code, duration)
        if token is not None:
            otel_context.detach(token)
        if span is not None:
            span.set_attribute("rpc.grpc.status_code", _CODE_VALUES.get(code, 2))
            if code in _SERVER_ERRORS:
                span.set_status(trace.Status(trace.StatusCode.ERROR, code))
            span.end()
        if self._interceptor.access_log and access_log.isEnabledFor(logging.INFO):
            access_log.info(
                "%s %s %.1fms %s",
                self.full_method,
                code,
                duration * 1000,
                context.peer(),
                extra={
                    "grpc_method": self.full_method,
                    "grpc_code": code,
                    "duration_ms": round(duration * 1000, 3),
                    "peer": context.peer(),
                },
            )


_CODE_VALUES: dict[str, int] = {c.name: c.value[0] for c in grpc.StatusCode}
# The codes that mark a server span failed (OpenTelemetry's RPC conventions):
# the others (NOT_FOUND, INVALID_ARGUMENT...) are the caller's problem, an error
# on its CLIENT span only.
_SERVER_ERRORS = frozenset(
    {"UNKNOWN", "DEADLINE_EXCEEDED", "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS"}
)


def _peer(peer: str | None) -> dict[str, str | int]:
    """``network.peer.address`` and ``.port`` from grpc's ``ipv4:1.2.3.4:5`` peer string."""
    kind, _, rest = (peer or "").partition(":")
    if kind not in ("ipv4", "ipv6"):
        return {}
    host, _, port = urllib.parse.unquote(rest).rpartition(":")
    if not port.isdigit():
        return {}
    return {"network.peer.address": host.strip("[]"), "network.peer.port": int(port)}


def _code(context: grpc.aio.ServicerContext, exc: BaseException | None) -> str:
    """The status the call ended with: the context's code, else what the exception means."""
    code = context.code()
    if code is not None:
        return str(code.name) if isinstance(code, grpc.StatusCode) else _name_of(code)
    if exc is None:
        return _OK
    if isinstance(exc, asyncio.CancelledError | GeneratorExit):  # a stream closed early
        # grpc cancels the handler when the caller's deadline passes.
        left = context.time_remaining()
        return "DEADLINE_EXCEEDED" if left is not None and left <= 0 else "CANCELLED"
    return "UNKNOWN"


def _name_of(value: object) -> str:
    for name, number in _CODE_VALUES.items():
        if number == value:
            return name
    return "UNKNOWN"


def _budget(context: grpc.aio.ServicerContext) -> float | None:
    """Seconds left of the caller's deadline, None when it sent none."""
    left = context.time_remaining()
    if left is None or math.isinf(left) or left > 1e8:
        return None
    return float(left)


async def _deadline_passed(context: grpc.aio.ServicerContext) -> None:
    await context.abort(grpc.StatusCode.DEADLINE_EXCEEDED, "the caller's deadline passed")


async def _within(
    left: float, behaviour: Behaviour, request: Any, context: grpc.aio.ServicerContext
) -> Any:
    """Run a unary-response behaviour inside keel's deadline of ``left`` seconds."""
    try:
        if left <= 0:
            raise DeadlineExceededError("the caller's deadline passed before the call started")
        async with deadline(left):
            return await behaviour(request, context)
    except DeadlineExceededError:
        await _deadline_passed(context)
        raise  # abort() raised already


def _unary_response(call: _Call, behaviour: Behaviour, streaming_request: bool) -> Behaviour:
    async def wrapper(request: Any, context: grpc.aio.ServicerContext) -> Any:
        state = call.begin(context)
        if streaming_request:
            request = _counted(request, call.series)
        else:
            call.series.received += 1
        exc: BaseException | None = None
        try:
            left = _budget(context)
            if left is None:
                reply = await behaviour(request, context)
            else:
                reply = await _within(left, behaviour, request, context)
            call.series.sent += 1
            return reply
        except BaseException as e:
            exc = e
            raise
        finally:
            call.end(context, state, exc)

    return wrapper


async def _counted(requests: AsyncIterator[Any], series: MethodSeries) -> AsyncIterator[Any]:
    async for request in requests:
        series.received += 1
        yield request


def _stream_response(call: _Call, behaviour: Behaviour, streaming_request: bool) -> Behaviour:
    if not inspect.isasyncgenfunction(behaviour):
        # A handler that writes with context.write() and returns None.
        return _unary_response(call, behaviour, streaming_request)

    async def wrapper(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        state = call.begin(context)
        if streaming_request:
            request = _counted(request, call.series)
        else:
            call.series.received += 1
        exc: BaseException | None = None
        series = call.series
        try:
            left = _budget(context)
            if left is not None and left <= 0:
                await _deadline_passed(context)
            try:
                if left is None:
                    async for reply in behaviour(request, context):
                        series.sent += 1
                        yield reply
                else:
                    async with deadline(left):
                        async for reply in behaviour(request, context):
                            series.sent += 1
                            yield reply
            except DeadlineExceededError:
                await _deadline_passed(context)
        except BaseException as e:
            exc = e
            raise
        finally:
            call.end(context, state, exc)

    return wrapper


class KeelServerInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]  # grpc is untyped
    """Deadline, trace context, metrics and access log for every call of a grpc.aio server.

    :class:`keel.grpc.Server` installs one; add it to a bare ``grpc.aio.server()`` too:
    ``grpc.aio.server(interceptors=[KeelServerInterceptor()])``. Handlers must be
    ``async`` (grpc.aio's own rule for servicers run on the event loop).

    Args:
        metrics: the series to count in (default: the process-wide ones).
        tracer_provider: where server spans go (default: the global provider,
            looked up once a second; a no-op until an SDK is configured).
        idle_methods: methods whose calls do not count as :attr:`busy` (calls
            that last as long as the client wants, like the health ``Watch``).
        access_log: write the access log line (when ``keel.grpc.access`` is
            enabled for INFO); a formatted log record costs more than the rest
            of the interceptor together.
    """

    def __init__(
        self,
        *,
        metrics: GrpcMetrics | None = None,
        tracer_provider: trace.TracerProvider | None = None,
        idle_methods: Iterable[str] = (HEALTH_WATCH,),
        access_log: bool = True,
    ) -> None:
        self.access_log = access_log
        self.metrics = metrics if metrics is not None else grpc_metrics()
        self.tracer = tracer(tracer_provider)
        self.busy = 0
        """Calls being handled now, except the long-lived ``idle_methods``."""
        self.idle_methods = frozenset(idle_methods)
        self._idle: asyncio.Future[None] | None = None
        self._provider = tracer_provider
        self._recording = tracer_provider is not None
        self._recording_checked = -math.inf
        self._handlers: dict[str, tuple[grpc.RpcMethodHandler, grpc.RpcMethodHandler]] = {}

    def left_busy(self, _context: object = None) -> None:
        """One busy call ended; wake :meth:`wait_idle` when it was the last."""
        self.busy -= 1
        if self.busy == 0 and self._idle is not None and not self._idle.done():
            self._idle.set_result(None)

    async def wait_idle(self) -> None:
        """Return once no busy call is being handled (a draining server's last step)."""
        while self.busy > 0:
            self._idle = asyncio.get_running_loop().create_future()
            await self._idle

    def tracing(self, now: float) -> bool:
        """Whether spans are recorded (the global provider is looked up once a second)."""
        if self._provider is None and now - self._recording_checked > 1.0:
            self._recording_checked = now
            provider = trace.get_tracer_provider()
            self._recording = not isinstance(provider, trace.ProxyTracerProvider)
        return self._recording

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        """The method's handler with its behaviour wrapped (built once per method)."""
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        method = handler_call_details.method
        cached = self._handlers.get(method)
        if cached is not None and cached[0] is handler:
            return cached[1]
        wrapped = self.wrap(handler, method)
        self._handlers[method] = (handler, wrapped)
        return wrapped

    def wrap(self, handler: grpc.RpcMethodHandler, full_method: str) -> grpc.RpcMethodHandler:
        """A copy of ``handler`` whose behaviour runs inside keel's call wrapper."""
        streams = (handler.request_streaming, handler.response_streaming)
        grpc_type = _TYPES[streams]
        call = _Call(self, full_method, grpc_type)
        kwargs = {
            "request_deserializer": handler.request_deserializer,
            "response_serializer": handler.response_serializer,
        }
        if streams == (False, False):
            return grpc.unary_unary_rpc_method_handler(
                _unary_response(call, handler.unary_unary, False), **kwargs
            )
        if streams == (True, False):
            return grpc.stream_unary_rpc_method_handler(
                _unary_response(call, handler.stream_unary, True), **kwargs
            )
        if streams == (False, True):
            return grpc.unary_stream_rpc_method_handler(
                _stream_response(call, handler.unary_stream, False), **kwargs
            )
        return grpc.stream_stream_rpc_method_handler(
            _stream_response(call, handler.stream_stream, True), **kwargs
        )

    def __repr__(self) -> str:
        return f"<KeelServerInterceptor busy={self.busy} methods={len(self._handlers)}>"


_TYPES = {
    (False, False): "unary",
    (True, False): "client_stream",
    (False, True): "server_stream",
    (True, True): "bidi_stream",
}
