"""The ASGI layer a Service puts around any app: probes, metrics, deadlines, traces.

One plain ASGI middleware (no framework), so it works under FastAPI, Starlette,
Litestar or a bare ASGI callable, and costs a few microseconds per request:

- ``/healthz`` (liveness), ``/readyz`` (readiness) and ``/metrics``
  (Prometheus text) are answered here and never reach the app;
- a ``keel-deadline`` header (seconds left, as a decimal) runs the app inside
  :func:`keel.resilience.deadline`, so the app's own outgoing calls inherit
  what is left; a request that outlives it gets ``504`` with
  ``keel-error: deadline-exceeded``;
- W3C ``traceparent`` starts the server span as its child (when a tracer
  provider records; else the remote context is only passed on);
- RED metrics per route and status (:class:`keel.observe.HttpMetrics`).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from keel.errors import DeadlineExceededError, KeelError
from keel.observe import HttpMetrics, extract, tracer
from keel.observe._http_metrics import RouteSeries
from keel.resilience import deadline

__all__ = ["DEADLINE_HEADER", "ERROR_HEADER", "KeelMiddleware", "Probe", "parse_deadline"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

DEADLINE_HEADER = "keel-deadline"
ERROR_HEADER = "keel-error"
_DEADLINE = DEADLINE_HEADER.encode()
_TRACE_HEADERS = (b"traceparent", b"tracestate", b"baggage")
_PROBES = frozenset({"/healthz", "/readyz", "/metrics"})


class Probe:
    """What ``/readyz`` asks: the Service fills it in; the middleware only reads it.

    Attributes:
        started: the server finished its startup.
        draining: shutdown began (readiness fails from then on).
        checks: named readiness checks, sync or async, returning truthy when ready.
        session_ok: returns False once the store session is lost.
    """

    def __init__(self) -> None:
        self.started = False
        self.draining = False
        self.checks: dict[str, Callable[[], Any]] = {}
        self.session_ok: Callable[[], bool] = lambda: True

    async def failures(self) -> list[str]:
        """Names of what is not ready now (empty: ready)."""
        failed = []
        if not self.started:
            failed.append("starting")
        if self.draining:
            failed.append("draining")
        if not self.session_ok():
            failed.append("store-session")
        for name, check in self.checks.items():
            try:
                result = check()
                if isinstance(result, Awaitable):
                    result = await result
            except Exception:
                result = False
            if not result:
                failed.append(name)
        return failed

    def __repr__(self) -> str:
        return f"<Probe started={self.started} draining={self.draining} checks={list(self.checks)}>"


def parse_deadline(value: bytes) -> float | None:
    """Seconds left from a ``keel-deadline`` header value, or None when it is malformed."""
    try:
        seconds = float(value)
    except ValueError:
        return None
    if math.isnan(seconds) or math.isinf(seconds):
        return None
    return seconds


class KeelMiddleware:
    """Wraps ``app``: probes, deadline and trace propagation, RED metrics.

    Args:
        app: the ASGI application.
        service: the service name (metrics label, span attribute).
        probe: readiness state.
        metrics: the HTTP series.
        registry: what ``/metrics`` exposes.
        tracer_provider: where server spans go (default: the global provider).
        exposition: renders the ``/metrics`` body instead of ``registry`` (a
            worker process asks its supervisor for the whole instance's series);
            a KeelError from it answers 503.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        service: str,
        probe: Probe,
        metrics: HttpMetrics,
        registry: CollectorRegistry,
        tracer_provider: trace.TracerProvider | None = None,
        exposition: Callable[[], Awaitable[bytes]] | None = None,
    ) -> None:
        self.app = app
        self.service = service
        self.probe = probe
        self.metrics = metrics
        self.registry = registry
        self._exposition = exposition
        self._provider = tracer_provider
        self._tracer = tracer(tracer_provider)
        self._in_flight = metrics.in_flight(service)
        self._routes: dict[tuple[str, str], RouteSeries] = {}
        self._recording_checked = -math.inf
        self._recording = tracer_provider is not None
        self.observe_http = True
        """Deadline, RED metrics and trace context around each request; an app that
        reads ``keel-deadline`` and counts its requests itself (the gateway) turns it off
        and gets the request straight after the probes (spans still wrap it while a
        tracer provider records)."""

    def _tracing(self, now: float) -> bool:
        """Whether spans are recorded; the global provider is looked up once a second.

        (``trace.get_tracer_provider()`` reads the environment on every call.)
        """
        if self._provider is None and now - self._recording_checked > 1.0:
            self._recording_checked = now
            provider = trace.get_tracer_provider()
            self._recording = not isinstance(provider, trace.ProxyTracerProvider)
        return self._recording

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if scope["path"] in _PROBES:
            await self._probe(scope["path"], send)
            return
        if not self.observe_http and not self._tracing(time.perf_counter()):
            await self.app(scope, receive, send)
            return
        seconds, carrier = None, False
        for name, value in scope["headers"]:
            if name == _DEADLINE:
                seconds = parse_deadline(value)
            elif name in _TRACE_HEADERS:
                carrier = True
        status = [500]

        async def send_status(message: Message) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        start = time.perf_counter()
        self._in_flight.n += 1
        token = None
        try:
            if self._tracing(start):
                parent = extract(scope["headers"]) if carrier else None
                with self._tracer.start_as_current_span(
                    f"{scope['method']} {scope['path']}",
                    context=parent,
                    kind=trace.SpanKind.SERVER,
                    attributes={
                        "http.request.method": scope["method"],
                        "keel.service": self.service,
                    },
                ) as span:
                    await self._call(scope, receive, send_status, seconds, status)
                    span.set_attribute("http.response.status_code", status[0])
            else:
                if carrier:
                    token = otel_context.attach(extract(scope["headers"]))
                await self._call(scope, receive, send_status, seconds, status)
        finally:
            if token is not None:
                otel_context.detach(token)
            self._in_flight.n -= 1
            self._record(scope, status[0], time.perf_counter() - start)

    async def _call(
        self, scope: Scope, receive: Receive, send: Send, seconds: float | None, status: list[int]
    ) -> None:
        if seconds is None:
            await self.app(scope, receive, send)
            return
        started = [False]

        async def send_started(message: Message) -> None:
            if message["type"] == "http.response.start":
                started[0] = True
            await send(message)

        try:
            if seconds <= 0:
                raise DeadlineExceededError("the caller's deadline passed before the request came")
            async with deadline(seconds):
                await self.app(scope, receive, send_started)
        except DeadlineExceededError:
            if started[0]:
                raise
            await _respond(
                send, 504, b"deadline exceeded\n", extra=[(ERROR_HEADER, "deadline-exceeded")]
            )
            status[0] = 504

    def _record(self, scope: Scope, status: int, duration_s: float) -> None:
        route = getattr(scope.get("route"), "path", None) or scope["path"]
        key = (scope["method"], route)
        series = self._routes.get(key)
        if series is None:
            label = self.metrics.route_label(route if "route" in scope else None, scope["path"])
            series = self.metrics.route(self.service, key[0], label)
            if len(self._routes) < 4 * self.metrics.max_routes:
                self._routes[key] = series
        series.observe(status, duration_s)

    async def _probe(self, path: str, send: Send) -> None:
        if path == "/healthz":
            await _respond(send, 200, b"ok\n")
        elif path == "/readyz":
            failed = await self.probe.failures()
            body = json.dumps({"ready": not failed, "failing": failed}).encode()
            await _respond(send, 503 if failed else 200, body, "application/json")
        elif self._exposition is None:
            await _respond(send, 200, generate_latest(self.registry), CONTENT_TYPE_LATEST)
        else:
            try:
                body = await self._exposition()
            except KeelError as exc:
                await _respond(send, 503, f"{exc}\n".encode())
            else:
                await _respond(send, 200, body, CONTENT_TYPE_LATEST)

    def __repr__(self) -> str:
        return f"<KeelMiddleware service={self.service!r} app={self.app!r}>"


async def _respond(
    send: Send,
    status: int,
    body: bytes,
    content_type: str = "text/plain; charset=utf-8",
    extra: list[tuple[str, str]] | None = None,
) -> None:
    headers = [
        (b"content-type", content_type.encode()),
        (b"content-length", str(len(body)).encode()),
    ]
    headers += [(k.encode(), v.encode()) for k, v in extra or ()]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
