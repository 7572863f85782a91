"""keel's API gateway: routes from the config center to services by name.

See ``docs/gateway.md``.
"""

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
