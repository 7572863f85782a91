"""Route plans: everything a request of a route needs, computed once per publish.

:func:`compile_state` turns a validated :class:`GatewayDocument` into a
:class:`State`: the :class:`~keel.gateway._match.Router` whose payloads are
:class:`Plan` objects holding the route's targets (one per weighted share),
header operations as byte tuples, the redirect or fixed response ready to
send, and the route's metric series. The app swaps the whole State on each
publish in one assignment, so a request runs start to end on one document.

The security objects (authenticator, CORS policy, limits) are built by the
gateway from the same document and handed in; this module only needs what
the Protocols below say of them.
"""

from __future__ import annotations

import random
import zlib
from bisect import bisect_right
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import quote

from keel.gateway._auth import Authenticator, Consumer
from keel.gateway._headers import relay_skip
from keel.gateway._match import Router
from keel.gateway._metrics import GatewayMetrics, RouteSeries
from keel.gateway._model import Forward, GatewayDocument, HeaderOps, Route
from keel.gateway._policy import AuthConfig, RouteLimits, TrustedProxies
from keel.gateway._proxy import Target

__all__ = [
    "FORWARD",
    "REDIRECT",
    "RESPOND",
    "Admission",
    "CorsPolicy",
    "Limiter",
    "Plan",
    "ScopeRoute",
    "State",
    "compile_state",
]

FORWARD, REDIRECT, RESPOND = 0, 1, 2
Headers = list[tuple[bytes, bytes]]


class Admission(Protocol):
    """A limiter's answer (security's ``_limits.Admission``)."""

    @property
    def allowed(self) -> bool: ...
    @property
    def retry_after_s(self) -> float: ...
    @property
    def reason(self) -> str: ...
    def release(self) -> None: ...


class Limiter(Protocol):
    """Rate and concurrency limits (security's ``_limits.Limits``)."""

    async def admit(
        self, route: str, limits: RouteLimits, consumer: Consumer | None, client: str
    ) -> Any: ...

    def try_admit(
        self, route: str, limits: RouteLimits, consumer: Consumer | None, client: str
    ) -> Any: ...


class CorsPolicy(Protocol):
    """The document's CORS policy (security's ``_cors.Cors``)."""

    def preflight(self, method: str, headers: Headers) -> tuple[int, Headers] | None: ...
    def response_headers(self, headers: Headers) -> Headers: ...


@dataclass(frozen=True, slots=True)
class ScopeRoute:
    """Put in ``scope["route"]`` so the service middleware labels metrics by route id."""

    path: str


