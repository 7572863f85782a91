"""Server: serve gRPC services, register the instance once serving, drain on SIGTERM.

The order of a start:

1. the grpc.aio server starts with keel's interceptor (deadline, trace
   context, metrics, access log), the standard health service and server
   reflection beside the caller's services;
2. its own health check, over a real channel to the advertised address,
   answers ``SERVING``: the listener works, end to end;
3. only then is the instance registered (scheme ``grpc``) on the process
   session, so no client is sent to a port that does not answer yet.

The order of a clean shutdown (SIGTERM, SIGINT or :meth:`Server.stop`) is the
one :class:`keel.service.Service` follows, with gRPC's own signals:

1. health answers ``NOT_SERVING`` for every service (and ``""``), the instance
   is marked ``DRAINING``: discovery drops it, load balancers and probes that
   watch health stop sending;
2. after ``drain_delay_s`` (the time a watch takes to reach the clients'
   caches) the instance is deregistered, *then* the server stops accepting;
3. in-flight calls run on for up to ``grace_s``; health watches (which last as
   long as their client wants) are cancelled once the other calls are done;
4. the session's lease is revoked, the store closed if the server opened it;
   :meth:`Server.serve` returns (exit 0).

A second signal while draining stops waiting for in-flight calls.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterable, Sequence
from types import TracebackType
from typing import Any, Self

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc  # type: ignore[import-untyped]
from grpc_health.v1._async import HealthServicer  # type: ignore[import-untyped]
from grpc_reflection.v1alpha import reflection  # type: ignore[import-untyped]
from opentelemetry import trace
from prometheus_client import REGISTRY, CollectorRegistry

import keel
from keel._signals import on_stop_signal
from keel.coord import Session
from keel.errors import KeelError, ValidationError
from keel.grpc._exposition import serve_metrics
from keel.grpc._interceptors import KeelServerInterceptor
from keel.grpc._metrics import GrpcMetrics
from keel.registry import Instance, Registration, Registry
from keel.service import ServiceSettings
from keel.store import Store, default_url

__all__ = ["Server"]

log = logging.getLogger("keel.grpc")

AddServicer = Callable[[Any, Any], None]
"""A generated ``add_XServicer_to_server(servicer, server)`` function."""

_SERVING = health_pb2.HealthCheckResponse.SERVING
_HEALTH = health_pb2.DESCRIPTOR.services_by_name["Health"].full_name


class _Registrar:
    """Stands in for the grpc.aio server while an ``add_X_to_server`` runs.

    It notes the service names, and with ``wrap`` set it hands grpc each method
    handler already wrapped by keel's interceptor: the wrapping is done once
    here instead of grpc awaiting an interceptor on every call (about a tenth
    of a small call's server time).
    """

    def __init__(self, server: grpc.aio.Server, wrap: KeelServerInterceptor | None = None) -> None:
        self._server = server
        self._wrap = wrap
        self.services: list[str] = []

    def add_generic_rpc_handlers(self, handlers: Sequence[Any]) -> None:
        for handler in handlers:
            service_name = getattr(handler, "service_name", None)
            if callable(service_name) and service_name() not in self.services:
                self.services.append(service_name())
        if self._wrap is not None:
            handlers = [_Wrapped(handler, self._wrap) for handler in handlers]
        self._server.add_generic_rpc_handlers(handlers)

    def add_registered_method_handlers(self, service: str, handlers: Any) -> None:
        if service not in self.services:
            self.services.append(service)
        if self._wrap is not None:
            wrap = self._wrap.wrap
            handlers = {name: wrap(h, f"/{service}/{name}") for name, h in handlers.items()}
        self._server.add_registered_method_handlers(service, handlers)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._server, name)


class _Wrapped(grpc.GenericRpcHandler):  # type: ignore[misc]  # grpc is untyped
    """A generic handler whose method handlers come out wrapped by keel (each once)."""

    def __init__(self, inner: Any, interceptor: KeelServerInterceptor) -> None:
        self._inner = inner
        self._interceptor = interceptor
        self._cache: dict[str, tuple[Any, Any]] = {}

    def service_name(self) -> Any:
        name = getattr(self._inner, "service_name", None)
        return name() if callable(name) else None

    def service(self, details: grpc.HandlerCallDetails) -> Any:
        handler = self._inner.service(details)
        if handler is None:
            return None
        cached = self._cache.get(details.method)
        if cached is None or cached[0] is not handler:
            cached = self._cache[details.method] = (
                handler,
                self._interceptor.wrap(handler, details.method),
            )
        return cached[1]


class Server:
    """One instance of a gRPC service: ``await Server("users", store=store).serve()``.

    ``async with Server(...) as server`` starts it (serving and registered on
    entry) and drains it on exit, for tests and embedding.

    Args:
        name: the service name clients resolve (``keel.grpc.Channel(store, name)``).
        store: a Store, a store URL, or None for ``KEEL_STORE`` / the default.
        port: port to bind (0: a free one); overrides settings and environment.
        host: address to bind; overrides settings and environment.
        settings: the rest, as for :class:`keel.service.Service`
            (default: :meth:`ServiceSettings.from_env`, ``KEEL_SERVICE_*``).
        interceptors: more ``grpc.aio.ServerInterceptor`` s, run inside keel's.
        options: grpc channel arguments for the server (``grpc.max_receive_message_length``...).
        reflection: serve server reflection (grpcurl, Postman, ``grpc_cli``).
        metrics: the ``keel_grpc_server_*`` series (default: the process-wide ones).
        metrics_port: also answer ``GET /metrics`` over plain HTTP on this port
            (0: a free one, see :attr:`metrics_port`); None: no HTTP listener.
        registry: what that ``/metrics`` shows (default: the global registry).
        tracer_provider: where server spans go (default: the global provider).
        access_log: one log line per call on ``keel.grpc.access`` at INFO.

    Raises:
        ValidationError: a bad name or setting, or ``workers`` > 1 (see docs/grpc.md).
    """

    def __init__(
        self,
        name: str,
        *,
        store: Store | str | None = None,
        port: int | None = None,
        host: str | None = None,
        settings: ServiceSettings | None = None,
        interceptors: Iterable[grpc.aio.ServerInterceptor] = (),
        options: Iterable[tuple[str, Any]] = (),
        reflection: bool = True,
        metrics: GrpcMetrics | None = None,
        metrics_port: int | None = None,
        registry: CollectorRegistry | None = None,
        tracer_provider: trace.TracerProvider | None = None,
        access_log: bool = True,
    ) -> None:
        Instance(service=name, address="127.0.0.1", port=1)  # validates the name
        self.name = name
        self.settings = _check(
            (settings or ServiceSettings.from_env()).with_changes(port=port, host=host)
        )
        self._store_arg = store
        self._interceptors = list(interceptors)
        # An instance owns its port: grpc's default SO_REUSEPORT would let a second
        # process (a stale one, another service) share it silently.
        self._options = [("grpc.so_reuseport", 0), *options]
        self._reflection = reflection
        self._adds: list[tuple[AddServicer, Any]] = []
        if metrics_port is not None and not 0 <= metrics_port <= 65535:
            raise ValidationError(f"metrics_port {metrics_port!r}: use 0 (any free port) to 65535")
        self.metrics_port = metrics_port
        """The port of the HTTP ``/metrics`` listener (the bound one once started)."""
        self._registry = registry if registry is not None else REGISTRY
        self.interceptor = KeelServerInterceptor(
            metrics=metrics, tracer_provider=tracer_provider, access_log=access_log
        )
        """keel's interceptor (its ``busy`` count is the calls being handled)."""
        self.health = HealthServicer()
        """The ``grpc.health.v1`` servicer (set a service's status on it yourself if needed)."""
        self.services: list[str] = []
        """Full names of the services served (known once started)."""
        self.store: Store | None = None
        self.session: Session | None = None
        """The process session the instance is registered on (set once started).

        Share it: locks, elections and registrations taken on it go with the
        instance when it stops or its session is lost.
        """
        self.registration: Registration | None = None
        self.port = 0
        self.ready = asyncio.Event()
        """Set once the instance is registered (serving, its health check answered)."""
        self.draining = False
        self._grpc: grpc.aio.Server | None = None
        self._stack: contextlib.AsyncExitStack | None = None
        self._stop = asyncio.Event()
        self._force = asyncio.Event()

    def override(
        self,
        *,
        name: str | None = None,
        store: str | None = None,
        port: int | None = None,
        host: str | None = None,
    ) -> None:
        """Change what is given before the server starts (``keel run`` options; None: keep).

        Raises:
            ValidationError: already started, or a bad name or port.
        """
        self._not_started("override()")
        if name is not None:
            Instance(service=name, address="127.0.0.1", port=1)
            self.name = name
        if store is not None:
            self._store_arg = store
        self.settings = _check(self.settings.with_changes(port=port, host=host))

    def add(self, add_to_server: AddServicer, servicer: Any) -> None:
        """Serve ``servicer`` through its generated ``add_XServicer_to_server`` function.

        Raises:
            ValidationError: the server already started, or ``add_to_server`` is not callable.
        """
        self._not_started("add()")
        if not callable(add_to_server):
            raise ValidationError(
                f"add({add_to_server!r}, ...): pass the generated add_XServicer_to_server "
                "function first, then the servicer"
            )
        self._adds.append((add_to_server, servicer))

    def _not_started(self, what: str) -> None:
        if self._stack is not None:
            raise ValidationError(f"{what} after the server started: call it before serve()")

    @property
    def address(self) -> str:
        """``advertised-address:port``, what a plain grpc channel dials (known once started)."""
        return f"{_host(self.settings.advertised)}:{self.port}"

    @property
    def instance_id(self) -> str:
        """The registered instance id (known once started)."""
        return self.registration.instance.id if self.registration else self.settings.instance_id

    def stop(self) -> None:
        """Ask :meth:`serve` to drain and return (what SIGTERM does)."""
        self._stop.set()

    async def serve(self) -> None:
        """Start, serve until SIGTERM/SIGINT or :meth:`stop`, then drain and return.

        Raises:
            KeelError: startup failed (store unreachable, port taken, the health
                check never answered within ``startup_timeout_s``).
        """
        with on_stop_signal(self._on_signal):
            async with self:
                await self._stop.wait()

    def _on_signal(self, _signal: object = None) -> None:
        if self._stop.is_set():  # second signal: stop waiting for in-flight calls
            self._force.set()
        self._stop.set()

    async def __aenter__(self) -> Self:
        self._not_started("async with")
        self._stack = stack = contextlib.AsyncExitStack()
        await stack.__aenter__()
        try:
            await self._start(stack)
        except BaseException as exc:
            await self._shutdown()
            await stack.__aexit__(type(exc), exc, exc.__traceback__)
            raise
        return self

    async def _start(self, stack: contextlib.AsyncExitStack) -> None:
        s = self.settings
        self.store = await self._open_store(stack)
        self.session = session = await stack.enter_async_context(Session(self.store, ttl_s=s.ttl_s))
        registry = await stack.enter_async_context(Registry(self.store, session=session))
        # With interceptors of the caller's, keel's runs first as an interceptor (so
        # theirs run inside its deadline and span); alone, it wraps the handlers once.
        interceptors = [self.interceptor, *self._interceptors] if self._interceptors else None
        self._grpc = server = grpc.aio.server(interceptors=interceptors, options=self._options)
        self.port = _listen(server, s.host, s.port)
        registrar = _Registrar(server, None if self._interceptors else self.interceptor)
        for add_to_server, servicer in self._adds:
            add_to_server(servicer, registrar)
        self.services = registrar.services
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        if self._reflection:
            names = [*self.services, _HEALTH, reflection.SERVICE_NAME]
            reflection.enable_server_reflection(names, server)
        for service in self.services:
            await self.health.set(service, _SERVING)
        try:
            async with asyncio.timeout(s.startup_timeout_s):
                await server.start()
                await self._wait_serving()
        except TimeoutError as exc:
            raise KeelError(
                f"grpc server {self.name!r}: its health check at {self.address} did not answer "
                f"SERVING within startup_timeout_s={s.startup_timeout_s:g}; check that the "
                "advertised address reaches this process"
            ) from exc
        if self.metrics_port is not None:
            await self._serve_metrics(stack, self.metrics_port)
        instance = Instance(
            service=self.name,
            address=s.advertised,
            port=self.port,
            id=s.instance_id,
            scheme="grpc",
            zone=s.zone,
            version=s.version,
            tags=s.tags,
            metadata=dict(s.metadata),
            weight=s.weight,
        )
        self.registration = await registry.register(instance)
        self.ready.set()
        log.info("grpc server %s serving at %s as %s", self.name, self.address, self.instance_id)

    async def _open_store(self, stack: contextlib.AsyncExitStack) -> Store:
        if isinstance(self._store_arg, Store):
            return self._store_arg
        url = self._store_arg if isinstance(self._store_arg, str) else default_url()
        return await stack.enter_async_context(keel.connect(url))

    async def _serve_metrics(self, stack: contextlib.AsyncExitStack, port: int) -> None:
        try:
            listener = await serve_metrics(self.settings.host, port, self._registry)
        except OSError as exc:
            raise ValidationError(
                f"cannot bind metrics_port {port} ({exc.strerror}): pick another or 0"
            ) from exc
        self.metrics_port = int(listener.sockets[0].getsockname()[1])

        async def close() -> None:
            listener.close()
            await listener.wait_closed()

        stack.push_async_callback(close)

    async def _wait_serving(self) -> None:
        """Call our own health check over a channel to the advertised address until SERVING."""
        request = health_pb2.HealthCheckRequest(service="")
        async with grpc.aio.insecure_channel(self.address) as channel:
            check = health_pb2_grpc.HealthStub(channel).Check
            while True:
                with contextlib.suppress(grpc.aio.AioRpcError):
                    if (await check(request, timeout=1.0)).status == _SERVING:
                        return
                await asyncio.sleep(0.05)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._shutdown()
        assert self._stack is not None
        await self._stack.__aexit__(exc_type, exc, tb)

    async def _shutdown(self) -> None:
        self.draining = True
        await self.health.enter_graceful_shutdown()
        if self.registration is not None:
            with contextlib.suppress(KeelError):
                await self.registration.set_status("DRAINING")
            await asyncio.sleep(self.settings.drain_delay_s)
            with contextlib.suppress(KeelError):
                await self.registration.deregister()
            log.info("grpc server %s deregistered; draining", self.name)
        if self._grpc is not None:
            await self._stop_server(self._grpc)

    async def _stop_server(self, server: grpc.aio.Server) -> None:
        """Stop accepting; let busy calls finish within ``grace_s``; then cancel the rest."""
        stopping = asyncio.ensure_future(server.stop(self.settings.grace_s))
        idle = asyncio.ensure_future(self.interceptor.wait_idle())
        forced = asyncio.ensure_future(self._force.wait())
        try:
            await asyncio.wait([stopping, idle, forced], return_when=asyncio.FIRST_COMPLETED)
        finally:
            idle.cancel()
            forced.cancel()
        # Only health watches (or nothing) are left, or a second signal came:
        # a second stop() without grace cancels whatever still runs.
        await server.stop(None)
        await stopping

    def __repr__(self) -> str:
        state = (
            "draining"
            if self.draining
            else "serving"
            if self.registration is not None
            else "starting"
            if self._grpc is not None
            else "new"
        )
        return f"<Server {self.name} {state} port={self.port} services={self.services}>"


def _check(settings: ServiceSettings) -> ServiceSettings:
    if settings.workers > 1:
        raise ValidationError(
            f"workers={settings.workers}: keel.grpc.Server serves from one process; run "
            "more instances instead (each registers itself; clients balance calls over them), "
            "see docs/grpc.md"
        )
    return settings


def _listen(server: grpc.aio.Server, host: str, port: int) -> int:
    """Add the insecure listener; the port it got."""
    try:
        bound = int(server.add_insecure_port(f"{_host(host)}:{port}"))
    except RuntimeError as exc:
        bound, reason = 0, str(exc)
    else:
        reason = "address in use or not local"
    if bound == 0:
        raise ValidationError(f"cannot bind {host}:{port} ({reason}): pick another port or port=0")
    return bound


def _host(address: str) -> str:
    return f"[{address}]" if ":" in address else address
