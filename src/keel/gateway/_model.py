"""The gateway's route document (``gateway.yaml``): pydantic models, validated on publish.

A :class:`GatewayDocument` is what the config center holds: routes, each with
a match (hosts, path prefix or template, methods, headers), exactly one action
(``forward``, ``redirect`` or ``respond``), header operations, and the
security and limit settings of :mod:`keel.gateway._policy`. Everything is
checked here once per publish; the request path reads only what
:mod:`keel.gateway._match` compiles from it, never these models.

Errors name the route and the field: ``route 'users': forward.timeout_s:
Input should be greater than 0``, because a 200-line document with
``routes.17.forward.timeout_s`` in the error is hard to fix.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)
from pydantic import ValidationError as PydanticValidationError
from pydantic_core import PydanticCustomError

from keel.config import Format, guess_format, parse
from keel.errors import ValidationError
from keel.gateway._policy import (
    AuthConfig,
    CorsConfig,
    HeaderName,
    JwtConfig,
    RouteLimits,
    TrustedProxyList,
)

__all__ = [
    "DEFAULT_MAX_BODY_BYTES",
    "Forward",
    "GatewayDocument",
    "HeaderOps",
    "Match",
    "Redirect",
    "Respond",
    "Route",
    "Split",
    "parse_document",
]

DEFAULT_MAX_BODY_BYTES = 10 * 1024 * 1024
"""Largest request body a route accepts unless it says otherwise (10 MiB)."""

_FROZEN = ConfigDict(extra="forbid", frozen=True)
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
_LABEL = r"[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?"
_HOST = re.compile(rf"^(\*\.)?{_LABEL}(\.{_LABEL})*$")
_METHOD = re.compile(r"^[A-Z]{1,20}$")
_SEGMENT_PARAM = re.compile(r"^\{([A-Za-z_][A-Za-z0-9_]*)(\*?)\}$")
_BAD_VALUE = re.compile(r"[\r\n\x00]")


def _header_value(value: str) -> str:
    if _BAD_VALUE.search(value):
        raise ValueError(f"header value {value!r} holds a line break or NUL")
    return value


HeaderValue = Annotated[str, AfterValidator(_header_value)]


def check_path(path: str) -> str:
    """Check a match path: a prefix (``/api/``) or a template (``/users/{id}``, ``/f/{p*}``)."""
    if not path.startswith("/"):
        raise ValueError(f"path {path!r} must start with '/'")
    if "?" in path or "#" in path or "//" in path:
        raise ValueError(f"path {path!r} must not hold '?', '#' or '//'")
    if "{" not in path and "}" not in path:
        return path
    segments = path.strip("/").split("/")
    names: list[str] = []
    for i, segment in enumerate(segments):
        if "{" not in segment and "}" not in segment:
            continue
        found = _SEGMENT_PARAM.match(segment)
        if found is None:
            raise ValueError(f"path {path!r}: a parameter is a whole segment, like '{{id}}'")
        if found.group(2) and i != len(segments) - 1:
            raise ValueError(f"path {path!r}: only the last segment may capture the rest")
        if found.group(1) in names:
            raise ValueError(f"path {path!r}: parameter {found.group(1)!r} appears twice")
        names.append(found.group(1))
    return path


def path_params(path: str) -> list[str]:
    """The parameter names of a template path (empty for a prefix)."""
    return [m.group(1) for s in path.split("/") if (m := _SEGMENT_PARAM.match(s))]


class Match(BaseModel):
    """What a request must look like for a route to take it (every given part must match).

    Attributes:
        hosts: ``api.example.com`` or ``*.example.com`` (any one; empty: any host).
            Compared without the port, case-insensitively.
        path: a prefix (``/api/`` matches ``/api`` and ``/api/...``, segment-wise)
            or a template whose ``{name}`` segments match one segment each and a
            final ``{name*}`` the rest (``/users/{id}``, ``/files/{path*}``).
        methods: upper-case methods (empty: any).
        headers: header name to exact value, or ``"*"`` for present with any value.
    """

    model_config = _FROZEN

    hosts: list[str] = Field(default_factory=list)
    path: str = "/"
    methods: list[str] = Field(default_factory=list)
    headers: dict[HeaderName, str] = Field(default_factory=dict)

    @field_validator("hosts")
    @classmethod
    def _hosts(cls, value: list[str]) -> list[str]:
        for host in value:
            if not _HOST.match(host):
                raise ValueError(
                    f"host {host!r} must be a name like api.example.com or *.example.com"
                )
        return [host.lower() for host in value]

    @field_validator("path")
    @classmethod
    def _path(cls, value: str) -> str:
        return check_path(value)

    @field_validator("methods")
    @classmethod
    def _methods(cls, value: list[str]) -> list[str]:
        for method in value:
            if not _METHOD.match(method):
                raise ValueError(f"method {method!r} must be upper case, like GET")
        return list(dict.fromkeys(value))

    @property
    def is_template(self) -> bool:
        """Whether ``path`` is a template (has ``{param}`` segments)."""
        return "{" in self.path


class Split(BaseModel):
    """One share of a weighted split between versions of the target service.

    Attributes:
        weight: relative share (0 sends traffic here only through ``when_*``).
        version: only instances registered with this version.
        labels: only instances whose metadata holds these pairs.
        when_header: requests with these header values go here, whatever the weights.
        when_cookie: requests with these cookie values go here, whatever the weights.
    """

    model_config = _FROZEN

    weight: int = Field(ge=0, le=10_000)
    version: str | None = Field(default=None, min_length=1)
    labels: dict[str, str] = Field(default_factory=dict)
    when_header: dict[HeaderName, str] = Field(default_factory=dict)
    when_cookie: dict[str, str] = Field(default_factory=dict)


class Forward(BaseModel):
    """Send the request to a service by name (through discovery) or to a fixed URL.

    Attributes:
        service: the registered service name.
        url: a fixed base URL (``http://10.0.0.5:8080``, or with a base path that is
            put before the request's) instead of a service.
        strip_prefix: remove the matched prefix from the path (``/api/users`` → ``/users``).
        rewrite: replace the matched prefix with this (``/v2/``), or for a template
            the whole path, with ``{name}`` parameters filled in (``/users/{id}/profile``).
        split: weighted shares between versions or labelled instances (canary).
        sticky: a header name, or ``cookie:<name>``, whose value picks the share
            (the same caller keeps its version); without one each request draws.
        timeout_s: the upstream request's deadline (shortened by the caller's).
        retries: extra attempts on other instances, for idempotent methods only.
    """

    model_config = _FROZEN

    service: str | None = Field(default=None, min_length=1, max_length=200)
    url: str | None = Field(default=None, pattern=r"^https?://[^/?#\s]+(/[^?#\s]*)?$")
    strip_prefix: bool = False
    rewrite: str | None = None
    split: list[Split] = Field(default_factory=list)
    sticky: str | None = Field(default=None, min_length=1)
    timeout_s: float = Field(default=30.0, gt=0, le=3600)
    retries: int = Field(default=2, ge=0, le=10)

    @model_validator(mode="after")
    def _consistent(self) -> Forward:
        if (self.service is None) == (self.url is None):
            raise ValueError("set exactly one of service (a registered name) or url")
        if self.strip_prefix and self.rewrite is not None:
            raise ValueError("strip_prefix and rewrite both change the prefix: keep one")
        if self.rewrite is not None and not self.rewrite.startswith("/"):
            raise ValueError(f"rewrite {self.rewrite!r} must start with '/'")
        if self.split and self.url is not None:
            raise ValueError("split picks service versions: it needs service, not url")
        if self.split and not any(s.weight for s in self.split):
            raise ValueError("split weights are all 0: give at least one share a weight")
        return self


class Redirect(BaseModel):
    """Answer with a redirect; ``location`` may use ``{name}`` parameters and ``{rest}``
    (the path after a prefix match); the query string is kept unless ``keep_query`` is false."""

    model_config = _FROZEN

    location: HeaderValue = Field(min_length=1)
    status: Literal[301, 302, 303, 307, 308] = 302
    keep_query: bool = True


class Respond(BaseModel):
    """Answer at the gateway with a fixed response."""

    model_config = _FROZEN

    status: int = Field(default=200, ge=200, le=599)
    body: str = Field(default="", max_length=65_536)
    content_type: HeaderValue = "text/plain; charset=utf-8"
    headers: dict[HeaderName, HeaderValue] = Field(default_factory=dict)


class HeaderOps(BaseModel):
    """Header changes, in order: ``remove``, then ``set`` (replace), then ``add`` (append)."""

    model_config = _FROZEN

    remove: list[HeaderName] = Field(default_factory=list)
    set: dict[HeaderName, HeaderValue] = Field(default_factory=dict)
    add: dict[HeaderName, HeaderValue] = Field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.remove or self.set or self.add)


class Route(BaseModel):
    """One route: a match, exactly one action, and what applies on the way."""

    model_config = _FROZEN

    id: str
    match: Match = Field(default_factory=Match)
    priority: int = 0
    forward: Forward | None = None
    redirect: Redirect | None = None
    respond: Respond | None = None
    request_headers: HeaderOps = Field(default_factory=HeaderOps)
    response_headers: HeaderOps = Field(default_factory=HeaderOps)
    auth: AuthConfig | None = None
    limits: RouteLimits | None = None
    max_body_bytes: int | None = Field(default=None, ge=0)
    cors: bool = False

    @field_validator("id")
    @classmethod
    def _id(cls, value: str) -> str:
        if not _ID.match(value):
            raise ValueError(f"id {value!r}: use letters, digits, '.', '_' and '-' (at most 100)")
        return value

    @model_validator(mode="after")
    def _one_action(self) -> Route:
        actions = [a for a in ("forward", "redirect", "respond") if getattr(self, a) is not None]
        if len(actions) != 1:
            raise ValueError(
                "needs exactly one action of forward, redirect or respond "
                f"(has {', '.join(actions) or 'none'})"
            )
        forward = self.forward
        if forward is not None and forward.rewrite is not None and self.match.is_template:
            unknown = set(path_params(forward.rewrite)) - set(path_params(self.match.path))
            if unknown:
                raise ValueError(f"forward.rewrite uses unknown parameters {sorted(unknown)}")
        if forward is not None and forward.strip_prefix and self.match.is_template:
            raise ValueError("forward.strip_prefix needs a prefix path; use rewrite")
        return self

    @property
    def action(self) -> Literal["forward", "redirect", "respond"]:
        """Which action this route takes."""
        if self.forward is not None:
            return "forward"
        return "redirect" if self.redirect is not None else "respond"


class GatewayDocument(BaseModel):
    """The whole route document (``gateway.yaml``).

    Attributes:
        routes: the routes; the highest ``priority`` wins, then the most specific.
        consumer_header: the header naming the authenticated consumer to upstreams
            (a client-sent copy is always removed).
        trusted_proxies: CIDRs whose ``X-Forwarded-For``/``Forwarded`` are believed.
        forwarded_headers: which headers tell upstreams about the client:
            ``x-forwarded`` (``X-Forwarded-For``/``-Proto``/``-Host``, what most
            frameworks read), ``rfc7239`` (``Forwarded``) or ``both``.
        cors: the CORS policy of routes with ``cors: true``.
        jwt: named JWT verifiers that routes' ``auth.jwt`` refer to.
        max_body_bytes: the default request body limit of every route.
        redis_url: Redis for rate limits shared by every gateway process.
    """

    model_config = _FROZEN

    routes: list[Route] = Field(default_factory=list)
    consumer_header: HeaderName = "x-consumer"
    trusted_proxies: TrustedProxyList = Field(default_factory=list)
    forwarded_headers: Literal["x-forwarded", "rfc7239", "both"] = "x-forwarded"
    cors: CorsConfig | None = None
    jwt: dict[str, JwtConfig] = Field(default_factory=dict)
    max_body_bytes: int = Field(default=DEFAULT_MAX_BODY_BYTES, ge=0)
    redis_url: str | None = Field(default=None, pattern=r"^rediss?://")

    @model_validator(mode="wrap")
    @classmethod
    def _named_errors(cls, data: Any, handler: Any) -> Any:
        try:
            return handler(data)
        except PydanticValidationError as exc:
            raise PydanticCustomError(
                "gateway_document", "{detail}", {"detail": _explain(exc, data)}
            ) from None

    @model_validator(mode="after")
    def _references(self) -> GatewayDocument:
        seen: set[str] = set()
        for route in self.routes:
            if route.id in seen:
                raise ValueError(f"route {route.id!r}: id used twice; route ids must be unique")
            seen.add(route.id)
            if (
                route.auth is not None
                and route.auth.jwt is not None
                and route.auth.jwt not in self.jwt
            ):
                raise ValueError(
                    f"route {route.id!r}: auth.jwt {route.auth.jwt!r} is not a verifier under jwt: "
                    f"(known: {', '.join(sorted(self.jwt)) or 'none'})"
                )
            if route.cors and self.cors is None:
                raise ValueError(
                    f"route {route.id!r}: cors is on but the document has no cors: policy"
                )
        return self


def _explain(exc: PydanticValidationError, data: Any) -> str:
    """One line per error, ``route '<id>': <field.path>: <message>``."""
    lines = []
    for error in exc.errors():
        loc = list(error["loc"])
        where = ".".join(map(str, loc))
        routes = data.get("routes") if isinstance(data, dict) else None
        if (
            len(loc) >= 2
            and loc[0] == "routes"
            and isinstance(loc[1], int)
            and isinstance(routes, list)
        ):
            raw = routes[loc[1]] if loc[1] < len(routes) else None
            name = raw.get("id") if isinstance(raw, dict) else None
            label = f"route {name!r}" if isinstance(name, str) else f"route #{loc[1] + 1}"
            where = label + (": " + ".".join(map(str, loc[2:])) if loc[2:] else "")
        message = str(error["msg"]).removeprefix("Value error, ")
        lines.append(f"{where}: {message}" if where else message)
    return "; ".join(lines)


def parse_document(
    content: str, *, name: str = "gateway.yaml", fmt: Format | None = None
) -> GatewayDocument:
    """Parse and validate a route document.

    Raises:
        ValidationError: it does not parse, or does not validate (one line naming
            the route and field).
    """
    data = parse(fmt or guess_format(name), content, name=name)
    if data is None or data == "":
        data = {}
    try:
        return GatewayDocument.model_validate(data)
    except PydanticValidationError as exc:
        detail = "; ".join(str(e["msg"]).removeprefix("Value error, ") for e in exc.errors())
        raise ValidationError(f"{name}: {detail}") from None
