"""The gateway's security and limit settings, as they appear in the route document.

These pydantic models are the parts of ``gateway.yaml`` that say who may call a
route and how often: :class:`AuthConfig` (per route), :class:`JwtConfig` (named
verifiers, document level), :class:`CorsConfig` (document level, switched on per
route), :class:`RouteLimits` (per route) and :data:`TrustedProxyList` (the CIDRs
whose forwarded headers are believed), parsed once into :class:`TrustedProxies`.

Validation is strict because a permissive security setting fails open: no
``alg: none``, no mixing of HMAC with public-key algorithms in one verifier (the
"HS256 signed with the RSA public key" confusion), no inline secrets, exactly one
key source, no ``*`` origin with credentials. Everything is validated when a
document is published; the request path only reads the compiled results.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator

from keel.errors import ValidationError

__all__ = [
    "HMAC_ALGORITHMS",
    "PUBLIC_KEY_ALGORITHMS",
    "AuthConfig",
    "CorsConfig",
    "JwtConfig",
    "RateLimit",
    "RouteLimits",
    "TrustedProxies",
    "TrustedProxyList",
    "parse_cidrs",
]

_FROZEN = ConfigDict(extra="forbid", frozen=True)

HMAC_ALGORITHMS = frozenset({"HS256", "HS384", "HS512"})
"""Shared-secret JWT algorithms."""

PUBLIC_KEY_ALGORITHMS = frozenset(
    {
        "RS256", "RS384", "RS512", "PS256", "PS384", "PS512",
        "ES256", "ES256K", "ES384", "ES512", "EdDSA",
    }
)  # fmt: skip
"""Public-key JWT algorithms (RSA, RSA-PSS, ECDSA, EdDSA)."""

_HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")  # RFC 9110 token
_METHOD = re.compile(r"^[A-Z]+$")
_CONFIG_NAME = re.compile(r"^[A-Za-z0-9._-]{1,200}$")
_ORIGIN = re.compile(r"^https?://[A-Za-z0-9.\-\[\]:]+$")


def _header_name(value: str) -> str:
    if not _HEADER_NAME.match(value):
        raise ValueError(f"{value!r} is not a valid header name (letters, digits and -)")
    return value.lower()


HeaderName = Annotated[str, AfterValidator(_header_name)]


class AuthConfig(BaseModel):
    """Who may call a route: a JWT verifier by name and/or API keys.

    With both, a bearer token that looks like an API key (``keel_...``) is checked
    as one and any other bearer token as a JWT. ``required: false`` lets anonymous
    requests through (the consumer header is then absent) but still refuses bad
    credentials.
    """

    model_config = _FROZEN

    jwt: str | None = Field(default=None, min_length=1, description="name of a JWT verifier")
    api_key: bool = False
    required: bool = True
    api_key_header: HeaderName | None = Field(
        default="x-api-key", description="header carrying an API key; null to accept none"
    )
    api_key_bearer: bool = Field(
        default=True, description="accept an API key as 'Authorization: Bearer <key>'"
    )
    forward_api_key: bool = Field(
        default=False,
        description="send the API-key header on to the upstream (default: removed; the "
        "upstream gets the consumer header)",
    )
    forward_token: bool = Field(
        default=True,
        description="send the 'Authorization' header on to the upstream (default: kept, so an "
        "upstream can read the JWT's claims; false removes it on this route)",
    )

    @model_validator(mode="after")
    def _one_method(self) -> AuthConfig:
        if self.jwt is None and not self.api_key:
            raise ValueError("auth needs 'jwt: <verifier name>' and/or 'api_key: true'")
        if self.api_key and self.api_key_header is None and not self.api_key_bearer:
            raise ValueError(
                "api_key is on but no source is allowed: set api_key_header or api_key_bearer"
            )
        return self


class JwtConfig(BaseModel):
    """One named JWT verifier.

    Keys come from exactly one source: ``key_file`` (a PEM public key, or a file
    holding the shared secret for HS* algorithms) or ``jwks_config`` (the name of
    a config-center document holding a JWKS, followed live so rotations apply
    without a restart). There is no inline secret and no default key.
    """

    model_config = _FROZEN

    algorithms: list[str] = Field(min_length=1)
    audience: str | list[str]
    issuer: str = Field(min_length=1)
    leeway_s: float = Field(default=0.0, ge=0, le=300)
    consumer_claim: str = Field(default="sub", min_length=1)
    key_file: str | None = Field(default=None, min_length=1)
    jwks_config: str | None = Field(default=None, min_length=1)

    @field_validator("algorithms")
    @classmethod
    def _check_algorithms(cls, value: list[str]) -> list[str]:
        for alg in value:
            if alg.lower() == "none":
                raise ValueError("'none' is never allowed: unsigned tokens are refused")
            if alg not in HMAC_ALGORITHMS | PUBLIC_KEY_ALGORITHMS:
                known = ", ".join(sorted(HMAC_ALGORITHMS | PUBLIC_KEY_ALGORITHMS))
                raise ValueError(f"unknown algorithm {alg!r}; use one of {known}")
        kinds = {alg in HMAC_ALGORITHMS for alg in value}
        if len(kinds) > 1:
            raise ValueError(
                "HS* and public-key algorithms may not be mixed in one verifier "
                "(a token could be HMAC-signed with the public key): define two verifiers"
            )
        return list(dict.fromkeys(value))

    @field_validator("jwks_config")
    @classmethod
    def _check_jwks_name(cls, value: str | None) -> str | None:
        if value is not None and not _CONFIG_NAME.match(value):
            raise ValueError(
                f"jwks_config {value!r} must be a config name such as 'jwks.json' "
                "(letters, digits, '.', '_' and '-')"
            )
        return value

    @field_validator("audience")
    @classmethod
    def _check_audience(cls, value: str | list[str]) -> str | list[str]:
        items = [value] if isinstance(value, str) else value
        if not items or not all(items):
            raise ValueError("audience must be a non-empty string or list of strings")
        return value

    @model_validator(mode="after")
    def _one_key_source(self) -> JwtConfig:
        if (self.key_file is None) == (self.jwks_config is None):
            raise ValueError(
                "set exactly one key source: key_file (PEM or secret file) "
                "or jwks_config (a config-center document holding a JWKS)"
            )
        return self

    @property
    def hmac(self) -> bool:
        """True for shared-secret (HS*) verifiers."""
        return self.algorithms[0] in HMAC_ALGORITHMS


class CorsConfig(BaseModel):
    """Cross-origin resource sharing for the routes that turn it on (``cors: true``)."""

    model_config = _FROZEN

    allow_origins: list[str] = Field(min_length=1)
    allow_methods: list[str] = Field(default_factory=lambda: ["GET", "HEAD", "POST"])
    allow_headers: list[HeaderName] = Field(default_factory=list)
    expose_headers: list[HeaderName] = Field(default_factory=list)
    max_age_s: int = Field(default=600, ge=0, le=86_400)
    allow_credentials: bool = False

    @field_validator("allow_origins")
    @classmethod
    def _check_origins(cls, value: list[str]) -> list[str]:
        for origin in value:
            if origin != "*" and not _ORIGIN.match(origin):
                raise ValueError(
                    f"origin {origin!r} must be '*' or scheme://host[:port] "
                    "with no path or trailing slash"
                )
        if "*" in value and len(value) > 1:
            raise ValueError("'*' allows every origin: list it alone")
        return value

    @field_validator("allow_methods")
    @classmethod
    def _check_methods(cls, value: list[str]) -> list[str]:
        for method in value:
            if method != "*" and not _METHOD.match(method):
                raise ValueError(f"method {method!r} must be upper case, e.g. GET")
        return value

    @model_validator(mode="after")
    def _no_wildcard_with_credentials(self) -> CorsConfig:
        if self.allow_credentials and "*" in self.allow_origins:
            raise ValueError(
                "allow_credentials needs explicit origins: '*' with credentials "
                "would let every site act as the user"
            )
        return self


class RateLimit(BaseModel):
    """``requests`` per ``per_s`` seconds with bursts of ``burst``, counted per ``by``.

    ``by: route`` counts all callers together, ``consumer`` each authenticated
    consumer (anonymous callers fall back to their client address), ``client``
    each client address. ``shared: true`` counts across every gateway process
    in Redis (the document's ``redis_url``); without Redis it counts locally.
    """

    model_config = _FROZEN

    requests: int = Field(ge=1)
    per_s: float = Field(default=1.0, gt=0, le=86_400)
    burst: int | None = Field(default=None, ge=1)
    by: Literal["route", "consumer", "client"] = "route"
    shared: bool = False

    @property
    def rate(self) -> float:
        """Admissions per second."""
        return self.requests / self.per_s

    @property
    def burst_size(self) -> int:
        """Admissions allowed at once (``burst``, or ``requests`` when unset)."""
        return self.burst if self.burst is not None else self.requests


class RouteLimits(BaseModel):
    """A route's rate limits (at most one per ``by``) and concurrency limit."""

    model_config = _FROZEN

    rate: list[RateLimit] = Field(default_factory=list)
    concurrency: int | None = Field(default=None, ge=1)

    @field_validator("rate", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return [value] if isinstance(value, dict) else value

    @field_validator("rate")
    @classmethod
    def _one_per_kind(cls, value: list[RateLimit]) -> list[RateLimit]:
        kinds = [limit.by for limit in value]
        for kind in set(kinds):
            if kinds.count(kind) > 1:
                raise ValueError(f"two rate limits by {kind!r}: keep one per route/consumer/client")
        return value


def parse_cidrs(values: Iterable[str]) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    """Parse CIDRs (or single addresses).

    Raises:
        ValidationError: a value is not an address or network.
    """
    networks = []
    for value in values:
        try:
            networks.append(ipaddress.ip_network(value.strip(), strict=False))
        except ValueError as exc:
            raise ValidationError(
                f"trusted proxy {value!r} is not an IP address or CIDR (e.g. 10.0.0.0/8)"
            ) from exc
    return tuple(networks)


def _check_cidrs(value: list[str]) -> list[str]:
    try:
        parse_cidrs(value)
    except ValidationError as exc:
        raise ValueError(str(exc)) from None
    return value


TrustedProxyList = Annotated[list[str], AfterValidator(_check_cidrs)]
"""A list of CIDRs validated at publish time (use in the document model)."""


@dataclass(frozen=True, slots=True)
class TrustedProxies:
    """Peers whose ``X-Forwarded-*``/``Forwarded`` headers are believed.

    Build with :meth:`parse`; ``address in proxies`` checks one peer address.
    """

    networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()

    @classmethod
    def parse(cls, values: Iterable[str]) -> TrustedProxies:
        """Parse CIDRs into a :class:`TrustedProxies`.

        Raises:
            ValidationError: a value is not an address or network.
        """
        return cls(parse_cidrs(values))

    def __contains__(self, address: object) -> bool:
        if not self.networks or not isinstance(address, str):
            return False
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in network for network in self.networks)

    def __bool__(self) -> bool:
        return bool(self.networks)