@dataclass(slots=True, eq=False)
class Plan:
    """One route, precompiled (see the module docstring)."""

    id: str
    route: Route
    kind: int
    series: RouteSeries
    scope_route: ScopeRoute
    max_body: int
    auth: AuthConfig | None
    limits: RouteLimits | None
    cors: bool
    targets: tuple[Target, ...] = ()
    cumulative: tuple[int, ...] = ()
    overrides: tuple[
        tuple[tuple[tuple[bytes, bytes], ...], tuple[tuple[str, str], ...], Target], ...
    ] = ()
    sticky_header: bytes | None = None
    sticky_cookie: str | None = None
    path_mode: str = "keep"  # keep | strip | prefix | template
    prefix: bytes = b""
    rewrite: str = ""
    upstream: str = ""
    status: int = 200
    body: bytes = b""
    headers: Headers = field(default_factory=list)
    location: str = ""
    keep_query: bool = True
    req_remove: frozenset[bytes] = frozenset()
    req_set: tuple[tuple[bytes, bytes], ...] = ()
    req_add: tuple[tuple[bytes, bytes], ...] = ()
    resp_remove: frozenset[bytes] = frozenset()
    resp_set: tuple[tuple[bytes, bytes], ...] = ()
    resp_add: tuple[tuple[bytes, bytes], ...] = ()
    resp_ops: bool = False
    wrap: bool = True  # answers go through the app's responder (else the proxy tags them)
    direct: bool = False  # a plain forward the relay may serve (see _relay.py)
    relay_skip: frozenset[bytes] | None = None  # client headers the relay's head leaves out
    relay_tail: bytes = b""  # the route's set/add header lines, as the relay writes them
    req_drop: frozenset[bytes] = frozenset({b"x-request-id"})  # req_remove and the request id

    def pick(self, headers: Mapping[bytes, bytes] | None, raw: Headers) -> Target:
        """The target of one request: a header/cookie override, the sticky key, or a draw."""
        targets = self.targets
        if len(targets) == 1 and not self.overrides:
            return targets[0]
        if self.overrides:
            lookup = headers if headers is not None else _header_map(raw)
            for need_headers, need_cookies, target in self.overrides:
                if need_headers and all(lookup.get(k) == v for k, v in need_headers):
                    return target
                if need_cookies and _cookies_match(lookup.get(b"cookie"), need_cookies):
                    return target
        if len(targets) == 1:
            return targets[0]
        total = self.cumulative[-1]
        key = self._sticky(headers, raw)
        point = zlib.crc32(key) % total if key else random.randrange(total)
        return targets[bisect_right(self.cumulative, point)]

    def _sticky(self, headers: Mapping[bytes, bytes] | None, raw: Headers) -> bytes | None:
        if self.sticky_header is not None:
            lookup = headers if headers is not None else _header_map(raw)
            return lookup.get(self.sticky_header)
        if self.sticky_cookie is not None:
            lookup = headers if headers is not None else _header_map(raw)
            value = _cookie(lookup.get(b"cookie"), self.sticky_cookie)
            return value.encode() if value else None
        return None

    def upstream_path(self, raw_path: bytes, params: Mapping[str, str], rest: str) -> bytes:
        """The path sent upstream (without the query)."""
        mode = self.path_mode
        if mode == "keep":
            return raw_path
        if mode == "template":
            out = self.rewrite
            for name, value in params.items():
                out = out.replace("{" + name + "}", quote(value, safe="/"))
            return out.encode()
        tail = (
            raw_path[len(self.prefix) :]
            if raw_path.startswith(self.prefix)
            else quote(rest).encode()
        )
        if mode == "strip":
            return tail or b"/"
        if not tail:  # the prefix itself: exactly the rewrite
            return self.rewrite.encode()
        return self.rewrite.rstrip("/").encode() + tail


@dataclass(slots=True, eq=False)
class State:
    """A compiled document: what the app reads per request."""

    document: GatewayDocument
    version: int
    router: Router[Plan]
    trusted: TrustedProxies
    consumer_header: bytes
    forwarded: str = "x-forwarded"
    authenticator: Authenticator | None = None
    cors: CorsPolicy | None = None
    limits: Limiter | None = None

    def __repr__(self) -> str:
        return f"<State version={self.version} routes={len(self.router)}>"


def compile_state(
    document: GatewayDocument,
    version: int,
    *,
    metrics: GatewayMetrics,
    authenticator: Authenticator | None = None,
    cors: CorsPolicy | None = None,
    limits: Limiter | None = None,
) -> State:
    """Compile ``document`` (already validated) into a :class:`State`."""
    entries = [
        (route.id, route.match, route.priority, _plan(route, document, metrics))
        for route in document.routes
    ]
    return State(
        document=document,
        version=version,
        router=Router(entries),
        trusted=TrustedProxies.parse(document.trusted_proxies),
        consumer_header=document.consumer_header.encode("latin-1"),
        forwarded=document.forwarded_headers,
        authenticator=authenticator,
        cors=cors,
        limits=limits,
    )


def _plan(route: Route, document: GatewayDocument, metrics: GatewayMetrics) -> Plan:
    plan = Plan(
        id=route.id,
        route=route,
        kind=FORWARD if route.forward else REDIRECT if route.redirect else RESPOND,
        series=metrics.route(route.id),
        scope_route=ScopeRoute(route.id),
        max_body=route.max_body_bytes
        if route.max_body_bytes is not None
        else document.max_body_bytes,
        auth=route.auth,
        limits=route.limits,
        cors=route.cors,
    )
    plan.req_remove, plan.req_set, plan.req_add = _ops(route.request_headers)
    plan.req_drop = plan.req_remove | {b"x-request-id"} | _credentials(route.auth)
    plan.resp_remove, plan.resp_set, plan.resp_add = _ops(route.response_headers)
    plan.resp_ops = bool(route.response_headers)
    plan.wrap = plan.resp_ops or route.forward is None
    plan.direct = route.forward is not None and not plan.wrap and not route.cors
    plan.relay_skip = relay_skip(plan.req_drop, document.consumer_header.encode("latin-1"))
    plan.relay_tail = b"".join(k + b": " + v + b"\r\n" for k, v in (*plan.req_set, *plan.req_add))
    if route.forward is not None:
        _forward(plan, route, route.forward)
    elif route.redirect is not None:
        plan.status, plan.location = route.redirect.status, route.redirect.location
        plan.keep_query = route.redirect.keep_query
    elif route.respond is not None:
        r = route.respond
        plan.status, plan.body = r.status, r.body.encode()
        plan.headers = [(b"content-type", r.content_type.encode("latin-1"))]
        plan.headers += [(k.encode("latin-1"), v.encode("latin-1")) for k, v in r.headers.items()]
    return plan


