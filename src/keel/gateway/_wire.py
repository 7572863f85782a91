"""Bytes on the wire for the proxy: the upstream request head, response headers, error answers.

Kept apart from the forwarding logic so both stay small and so the per-request
work is visible in one place: one pass over the request headers builds the
head (everything but the per-attempt lines) and reads the incoming
``keel-deadline``; one pass over the response headers drops hop-by-hop ones.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from typing import Any

from opentelemetry import trace

from keel.observe import inject

__all__ = [
    "HIDDEN",
    "HOP_BY_HOP",
    "RequestHead",
    "error_json",
    "json_error",
    "request_head",
    "response_headers",
]

Message = MutableMapping[str, Any]
Send = Callable[[Message], Awaitable[None]]

# RFC 9110 §7.6.1 (and the old Proxy-Connection): never forwarded by a proxy.
HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
    }
)
# Dropped from the request head and written again per attempt.
_REWRITTEN = frozenset({b"keel-deadline", b"transfer-encoding", b"content-length"})
_TRACE = frozenset({b"traceparent", b"tracestate", b"baggage"})
# The gateway's own server adds these, as nginx hides the upstream's.
HIDDEN = frozenset({b"date", b"server"})
_METHODS = {m: m.encode() for m in ("GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS")}


class RequestHead:
    """The upstream request head without its per-attempt lines, and what the pass found.

    Attributes:
        prefix: request line and the forwarded headers.
        has_host: the headers carry a ``host``.
        content_length: the client's ``content-length`` value (None: absent).
        deadline_s: the incoming ``keel-deadline`` in seconds (None: absent or invalid).
    """

    __slots__ = ("content_length", "deadline_s", "has_host", "prefix")

    def __init__(
        self, prefix: bytes, has_host: bool, content_length: bytes | None, deadline_s: float | None
    ) -> None:
        self.prefix = prefix
        self.has_host = has_host
        self.content_length = content_length
        self.deadline_s = deadline_s


def request_head(method: str, path_qs: bytes, headers: list[tuple[bytes, bytes]]) -> RequestHead:
    """Build the head once per request (header names are lowercase, as ASGI gives them).

    ``keel-deadline``, ``content-length`` and ``transfer-encoding`` are
    rewritten per attempt; the trace context is replaced when this process
    records a span, and passed through untouched otherwise.
    """
    out = bytearray(_METHODS.get(method) or method.encode("ascii"))
    out += b" "
    out += path_qs or b"/"
    out += b" HTTP/1.1\r\n"
    has_host = False
    length: bytes | None = None
    deadline_s: float | None = None
    context = trace.get_current_span().get_span_context()
    tracing = context.is_valid
    for name, value in headers:
        if name in _REWRITTEN:
            if name == b"content-length":
                length = value
            elif name == b"keel-deadline":
                deadline_s = _seconds(value)
            continue
        if tracing and name in _TRACE:
            continue
        if name == b"host":
            has_host = True
        out += name
        out += b": "
        out += value
        out += b"\r\n"
    if tracing:
        carrier: dict[str, str] = {}
        inject(carrier)
        for key, val in carrier.items():
            out += f"{key}: {val}\r\n".encode("latin-1")
    return RequestHead(bytes(out), has_host, length, deadline_s)


def _seconds(value: bytes) -> float | None:
    try:
        seconds = float(value)
    except ValueError:
        return None
    return seconds if 0 <= seconds < 1e9 else None


def response_headers(raw: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """The upstream's response headers without hop-by-hop and Connection-named ones.

    ``raw`` has lowercase names, as :class:`~keel.gateway._h1.Connection` keeps them.
    """
    out: list[tuple[bytes, bytes]] = []
    named: set[bytes] | None = None
    for name, value in raw:
        if name in HOP_BY_HOP:
            if name == b"connection":
                named = {t.strip().lower() for t in value.split(b",")}
            continue
        if name in HIDDEN:
            continue
        out.append((name, value))
    if named:
        out = [(k, v) for k, v in out if k not in named]
    return out


_REASONS = {
    502: "bad_gateway",
    503: "service_unavailable",
    504: "gateway_timeout",
}


def error_json(status: int, detail: str) -> bytes:
    """The body of the proxy's own 502/503/504: ``{"error": ..., "detail": ...}``."""
    return json.dumps({"error": _REASONS.get(status, "error"), "detail": detail}).encode()


async def json_error(
    send: Send, status: int, detail: str, extra: Sequence[tuple[bytes, bytes]] = ()
) -> int:
    """Answer ``status`` with a short JSON body ``{"error": ..., "detail": ...}``.

    Returns:
        the body's length.
    """
    body = error_json(status, detail)
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                *extra,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
    return len(body)
