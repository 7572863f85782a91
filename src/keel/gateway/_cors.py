"""CORS (the Fetch standard's CORS protocol) for routes that turn it on.

:class:`Cors` is compiled once from :class:`CorsConfig` per publish; per
request it only compares bytes. :meth:`Cors.preflight` answers an ``OPTIONS``
request carrying ``Origin`` and ``Access-Control-Request-Method`` itself (204
when allowed, 403 when not, with no ``Access-Control-Allow-*`` headers);
:meth:`Cors.response_headers` gives the headers to add to an actual response.
Responses always carry ``Vary: Origin`` unless every origin gets ``*``, so a
shared cache never serves one origin's answer to another (the app merges it
into an upstream ``Vary``).
"""

from __future__ import annotations

from keel.gateway._policy import CorsConfig

__all__ = ["Cors", "CorsConfig"]

_ORIGIN = b"origin"
_REQUEST_METHOD = b"access-control-request-method"
_REQUEST_HEADERS = b"access-control-request-headers"
_ACAO = b"access-control-allow-origin"
_ACAC = (b"access-control-allow-credentials", b"true")
_VARY_ORIGIN = (b"vary", b"Origin")
_VARY_PREFLIGHT = (
    b"vary",
    b"Origin, Access-Control-Request-Method, Access-Control-Request-Headers",
)
_SAFELISTED_METHODS = frozenset({b"GET", b"HEAD", b"POST"})

Headers = list[tuple[bytes, bytes]]


class Cors:
    """The compiled CORS policy of a document.

    Args:
        config: the document's CORS settings.
    """

    __slots__ = (
        "_any_header",
        "_any_method",
        "_any_origin",
        "_credentials",
        "_expose",
        "_headers",
        "_methods",
        "_methods_value",
        "_origins",
        "_preflight_tail",
        "config",
    )

    def __init__(self, config: CorsConfig) -> None:
        self.config = config
        self._any_origin = config.allow_origins == ["*"]
        self._origins = frozenset(o.encode() for o in config.allow_origins)
        self._credentials = config.allow_credentials
        self._any_method = "*" in config.allow_methods
        self._methods = frozenset(m.encode() for m in config.allow_methods) | _SAFELISTED_METHODS
        self._methods_value = ", ".join(config.allow_methods).encode()
        self._any_header = "*" in config.allow_headers
        self._headers = frozenset(h.encode() for h in config.allow_headers)
        self._expose = ", ".join(config.expose_headers).encode()
        tail: Headers = [(b"access-control-max-age", str(config.max_age_s).encode())]
        if self._credentials:
            tail.append(_ACAC)
        tail.append(_VARY_PREFLIGHT)
        self._preflight_tail = tail

    def _allow_origin(self, origin: bytes) -> bytes | None:
        if self._any_origin:
            return origin if self._credentials else b"*"
        return origin if origin in self._origins else None

    def preflight(self, method: str, headers: Headers) -> tuple[int, Headers] | None:
        """Answer a CORS preflight, or None if this request is not one.

        Returns:
            ``(status, headers)``: 204 with the ``Access-Control-Allow-*`` headers when the
            origin, method and headers are allowed, else 403 with ``Vary`` only.
        """
        if method != "OPTIONS":
            return None
        origin = requested = asked = None
        for name, value in headers:
            if name == _ORIGIN:
                origin = value
            elif name == _REQUEST_METHOD:
                requested = value
            elif name == _REQUEST_HEADERS:
                asked = value
        if origin is None or requested is None:
            return None
        allowed_origin = self._allow_origin(origin)
        refused = (403, [_VARY_PREFLIGHT])
        if allowed_origin is None:
            return refused
        if not self._any_method and requested.strip() not in self._methods:
            return refused
        asked_names = [h.strip().lower() for h in asked.split(b",")] if asked else []
        asked_names = [h for h in asked_names if h]
        if not self._any_header and any(h not in self._headers for h in asked_names):
            return refused
        out: Headers = [
            (_ACAO, allowed_origin),
            (b"access-control-allow-methods", self._methods_value or requested.strip()),
        ]
        if asked_names:
            value = b", ".join(asked_names)
            out.append((b"access-control-allow-headers", value))
        out.extend(self._preflight_tail)
        return 204, out

    def response_headers(self, headers: Headers) -> Headers:
        """Headers to add to an actual (non-preflight) response for a request's ``headers``."""
        origin = None
        for name, value in headers:
            if name == _ORIGIN:
                origin = value
                break
        vary = [] if self._any_origin and not self._credentials else [_VARY_ORIGIN]
        if origin is None:
            return vary
        allowed = self._allow_origin(origin)
        if allowed is None:
            return vary
        out: Headers = [(_ACAO, allowed)]
        if self._credentials:
            out.append(_ACAC)
        if self._expose:
            out.append((b"access-control-expose-headers", self._expose))
        out.extend(vary)
        return out

    def __repr__(self) -> str:
        return (
            f"Cors(origins={self.config.allow_origins}, methods={self.config.allow_methods}, "
            f"credentials={self._credentials})"
        )
