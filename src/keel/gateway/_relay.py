"""The relay: plain forwards served from the HTTP protocol's callbacks, without an ASGI task.

Through the ASGI app a forwarded GET costs the gateway a task, a coroutine
chain (middleware, phases, proxy, exchange), a deadline scope and two ASGI
messages per request: with the relay off the gateway spends about 1.6 times
the CPU per request on ``bench/gateway.py``. The relay does the same work for the common
request (no body, a route with no CORS and no response header operations) as
callbacks: the server protocol hands it each parsed request (see
``_serving.py``), it matches the route, authenticates (JWT verifications are
cached by token), applies local rate limits, picks an instance, writes the
request head to an idle pooled connection and returns; the upstream
connection calls back when the response is whole (bodies up to 64 KiB) and
the relay writes status line, headers and body to the client in one write.

Anything else goes through the ASGI app exactly as before, decided before the
request is sent anywhere: a body, ``HEAD``/``OPTIONS``, an ``Upgrade``, an
incoming ``keel-deadline``, ``/healthz``-style probes, dot segments, no
route or a route the relay does not serve, refused credentials, limits kept
in Redis, a service not looked up yet, or tracing on. Once a request is
relayed its retries, breakers, balancer tickets, deadline (one timer for
all, ``_deadlines.py``), connect waits (a task, only when no idle connection
is at hand) and gateway answers (502/503/504 and 429, with the app's headers
in the app's order) follow the proxy's rules (``_proxy.py``,
``_exchange.py``); a response longer than 64 KiB or of unknown length is
streamed by the proxy's own :meth:`Exchange.respond` in a task. The request
itself is in ``_flight.py``.
"""

from __future__ import annotations

import asyncio
import math
import time
from typing import TYPE_CHECKING, Any

from opentelemetry import trace
from uvicorn.protocols.http.httptools_impl import RequestResponseCycle

from keel.gateway._asgi import sane_id
from keel.gateway._auth import AuthError
from keel.gateway._deadlines import Deadlines
from keel.gateway._flight import Flight
from keel.gateway._h1 import WriteBatch
from keel.gateway._headers import client_address
from keel.gateway._match import Hit, normal_host

if TYPE_CHECKING:
    from keel.gateway._app import GatewayApp
    from keel.gateway._plan import Plan, State

__all__ = ["Relay"]

_METHODS = frozenset({"GET", "DELETE"})
_MAX_ROUTES = 4096  # (method, Host, path) -> matched route, per served document
_PROBES = frozenset({"/healthz", "/readyz", "/metrics"})
# Request headers that send a request the ASGI way (framing, upgrades, a caller's deadline).
_ASGI_ONLY = frozenset(
    {b"content-length", b"transfer-encoding", b"upgrade", b"keel-deadline", b"expect"}
)


class Relay:
    """Serves plain forwards of a :class:`~keel.gateway._app.GatewayApp` without ASGI.

    Args:
        app: the app whose state, upstreams, metrics and access log are used.
        tracer_provider: the gateway's own provider (given: spans are always
            recorded, so every request goes through the app, which makes them).

    Attributes:
        relayed: requests served by the relay.
        passed: requests handed to the ASGI app.
    """

    def __init__(self, app: GatewayApp, *, tracer_provider: Any = None) -> None:
        self.app = app
        self.relayed = 0
        self.passed = 0
        self._always_tracing = tracer_provider is not None
        self._checked = -math.inf
        self._tracing = self._always_tracing
        self.batch: WriteBatch | None = None  # (both made at the first request: the loop is known)
        self.deadlines: Deadlines = Deadlines(None)
        self._routes_of: State | None = None
        self._routes: dict[tuple[str, bytes | None, str], Hit[Plan]] = {}

    def tracing(self) -> bool:
        """Whether spans are recorded (the global provider is looked up once a second)."""
        if self._always_tracing:
            return True
        now = time.monotonic()
        if now - self._checked > 1.0:
            self._checked = now
            provider = trace.get_tracer_provider()
            self._tracing = not isinstance(provider, trace.ProxyTracerProvider)
        return self._tracing

    def take(self, cycle: RequestResponseCycle, tasks: set[asyncio.Task[None]]) -> bool:
        """Serve the request of ``cycle`` if the relay can; False: the ASGI app must.

        Args:
            cycle: uvicorn's request/response cycle (scope parsed, body pending).
            tasks: the server's task set (a streamed response's task joins it).
        """
        flight = self._admit(cycle, tasks)
        if flight is None:
            self.passed += 1
            return False
        self.relayed += 1
        admission = flight.admission
        if admission is not None and not admission.allowed:
            flight.refuse(admission)
        else:
            flight.start()
        return True

    def _admit(self, cycle: RequestResponseCycle, tasks: set[asyncio.Task[None]]) -> Flight | None:
        app = self.app
        state = app.state
        scope: Any = cycle.scope
        method: str = scope["method"]
        path: str = scope["path"]
        if state is None or method not in _METHODS or path in _PROBES or "/." in path:
            return None
        headers: list[tuple[bytes, bytes]] = scope["headers"]
        host = rid = None
        for name, value in headers:
            if name in _ASGI_ONLY:
                return None
            if name == b"host":
                host = value
            elif name == b"x-request-id":
                rid = value
        if self.tracing():
            return None
        found = self._match(state, method, host, path, headers)
        if found is None:
            return None
        plan: Plan = found.rule.payload
        if not plan.direct:
            return None
        target = plan.pick(None, headers)
        candidates = app.upstreams.picker.cached(target)
        if not candidates:
            return None
        consumer = None
        if plan.auth is not None and state.authenticator is not None:
            try:
                consumer = state.authenticator.authenticate(plan.auth, headers)
            except AuthError:
                return None  # the app answers it (and counts it)
        peer = scope["client"]
        client = peer[0] if peer else ""
        if state.trusted and client in state.trusted:
            client = client_address(scope, state.trusted)
        admission = None
        if plan.limits is not None and state.limits is not None:
            admission = state.limits.try_admit(plan.id, plan.limits, consumer, client)
            if admission is None:
                return None  # kept in Redis: the app waits for it
        request_id = rid.decode("ascii") if rid is not None and sane_id(rid) else app.ids.new()
        if self.batch is None:  # the first request: the loop is known now
            loop = asyncio.get_running_loop()
            self.batch = WriteBatch(loop)
            self.deadlines = Deadlines(loop)
        flight = Flight(
            self,
            cycle,
            tasks,
            state,
            plan,
            found,
            target,
            candidates,
            request_id,
            client,
            consumer,
            host,
        )
        flight.admission = admission
        return flight

    def _match(
        self,
        state: State,
        method: str,
        host: bytes | None,
        path: str,
        headers: list[tuple[bytes, bytes]],
    ) -> Hit[Plan] | None:
        """The route of a request; remembered per (method, Host, path) for the state served."""
        router = state.router
        if router.uses_headers:
            found = router.match(method, normal_host(host), path, dict(headers))
            return found if isinstance(found, Hit) else None
        if self._routes_of is not state:
            self._routes_of, self._routes = state, {}
        key = (method, host, path)
        hit = self._routes.get(key)
        if hit is None:
            found = router.match(method, normal_host(host), path, None)
            if not isinstance(found, Hit):
                return None
            if len(self._routes) >= _MAX_ROUTES:  # paths with ids in them: bounded
                self._routes.clear()
            hit = self._routes[key] = found
        return hit

    def __repr__(self) -> str:
        return f"<Relay relayed={self.relayed} passed={self.passed}>"
