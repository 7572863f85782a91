"""CORS: preflights allowed and refused, actual responses, Vary: Origin."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from keel.gateway._cors import Cors, CorsConfig

SITE = b"https://app.example"
CORS = Cors(
    CorsConfig(
        allow_origins=["https://app.example"],
        allow_methods=["GET", "PUT", "DELETE"],
        allow_headers=["Content-Type", "X-Request-Id"],
        expose_headers=["X-Total"],
        max_age_s=120,
        allow_credentials=True,
    )
)


def _preflight(
    cors: Cors, origin: bytes, method: bytes, asked: bytes | None = None
) -> tuple[int, dict[bytes, bytes]] | None:
    headers = [(b"origin", origin), (b"access-control-request-method", method)]
    if asked is not None:
        headers.append((b"access-control-request-headers", asked))
    result = cors.preflight("OPTIONS", headers)
    return None if result is None else (result[0], dict(result[1]))


def test_allowed_preflight() -> None:
    """An allowed origin, method and headers get 204 with the allow headers."""
    result = _preflight(CORS, SITE, b"PUT", b"content-type, x-request-id")
    assert result is not None
    status, headers = result
    assert status == 204
    assert headers[b"access-control-allow-origin"] == SITE
    assert headers[b"access-control-allow-methods"] == b"GET, PUT, DELETE"
    assert headers[b"access-control-allow-headers"] == b"content-type, x-request-id"
    assert headers[b"access-control-max-age"] == b"120"
    assert headers[b"access-control-allow-credentials"] == b"true"
    assert b"Origin" in headers[b"vary"]


@pytest.mark.parametrize(
    ("origin", "method", "asked"),
    [
        (b"https://evil.example", b"GET", None),
        (b"https://app.example.evil", b"GET", None),
        (SITE, b"PATCH", None),
        (SITE, b"GET", b"x-admin"),
    ],
)
def test_refused_preflight(origin: bytes, method: bytes, asked: bytes | None) -> None:
    """A foreign origin, method or header gets 403 without any allow header."""
    result = _preflight(CORS, origin, method, asked)
    assert result is not None
    status, headers = result
    assert status == 403
    assert not any(name.startswith(b"access-control-allow") for name in headers)
    assert b"vary" in headers


def test_not_a_preflight() -> None:
    """OPTIONS without Origin or Access-Control-Request-Method is an ordinary request."""
    assert CORS.preflight("OPTIONS", [(b"origin", SITE)]) is None
    assert CORS.preflight("GET", [(b"origin", SITE)]) is None


def test_actual_response_headers() -> None:
    """An allowed origin gets ACAO, credentials and expose; every answer varies on Origin."""
    headers = dict(CORS.response_headers([(b"origin", SITE)]))
    assert headers[b"access-control-allow-origin"] == SITE
    assert headers[b"access-control-expose-headers"] == b"x-total"
    assert headers[b"vary"] == b"Origin"
    assert CORS.response_headers([(b"origin", b"https://evil.example")]) == [(b"vary", b"Origin")]
    assert CORS.response_headers([]) == [(b"vary", b"Origin")]


def test_wildcard_origin() -> None:
    """'*' answers '*' (no credentials) to any origin."""
    cors = Cors(CorsConfig(allow_origins=["*"]))
    assert dict(cors.response_headers([(b"origin", b"https://x.example")])) == {
        b"access-control-allow-origin": b"*"
    }
    result = _preflight(cors, b"https://x.example", b"POST")
    assert result is not None and result[1][b"access-control-allow-origin"] == b"*"


def test_unsafe_settings_are_refused() -> None:
    """'*' with credentials, origins with paths, lower-case methods are refused."""
    bad_settings: list[dict[str, object]] = [
        {"allow_origins": ["*"], "allow_credentials": True},
        {"allow_origins": ["https://a.example/"]},
        {"allow_origins": ["a.example"]},
        {"allow_origins": ["*", "https://a.example"]},
        {"allow_origins": ["https://a.example"], "allow_methods": ["get"]},
        {"allow_origins": []},
    ]
    for bad in bad_settings:
        with pytest.raises(ValidationError):
            CorsConfig.model_validate(bad)
