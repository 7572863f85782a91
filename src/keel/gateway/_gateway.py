"""Gateway: the ASGI app served by a keel Service, its routes followed live from the config center.

``await Gateway(store).serve()`` (what ``keel gateway`` runs) or ``async with
Gateway(store, port=0) as gateway`` (tests, embedding):

1. opens the store (when given a URL), starts :class:`~keel.registry.Discovery`
   for the upstreams, the API key table and the JWT key sources;
2. binds the route document with ``ConfigCenter.bind(config, GatewayDocument)``:
   a publish that does not validate is refused there and the last good
   document keeps serving; a valid one is compiled (router, targets,
   authenticator, CORS, limits) and swapped in with one assignment, so it
   serves from the next request, with no restart and no connection dropped.
   A document that validates but cannot be compiled (a key file that cannot
   be read) is refused the same way;
3. runs the app in a :class:`~keel.service.Service`: registered as ``name``
   like any service, ``/healthz`` ``/readyz`` ``/metrics``, graceful drain on
   SIGTERM.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
from pathlib import Path
from types import TracebackType
from typing import Self

from opentelemetry import trace
from prometheus_client import REGISTRY, CollectorRegistry

import keel
from keel.config import ConfigCenter, LiveConfig, Source
from keel.errors import KeelError
from keel.gateway._apikeys import ApiKeys
from keel.gateway._app import GatewayApp
from keel.gateway._auth import Authenticator
from keel.gateway._cors import Cors
from keel.gateway._jwt import JwtKeys
from keel.gateway._limits import Limits
from keel.gateway._logs import AccessLog
from keel.gateway._metrics import gateway_metrics
from keel.gateway._model import GatewayDocument, Route
from keel.gateway._plan import Limiter, State, compile_state
from keel.gateway._proxy import Upstreams
from keel.gateway._relay import Relay
from keel.gateway._serving import GatewayHttpProtocol, relaying_protocol
from keel.gateway._settings import UpstreamSettings
from keel.observe import HttpMetrics
from keel.registry import Discovery
from keel.service import Service, ServiceSettings
from keel.store import Store, default_url

__all__ = ["Gateway"]

log = logging.getLogger("keel.gateway")


class Gateway:
    """An API gateway instance (see the module docstring).

    Args:
        store: a Store, a store URL, or None for ``KEEL_STORE`` / the default.
        config: the config-center name of the route document.
        host: address to bind (127.0.0.1 unless told otherwise).
        port: port to bind (None: the settings' or ``KEEL_SERVICE_PORT``; 0: a free one).
        redis_url: Redis for shared rate limits (overrides the document's ``redis_url``).
        name: the service name the gateway registers as.
        settings: the service runtime's settings (drain, grace, version...).
        upstream_settings: pool, breaker, retry budget of the upstream client.
        access_log: write one access log line per request (or where and how:
            an :class:`~keel.gateway._logs.AccessLog`).
        registry: the Prometheus registry for the gateway's series and ``/metrics``
            (default: the process-wide one).
        tracer_provider: where server spans go (default: the global provider).
        snapshot_dir: where the last good document is kept for cold starts.
        relay: serve plain forwards straight from the HTTP protocol (``_relay.py``);
            False sends every request through the ASGI app (same answers, more CPU).
    """

    def __init__(
        self,
        store: Store | str | None = None,
        *,
        config: str = "gateway.yaml",
        host: str = "127.0.0.1",
        port: int | None = None,
        redis_url: str | None = None,
        name: str = "gateway",
        settings: ServiceSettings | None = None,
        upstream_settings: UpstreamSettings | None = None,
        access_log: bool | AccessLog = True,
        registry: CollectorRegistry | None = None,
        tracer_provider: trace.TracerProvider | None = None,
        snapshot_dir: str | os.PathLike[str] | None = None,
        relay: bool = True,
    ) -> None:
        self.name = name
        self.config_name = config
        self.redis_url = redis_url
        self._store_arg = store
        self._host, self._port = host, port
        self._settings = settings
        self._upstream_settings = upstream_settings
        self._registry = registry
        self._tracer_provider = tracer_provider
        self._snapshot_dir = Path(snapshot_dir) if snapshot_dir is not None else None
        self.metrics = gateway_metrics(registry if registry is not None else REGISTRY)
        self.access_log = (
            access_log if isinstance(access_log, AccessLog) else AccessLog(enabled=access_log)
        )
        self.store: Store | None = None
        self.discovery: Discovery | None = None
        self.upstreams: Upstreams | None = None
        self.app: GatewayApp | None = None
        self.relay: Relay | None = None
        """Serves plain forwards without the ASGI layer (None: ``relay=False``)."""
        self._relay = relay
        self.live: LiveConfig[GatewayDocument] | None = None
        self.service: Service | None = None
        self.refused = 0
        """Publishes refused so far (invalid, or valid but not compilable)."""
        self._keys: ApiKeys | None = None
        self._jwt: JwtKeys | None = None
        self._limits: Limits | None = None
        self._stack: contextlib.AsyncExitStack | None = None
        self._tasks: asyncio.TaskGroup | None = None
        self._own: set[asyncio.Task[None]] = set()

    # -- what is running ----------------------------------------------------------

    @property
    def state(self) -> State | None:
        """The compiled document being served."""
        return self.app.state if self.app is not None else None

    @property
    def version(self) -> int:
        """The config-center version of the document being served (0: none published)."""
        state = self.state
        return state.version if state is not None else 0

    @property
    def routes(self) -> list[Route]:
        """The routes being served, in document order."""
        state = self.state
        return list(state.document.routes) if state is not None else []

    @property
    def port(self) -> int:
        """The bound port (once started)."""
        return self.service.port if self.service is not None else 0

    @property
    def url(self) -> str:
        """``http://address:port`` (once started)."""
        return self.service.url if self.service is not None else ""

    # -- lifetime -------------------------------------------------------------------

    async def serve(self) -> None:
        """Start, serve until SIGTERM/SIGINT, drain, return (what ``keel gateway`` runs)."""
        async with contextlib.AsyncExitStack() as stack:
            service = await self._open(stack)
            # Everything loaded so far lives as long as the process: keep it out of
            # the collector's passes (a gen-2 pass over the imported libraries per
            # few thousand requests otherwise costs ~10% of the gateway's CPU).
            gc.freeze()
            await service.serve()

    def stop(self) -> None:
        """Ask :meth:`serve` to drain and return (what SIGTERM does)."""
        if self.service is not None:
            self.service.stop()

    async def __aenter__(self) -> Self:
        self._stack = stack = contextlib.AsyncExitStack()
        await stack.__aenter__()
        try:
            service = await self._open(stack)
            await stack.enter_async_context(service)
        except BaseException as exc:
            await stack.__aexit__(type(exc), exc, exc.__traceback__)
            raise
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        assert self._stack is not None
        await self._stack.__aexit__(et, e, tb)

    async def _open(self, stack: contextlib.AsyncExitStack) -> Service:
        """Open everything but the server; return the Service that will run the app."""
        store = self._store_arg
        if not isinstance(store, Store):
            store = await stack.enter_async_context(keel.connect(store or default_url()))
        self.store = store
        stack.callback(self.access_log.flush)
        self.discovery = await stack.enter_async_context(Discovery(store))
        self._tasks = tasks = await stack.enter_async_context(asyncio.TaskGroup())
        stack.callback(self._cancel_tasks)
        if self.access_log.stream is not None:  # lines reach the stream within a second
            self._own.add(tasks.create_task(self._flush_access_log()))
        self._keys = await stack.enter_async_context(ApiKeys(store))
        self._jwt = await stack.enter_async_context(JwtKeys(store, snapshot_dir=self._snapshot_dir))
        self.upstreams = await stack.enter_async_context(
            Upstreams(self.discovery, metrics=self.metrics, settings=self._upstream_settings)
        )
        self.app = GatewayApp(self.upstreams, metrics=self.metrics, access_log=self.access_log)
        center = ConfigCenter(store)
        live: LiveConfig[GatewayDocument] = await stack.enter_async_context(
            center.bind(self.config_name, GatewayDocument, snapshot_dir=self._snapshot_dir)
        )
        self.live = live
        self._limits = await stack.enter_async_context(
            Limits(redis_url=self.redis_url or live.value.redis_url)
        )
        self._install(live.value, live.source.version, first=True)
        live.on_change(lambda _old, new: self._install(new, live.source.version))
        live.on_invalid(self._invalid)
        await self._jwt.ready()
        self.service = Service(
            self.name,
            self.app,
            store=store,
            host=self._host,
            port=self._port,
            settings=self._settings,
            checks={"routes": lambda: self.state is not None},
            metrics=HttpMetrics(self._registry) if self._registry is not None else None,
            registry=self._registry,
            tracer_provider=self._tracer_provider,
        )
        # The gateway believes forwarded headers from its trusted_proxies only (security's
        # client_address), never because uvicorn trusts 127.0.0.1.
        self.service.proxy_headers = False
        # The app reads keel-deadline itself (the proxy's budget) and keeps its own
        # per-route series: the runtime's per-request deadline and RED metrics layer
        # would only repeat that work (probes, drain and spans stay).
        self.service.app.observe_http = False
        # a response's writes in one send; plain forwards served without the ASGI layer
        self.relay = Relay(self.app, tracer_provider=self._tracer_provider) if self._relay else None
        self.service.http_protocol = (
            relaying_protocol(self.relay) if self.relay is not None else GatewayHttpProtocol
        )
        return self.service

    # -- reload ---------------------------------------------------------------------

    def _install(self, document: GatewayDocument, version: int, *, first: bool = False) -> None:
        """Compile ``document`` and serve it; on failure keep what is served (or raise at start)."""
        assert self.app is not None and self._jwt is not None
        try:
            state = self._compile(document, version)
        except Exception as exc:
            if first:
                raise
            self.refused += 1
            log.error(
                "gateway: %s version %s cannot be compiled, keeping version %s: %s",
                self.config_name,
                version,
                self.version,
                str(exc).replace("\n", "; "),
            )
            return
        self.app.install(state)
        self._warm(document)
        log.info(
            "gateway: serving %s version %s (%d routes)",
            self.config_name,
            version,
            len(state.router),
        )

    def _compile(self, document: GatewayDocument, version: int) -> State:
        assert self._jwt is not None
        needs_keys = any(r.auth is not None and r.auth.api_key for r in document.routes)
        authenticator = Authenticator(
            self._jwt.verifiers(document.jwt), self._keys if needs_keys else None
        )
        return compile_state(
            document,
            version,
            metrics=self.metrics,
            authenticator=authenticator,
            cors=Cors(document.cors) if document.cors is not None else None,
            limits=self._limits_for(document),
        )

    def _limits_for(self, document: GatewayDocument) -> Limiter | None:
        limits = self._limits
        if limits is not None and self.redis_url is None and document.redis_url != limits.redis_url:
            log.warning(
                "gateway: redis_url changed in %s; shared limits keep using %s until a restart",
                self.config_name,
                limits.redis_url,
            )
        return limits

    def _warm(self, document: GatewayDocument) -> None:
        """Start following the services a new document forwards to, before requests need them."""
        if self._tasks is None or self.discovery is None:
            return
        for route in document.routes:
            service = route.forward.service if route.forward is not None else None
            if service is not None and self.discovery.cached(service) is None:
                task = self._tasks.create_task(self._warm_one(service))
                self._own.add(task)
                task.add_done_callback(self._own.discard)

    async def _warm_one(self, service: str) -> None:
        assert self.discovery is not None
        try:
            await self.discovery.instances(service)
        except KeelError as exc:  # the first request to it will try again
            log.warning("gateway: cannot look up service %s yet: %s", service, exc)

    def _cancel_tasks(self) -> None:
        for task in list(self._own):
            task.cancel()

    async def _flush_access_log(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            self.access_log.flush()

    def _invalid(self, error: Exception, source: Source) -> None:
        self.refused += 1

    def __repr__(self) -> str:
        state = "serving" if self.service is not None and self.service.ready.is_set() else "new"
        return f"<Gateway {self.name} {state} url={self.url!r} version={self.version}>"
