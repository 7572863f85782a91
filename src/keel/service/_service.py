"""Service: run an ASGI app on a real server, register it when ready, drain on SIGTERM.

The order of a clean shutdown is the point of this module. On SIGTERM or
SIGINT (or :meth:`Service.stop`):

1. ``/readyz`` fails and the instance is marked ``DRAINING``: discovery drops
   draining instances, so clients stop picking it while it still serves;
2. after ``drain_delay_s`` (watch propagation to the clients' caches) the
   instance is deregistered, *then* the listener closes;
3. in-flight requests run on for up to ``grace_s`` (idle keep-alive
   connections are closed at once, busy ones after their response);
4. the app's lifespan shutdown runs, the session's lease is revoked, the
   store is closed if the service opened it; ``serve()`` returns (exit 0).

The server is uvicorn with uvloop and httptools: it is the one that runs
inside our event loop (so registration, config and the app share one loop),
accepts a pre-bound socket (port 0 is known before startup) and drains
gracefully. granian measured faster on hello-world, but runs its Rust workers
outside the asyncio loop and offers no drain step between "deregistered" and
"stop accepting"; see docs/services.md for the numbers.

With ``workers=N`` (N > 1) the same order holds, but N worker processes serve
the port (``SO_REUSEPORT``) and this process only supervises: see
:mod:`keel.service._workers`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import sys
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import Any, Self

import httpx
from opentelemetry import trace
from prometheus_client import REGISTRY, CollectorRegistry

import keel
from keel._signals import on_stop_signal
from keel.config import ConfigCenter, LiveConfig
from keel.coord import Session
from keel.errors import KeelError, StoreClosedError, ValidationError
from keel.observe import HttpMetrics, http_metrics
from keel.registry import Instance, Registration, Registry
from keel.service._asgi import ASGIApp, KeelMiddleware, Probe
from keel.service._server import Server, bind, import_app, server_config, split_app
from keel.service._settings import ServiceSettings
from keel.service._workers import WorkerPool, WorkerSpec
from keel.store import Store, default_url

__all__ = ["Service"]

log = logging.getLogger("keel.service")


class Service:
    """One instance of a service: ``await Service("orders", app).serve()``.

    ``async with Service(...) as service`` starts it (registered and ready on
    entry) and shuts it down cleanly on exit, for tests and embedding.

    Args:
        name: the service name clients resolve (``http://<name>/...``).
        app: any ASGI application, or its import string ``"module:attribute"``
            (required with ``workers`` > 1: each worker process imports it).
        store: a Store, a store URL, or None for ``KEEL_STORE`` / the default.
        port: port to bind (0: a free one); overrides settings and environment.
        host: address to bind; overrides settings and environment.
        settings: the rest (default: :meth:`ServiceSettings.from_env`).
        workers: processes serving the port (default: ``settings.workers``, 1);
            more than one runs them as children of this one (docs/services.md).
        checks: named readiness checks (sync or async callables, truthy = ready).
        config: a config center name to bind (``orders.yaml``); the live value
            is ``service.config.value``, hot-reloaded.
        config_model: the model the config validates against (pydantic, dataclass, dict).
        metrics: HTTP series (default: the process-wide ones).
        registry: the Prometheus registry ``/metrics`` shows (default: the global one).
        tracer_provider: where server spans go (default: the global provider).

    Raises:
        ValidationError: a bad name, app or setting, or ``checks``/``config``
            with ``workers`` > 1 (they would live in the wrong process).
    """

    def __init__(
        self,
        name: str,
        app: ASGIApp | str,
        *,
        store: Store | str | None = None,
        port: int | None = None,
        host: str | None = None,
        settings: ServiceSettings | None = None,
        workers: int | None = None,
        checks: Mapping[str, Callable[[], Any]] | None = None,
        config: str | None = None,
        config_model: Any = dict,
        metrics: HttpMetrics | None = None,
        registry: CollectorRegistry | None = None,
        tracer_provider: trace.TracerProvider | None = None,
    ) -> None:
        Instance(service=name, address="127.0.0.1", port=1)  # validates the name
        self.name = name
        self.settings = (settings or ServiceSettings.from_env()).with_changes(
            port=port, host=host, workers=workers
        )
        self._app_spec = _check_app(app, self.settings.workers, checks, config)
        if isinstance(app, str) and self.settings.workers == 1:
            app = import_app(app)
        self.probe = Probe()
        self.probe.checks.update(checks or {})
        self.metrics = metrics if metrics is not None else http_metrics()
        self.app = KeelMiddleware(
            app,  # type: ignore[arg-type]  # a str only with workers > 1, never served here
            service=name,
            probe=self.probe,
            metrics=self.metrics,
            registry=registry if registry is not None else REGISTRY,
            tracer_provider=tracer_provider,
        )
        self._store_arg = store
        self._config_name, self._config_model = config, config_model
        self.store: Store | None = None
        self.session: Session | None = None
        """The process session the instance is registered on (set once started).

        Share it: locks, elections and registrations taken on it go with the
        instance when it stops or its session is lost.
        """
        self.config: LiveConfig[Any] | None = None
        self.registration: Registration | None = None
        self.port = 0
        self._server: Server | None = None
        self._pool: WorkerPool | None = None
        self._failure: KeelError | None = None
        self._stack: contextlib.AsyncExitStack | None = None
        self._tasks: asyncio.TaskGroup | None = None
        self._serving: asyncio.Task[None] | None = None
        self._watchers: list[asyncio.Task[None]] = []
        self._stop = asyncio.Event()
        self.ready = asyncio.Event()
        """Set once the instance is registered (serving and ready)."""
        self.proxy_headers = True
        """Let uvicorn take the client address from ``X-Forwarded-For`` sent by 127.0.0.1
        (``FORWARDED_ALLOW_IPS``); an edge service that decides itself turns it off."""
        self.http_protocol: type[asyncio.Protocol] | str = "httptools"
        """uvicorn's HTTP protocol for a single-process service (a subclass of its
        httptools protocol may be given, as the gateway does)."""

    @property
    def url(self) -> str:
        """``http://advertised-address:port`` once started."""
        return f"http://{_host(self.settings.advertised)}:{self.port}"

    @property
    def instance_id(self) -> str:
        """The registered instance id (known once started)."""
        return self.registration.instance.id if self.registration else self.settings.instance_id

    def stop(self) -> None:
        """Ask :meth:`serve` to shut down (what SIGTERM does)."""
        self._stop.set()

    async def serve(self) -> None:
        """Start, serve until SIGTERM/SIGINT or :meth:`stop`, then drain and return.

        A second signal while draining stops waiting for in-flight requests.

        Raises:
            KeelError: startup failed (store unreachable, app startup failed,
                ``/readyz`` never passed within ``startup_timeout_s``).
        """
        with on_stop_signal(self._on_signal):
            async with self:
                await self._stop.wait()
        if self._failure is not None:
            raise self._failure

    def _on_signal(self, _signal: object = None) -> None:
        if self._stop.is_set():  # second signal: stop waiting for in-flight requests
            if self._server is not None:
                self._server.force_exit = True
            if self._pool is not None:
                self._pool.broadcast("force")
        self._stop.set()

    async def __aenter__(self) -> Self:
        self._stack = stack = contextlib.AsyncExitStack()
        await stack.__aenter__()
        try:
            await self._start(stack)
        except BaseException as exc:
            await self._shutdown()
            try:
                await stack.__aexit__(type(exc), exc, exc.__traceback__)
            except BaseExceptionGroup as group:  # the task group wraps what it was given
                if group.exceptions != (exc,):
                    raise
            raise
        return self

    async def _start(self, stack: contextlib.AsyncExitStack) -> None:
        s = self.settings
        self.store = await self._open_store(stack)
        self.session = session = await stack.enter_async_context(Session(self.store, ttl_s=s.ttl_s))
        self.probe.session_ok = lambda: not session.lost.is_set()
        registry = await stack.enter_async_context(Registry(self.store, session=session))
        if self._config_name is not None:
            center = ConfigCenter(self.store)
            self.config = await stack.enter_async_context(
                center.bind(self._config_name, self._config_model, session=session)
            )
        sock = bind(s.host, s.port, reuse_port=s.workers > 1)
        self.port = sock.getsockname()[1]
        if s.workers > 1:
            # Bound, never listening: it holds the port (0 picks it) and gets no connections.
            stack.enter_context(sock)
        self._tasks = await stack.enter_async_context(asyncio.TaskGroup())
        async with asyncio.timeout(s.startup_timeout_s):
            if s.workers > 1:
                await self._start_workers(stack, session)
            else:
                await self._start_server(sock)
        instance = Instance(
            service=self.name,
            address=s.advertised,
            port=self.port,
            id=s.instance_id,
            zone=s.zone,
            version=s.version,
            tags=s.tags,
            metadata=dict(s.metadata),
            weight=s.weight,
        )
        self.registration = await registry.register(instance)
        self.ready.set()
        log.info("service %s ready at %s as %s", self.name, self.url, self.instance_id)

    async def _open_store(self, stack: contextlib.AsyncExitStack) -> Store:
        if isinstance(self._store_arg, Store):
            return self._store_arg
        url = self._store_arg if isinstance(self._store_arg, str) else default_url()
        return await stack.enter_async_context(keel.connect(url))

    async def _start_server(self, sock: socket.socket) -> None:
        """Serve the app here, on this loop; ready once our own ``/readyz`` passes."""
        s = self.settings
        config = server_config(
            self.app,
            grace_s=s.grace_s,
            log_level=s.log_level,
            proxy_headers=self.proxy_headers,
            http=self.http_protocol,
        )
        self._server = Server(config)
        assert self._tasks is not None
        self._serving = self._tasks.create_task(self._server.serve(sockets=[sock]))
        await self._wait_started()
        self.probe.started = True
        await self._wait_ready()

    async def _start_workers(self, stack: contextlib.AsyncExitStack, session: Session) -> None:
        """Start the worker processes on one ``SO_REUSEPORT`` port; ready once all are."""
        s = self.settings
        self._pool = pool = WorkerPool(
            WorkerSpec(
                app=self._app_spec,
                service=self.name,
                host=s.host,
                port=self.port,
                grace_s=s.grace_s,
                log_level=s.log_level,
                sys_path=tuple(sys.path),
            ),
            s.workers,
            registry=self.app.registry,
        )
        stack.push_async_callback(pool.close)
        await pool.start()
        self.probe.started = True
        assert self._tasks is not None
        self._watchers = [
            self._tasks.create_task(self._watch_workers(pool)),
            self._tasks.create_task(self._relay_loss(session, pool)),
        ]

    async def _watch_workers(self, pool: WorkerPool) -> None:
        """A worker that exits on its own ends the instance (the process manager restarts it)."""
        index, code = await pool.first_exit()
        if not self.probe.draining:
            log.error("service %s: worker %d exited with %d; stopping", self.name, index, code)
            self._failure = KeelError(f"service {self.name!r}: worker {index} exited with {code}")
            self._stop.set()

    async def _relay_loss(self, session: Session, pool: WorkerPool) -> None:
        await session.lost.wait()
        pool.broadcast("session-lost")

    async def _wait_started(self) -> None:
        assert self._server is not None and self._serving is not None
        started = asyncio.ensure_future(self._server.started_event.wait())
        await asyncio.wait([started, self._serving], return_when=asyncio.FIRST_COMPLETED)
        if not started.done():
            started.cancel()
            raise StoreClosedError(f"service {self.name!r}: the app's startup failed (see log)")

    async def _wait_ready(self) -> None:
        """Poll our own ``/readyz`` over the socket until it passes (checks the listener too)."""
        url = f"http://{_host(self.settings.advertised)}:{self.port}/readyz"
        async with httpx.AsyncClient(timeout=2.0, trust_env=False) as client:
            while True:
                with contextlib.suppress(httpx.HTTPError):
                    if (await client.get(url)).status_code == 200:
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
        self.probe.draining = True
        if self._pool is not None:
            self._pool.broadcast("draining")
        if self.registration is not None:
            with contextlib.suppress(KeelError):
                await self.registration.set_status("DRAINING")
            await asyncio.sleep(self.settings.drain_delay_s)
            with contextlib.suppress(KeelError):
                await self.registration.deregister()
            log.info("service %s deregistered; draining", self.name)
        if self._server is not None:
            self._server.should_exit = True
        if self._serving is not None:
            await asyncio.wait([self._serving])
        if self._pool is not None:
            await self._pool.stop(self.settings.grace_s + 5.0)
        for watcher in self._watchers:
            watcher.cancel()

    def __repr__(self) -> str:
        state = (
            "draining"
            if self.probe.draining
            else "serving"
            if self.registration is not None
            else "starting"
            if self._serving is not None
            else "new"
        )
        return f"<Service {self.name} {state} port={self.port} id={self.instance_id!r}>"


def _host(address: str) -> str:
    return f"[{address}]" if ":" in address else address


def _check_app(app: ASGIApp | str, workers: int, checks: object, config: str | None) -> str:
    """The app's import string ("" when given an object); refuses what workers cannot run."""
    if isinstance(app, str):
        split_app(app)  # the form now; each worker imports it
        spec = app
    elif callable(app):
        spec = ""
    else:
        raise ValidationError(f"app {app!r} is not an ASGI callable: pass app=, not app()")
    if workers > 1:
        if not spec:
            raise ValidationError(
                f"workers={workers} needs the app as an import string 'module:attribute' "
                "(each worker process imports it), not an object"
            )
        if checks or config is not None:
            raise ValidationError(
                f"workers={workers}: checks= and config= would run in the supervisor, not "
                "beside the app; bind the config and answer readiness in the app instead"
            )
        if not hasattr(socket, "SO_REUSEPORT"):
            raise ValidationError(f"workers={workers} needs SO_REUSEPORT (Linux, BSD, macOS)")
    return spec
