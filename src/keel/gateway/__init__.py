"""keel's API gateway: routes from the config center to services by name.

:class:`Gateway` runs :class:`GatewayApp` in a :class:`keel.service.Service`
and follows the route document (:class:`GatewayDocument`, ``gateway.yaml`` by
default) live: a valid publish serves from the next request, an invalid one
is refused and the last good routes keep serving. See ``docs/gateway.md``.
"""

from keel.gateway._app import REQUEST_ID, GatewayApp
from keel.gateway._gateway import Gateway
from keel.gateway._logs import ACCESS_LOGGER, AccessLog
from keel.gateway._metrics import GatewayMetrics
from keel.gateway._model import (
    DEFAULT_MAX_BODY_BYTES,
    Forward,
    GatewayDocument,
    HeaderOps,
    Match,
    Redirect,
    Respond,
    Route,
    Split,
    parse_document,
)
from keel.gateway._policy import AuthConfig, CorsConfig, JwtConfig, RateLimit, RouteLimits

__all__ = [
    "ACCESS_LOGGER",
    "DEFAULT_MAX_BODY_BYTES",
    "REQUEST_ID",
    "AccessLog",
    "AuthConfig",
    "CorsConfig",
    "Forward",
    "Gateway",
    "GatewayApp",
    "GatewayDocument",
    "GatewayMetrics",
    "HeaderOps",
    "JwtConfig",
    "Match",
    "RateLimit",
    "Redirect",
    "Respond",
    "Route",
    "RouteLimits",
    "Split",
    "parse_document",
]