def _forward(plan: Plan, route: Route, fwd: Forward) -> None:
    def target(version: str | None = None, labels: Mapping[str, str] | None = None) -> Target:
        return Target(
            route=route.id,
            service=fwd.service,
            url=fwd.url,
            version=version,
            labels=dict(labels or {}),
            timeout_s=fwd.timeout_s,
            retries=fwd.retries,
        )

    plan.upstream = fwd.service or fwd.url or ""
    if not fwd.split:
        plan.targets, plan.cumulative = (target(),), (1,)
    else:
        shares = [(s, target(s.version, s.labels)) for s in fwd.split]
        weighted = [(s.weight, t) for s, t in shares if s.weight > 0]
        plan.targets = tuple(t for _, t in weighted)
        plan.cumulative = tuple(_running([w for w, _ in weighted]))
        plan.overrides = tuple(
            (_pairs(s.when_header), tuple(s.when_cookie.items()), t)
            for s, t in shares
            if s.when_header or s.when_cookie
        )
    if fwd.sticky is not None:
        if fwd.sticky.startswith("cookie:"):
            plan.sticky_cookie = fwd.sticky.removeprefix("cookie:")
        else:
            plan.sticky_header = fwd.sticky.lower().encode("latin-1")
    if route.match.is_template and fwd.rewrite is not None:
        plan.path_mode, plan.rewrite = "template", fwd.rewrite
    elif fwd.strip_prefix or fwd.rewrite is not None:
        plan.path_mode = "strip" if fwd.strip_prefix else "prefix"
        plan.rewrite = fwd.rewrite or ""
        plan.prefix = route.match.path.rstrip("/").encode()


def _running(weights: Sequence[int]) -> list[int]:
    out, total = [], 0
    for weight in weights:
        total += weight
        out.append(total)
    return out


def _pairs(values: Mapping[str, str]) -> tuple[tuple[bytes, bytes], ...]:
    return tuple((k.encode("latin-1"), v.encode("latin-1")) for k, v in values.items())


def _ops(
    ops: HeaderOps,
) -> tuple[frozenset[bytes], tuple[tuple[bytes, bytes], ...], tuple[tuple[bytes, bytes], ...]]:
    remove = frozenset(n.encode("latin-1") for n in ops.remove) | frozenset(
        n.encode("latin-1") for n in ops.set
    )
    return remove, _pairs(ops.set), _pairs(ops.add)


def _header_map(raw: Headers) -> dict[bytes, bytes]:
    return dict(raw)


def _cookie(header: bytes | None, name: str) -> str | None:
    if not header:
        return None
    for part in header.decode("latin-1").split(";"):
        key, eq, value = part.strip().partition("=")
        if eq and key == name:
            return value
    return None


def _cookies_match(header: bytes | None, need: tuple[tuple[str, str], ...]) -> bool:
    return all(_cookie(header, name) == value for name, value in need)


def _credentials(auth: AuthConfig | None) -> frozenset[bytes]:
    """The API-key header a route consumes: not sent upstream unless the route says so.

    The upstream learns who called from the consumer header; the key itself is
    a secret of the client's that a compromised or logging upstream should
    never see. A bearer JWT stays (upstreams may read or verify it) unless the
    route's ``forward_token`` is false. A key sent as ``Authorization: Bearer``
    is known per request: see ``Consumer.hide_authorization``.
    """
    if auth is None:
        return frozenset()
    dropped = set()
    if auth.api_key and auth.api_key_header is not None and not auth.forward_api_key:
        dropped.add(auth.api_key_header.encode("latin-1"))
    if not auth.forward_token:
        dropped.add(b"authorization")
    return frozenset(dropped)
