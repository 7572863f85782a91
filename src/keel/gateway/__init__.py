"""keel's API gateway: routes from the config center to services by name.

:class:`Gateway` runs :class:`GatewayApp` in a :class:`keel.service.Service`
and follows the route document (:class:`GatewayDocument`, ``gateway.yaml`` by
default) live: a valid publish serves from the next request, an invalid one
is refused and the last good routes keep serving. See ``docs/gateway.md``.

The document models load with the package; the server side (``Gateway``,
``GatewayApp``, the access log and metrics) loads on first use, so checking a
document (``keel gateway check``) does not import the server, the upstream
client and their dependencies.
"""

from importlib import import_module
from typing import TYPE_CHECKING, Any

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

if TYPE_CHECKING:
    from keel.gateway._app import REQUEST_ID, GatewayApp
    from keel.gateway._gateway import Gateway
    from keel.gateway._logs import ACCESS_LOGGER, AccessLog
    from keel.gateway._metrics import GatewayMetrics

_LAZY = {
    "ACCESS_LOGGER": "keel.gateway._logs",
    "AccessLog": "keel.gateway._logs",
    "Gateway": "keel.gateway._gateway",
    "GatewayApp": "keel.gateway._app",
    "GatewayMetrics": "keel.gateway._metrics",
    "REQUEST_ID": "keel.gateway._app",
}

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


def __getattr__(name: str) -> Any:
    """Load the server-side names on first use."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'keel.gateway' has no attribute {name!r}")
    value = getattr(import_module(module), name)
    globals()[name] = value
    return value
