"""Request headers on their way upstream: hop-by-hop removed, identity made trustworthy.

:func:`upstream_headers` turns the client's headers into the upstream's, in one pass:

- hop-by-hop headers are removed (RFC 9110 §7.6.1: ``Connection``,
  ``Proxy-Connection``, ``Keep-Alive``, ``TE``, ``Transfer-Encoding``,
  ``Upgrade``; and ``Trailer``, ``Proxy-Authorization`` of RFC 2616 §13.5.1),
  plus every header the client named in ``Connection`` - except ``Host`` and
  ``Content-Length``, which a client must not be able to strip from the
  request's framing that way. The proxy frames the body itself (the request's
  ``Transfer-Encoding`` does not travel);
- every client copy of the consumer header is removed whatever its case, and
  the authenticated consumer (if any) is set by the gateway; an API key the
  client sent as ``Authorization: Bearer`` is removed as its own header is;
- ``X-Forwarded-For``, ``X-Forwarded-Proto`` and/or the RFC 7239
  ``Forwarded`` header (the document's ``forwarded_headers``: one style by
  default, since each header costs every upstream its parsing): when the
  direct peer is a trusted proxy, its values are kept and this hop is
  appended; otherwise every incoming copy (and ``X-Real-IP``) is dropped and
  the gateway's own view replaces them, so a client cannot claim another
  address. ``X-Forwarded-Host`` carries the client's Host only when the
  route sets or removes ``Host`` (otherwise the upstream gets the client's
  Host itself, and a copy would cost every request its parsing), or a
  trusted proxy's value.

:func:`client_address` is the address limits and logs should use: the direct
peer, or, behind trusted proxies, the right-most ``X-Forwarded-For`` entry
that is not itself a trusted proxy.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from typing import Any

from keel.gateway._auth import Consumer
from keel.gateway._policy import TrustedProxies

__all__ = [
    "HOP_BY_HOP",
    "TrustedProxies",
    "client_address",
    "forwarded_element",
    "plain_head",
    "relay_skip",
    "upstream_headers",
]

HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"proxy-connection",
        b"keep-alive",
        b"te",
        b"transfer-encoding",
        b"upgrade",
        b"trailer",
        b"proxy-authorization",
    }
)
"""Headers that describe one connection, never forwarded (lower case)."""

_FORWARDED_FAMILY = frozenset(
    {b"x-forwarded-for", b"x-forwarded-proto", b"x-forwarded-host", b"forwarded", b"x-real-ip"}
)
_UNSTRIPPABLE = frozenset({b"host", b"content-length"})
_XFF, _XFP, _XFH, _FWD = b"x-forwarded-for", b"x-forwarded-proto", b"x-forwarded-host", b"forwarded"
_ADDED = frozenset({_XFF, _XFP, _XFH, _FWD})
_HOST = b"host"
_AUTHORIZATION = frozenset({b"authorization"})
_TOKEN_CHARS = b"!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
_ELEMENTS: dict[tuple[str | None, str, bytes | None], bytes] = {}  # forwarded_element, memoized


def _connection_tokens(value: bytes) -> set[bytes]:
    return {token.strip().lower() for token in value.split(b",") if token.strip()}


def _quote(value: bytes) -> bytes:
    """A Forwarded parameter value: a token as is, anything else as a quoted string."""
    if value and not value.translate(None, _TOKEN_CHARS):  # only token characters
        return value
    return b'"' + value.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'


def forwarded_element(client: str | None, scheme: str, host: bytes | None) -> bytes:
    """This hop's RFC 7239 element: ``for=...;proto=...;host=...`` (IPv6 bracketed, quoted)."""
    key = (client, scheme, host)
    found = _ELEMENTS.get(key)
    if found is None:
        if len(_ELEMENTS) >= 4096:  # clients x hosts: bounded
            _ELEMENTS.clear()
        found = _ELEMENTS[key] = _element(client, scheme, host)
    return found


def _element(client: str | None, scheme: str, host: bytes | None) -> bytes:
    if client is None:
        node = b"unknown"
    elif ":" in client:
        node = b'"[' + client.encode() + b']"'
    else:
        node = _quote(client.encode())
    element = b"for=" + node + b";proto=" + _quote(scheme.encode())
    if host:
        element += b";host=" + _quote(host)
    return element


def upstream_headers(
    headers: list[tuple[bytes, bytes]],
    *,
    client: str | None,
    scheme: str,
    host: bytes | None,
    trusted: TrustedProxies,
    consumer: Consumer | None,
    consumer_header: bytes,
    drop: frozenset[bytes] = frozenset(),
    style: str = "x-forwarded",
) -> list[tuple[bytes, bytes]]:
    """The headers to send upstream; see the module docstring.

    Args:
        headers: the request's headers (ASGI: names lower case; any case is handled).
        client: the direct peer's address (``scope["client"][0]``), None if unknown.
        scheme: ``http`` or ``https`` as the client used it.
        host: the request's Host, for ``X-Forwarded-Host`` and ``Forwarded``.
        trusted: the proxies whose forwarded headers are believed.
        consumer: the authenticated consumer, or None.
        consumer_header: the consumer header's name, lower case.
        drop: more header names (lower case) to leave out (the route's removals).
        style: ``x-forwarded``, ``rfc7239`` or ``both``: which forwarded headers to send.

    Returns:
        A new list; ``headers`` is not modified.
    """
    keep_forwarded = client in trusted
    named: set[bytes] | frozenset[bytes] = drop
    if consumer is not None and consumer.hide_authorization:
        named = named | _AUTHORIZATION  # an API key given as a bearer token
    for name, value in headers:
        if name == b"connection" or name.lower() == b"connection":
            named = named | (_connection_tokens(value) - _UNSTRIPPABLE)
    out: list[tuple[bytes, bytes]] = []
    xff: list[bytes] = []
    fwd: list[bytes] = []
    proto = fhost = None
    for name, value in headers:
        lower = name if name.islower() else name.lower()
        if lower in HOP_BY_HOP or lower in named or lower == consumer_header:
            continue
        if lower in _FORWARDED_FAMILY:
            if keep_forwarded:
                if lower == _XFF:
                    xff.append(value)
                elif lower == _FWD:
                    fwd.append(value)
                elif lower == _XFP and proto is None:
                    proto = value
                elif lower == _XFH and fhost is None:
                    fhost = value
                else:
                    out.append((lower, value))
            continue
        out.append((lower, value))
    if style != "rfc7239":
        this = client.encode() if client is not None else b"unknown"
        out.append((_XFF, b", ".join([*xff, this])))
        out.append((_XFP, proto if proto is not None else scheme.encode()))
        if fhost is not None:
            out.append((_XFH, fhost))
        elif host and _HOST in drop:  # the route sets or removes Host: the original goes here
            out.append((_XFH, host))
    if style != "x-forwarded":
        out.append((_FWD, b", ".join([*fwd, forwarded_element(client, scheme, host)])))
    if consumer is not None:
        out.append((consumer_header, consumer.name.encode()))
    if drop and not (drop.isdisjoint(_ADDED) and consumer_header not in drop):
        out = [(k, v) for k, v in out if k not in drop]  # the route removes one added here
    return out


def relay_skip(drop: frozenset[bytes], consumer_header: bytes) -> frozenset[bytes] | None:
    """The client headers :func:`plain_head` leaves out for a route, or None when it cannot
    serve the route (it removes a header this module adds)."""
    if not (drop.isdisjoint(_ADDED) and consumer_header not in drop):
        return None
    return HOP_BY_HOP | _FORWARDED_FAMILY | drop | {consumer_header, b"keel-deadline"}


def _forwarded_lines(
    client: str | None, scheme: str, host: bytes | None, style: str, rewritten: bool
) -> bytes:
    key = (client, scheme, host, style, rewritten)
    found = _LINES.get(key)
    if found is None:
        if len(_LINES) >= 4096:  # clients x hosts: bounded
            _LINES.clear()
        added: list[tuple[bytes, bytes]] = []
        if style != "rfc7239":
            added.append((_XFF, client.encode() if client is not None else b"unknown"))
            added.append((_XFP, scheme.encode()))
            if host and rewritten:
                added.append((_XFH, host))
        if style != "x-forwarded":
            added.append((_FWD, forwarded_element(client, scheme, host)))
        found = _LINES[key] = b"".join(k + b": " + v + b"\r\n" for k, v in added)
    return found


_LINES: dict[tuple[str | None, str, bytes | None, str, bool], bytes] = {}


def plain_head(
    request_line: bytes,
    headers: list[tuple[bytes, bytes]],
    *,
    skip: frozenset[bytes],
    client: str | None,
    scheme: str,
    host: bytes | None,
    trusted: TrustedProxies,
    tail: bytes,
    style: str = "x-forwarded",
) -> tuple[bytes, bool] | None:
    """:func:`upstream_headers` and the request head in one pass, for the relay's requests.

    The common case only: a peer that is not a trusted proxy and no
    ``Connection`` header (None otherwise: the caller takes the general
    path). The result equals the general path's head, byte for byte.

    Args:
        request_line: ``GET /path?q HTTP/1.1\r\n``.
        headers: the client's headers (ASGI: names lower case).
        skip: the route's :func:`relay_skip`.
        client: the direct peer's address.
        scheme: ``http`` or ``https``.
        host: the request's Host.
        trusted: the trusted proxies.
        tail: header lines that end the head (the consumer's, the route's
            set/add, the request id).
        style: which forwarded headers to send (see :func:`upstream_headers`).

    Returns:
        the head without its closing blank line, and whether it carries a Host.
    """
    if trusted and client in trusted:
        return None
    parts = [request_line]
    has_host = False
    for name, value in headers:
        if name in skip:
            if name == b"connection":
                return None
            continue
        if name == b"host":
            has_host = True
        parts += (name, b": ", value, b"\r\n")
    rewritten = _HOST in skip
    parts.append(_forwarded_lines(client, scheme, host, style, rewritten))
    parts.append(tail)
    if rewritten:  # the route removes Host, or sets it in the tail
        has_host = tail.startswith(b"host: ") or b"\nhost: " in tail
    return b"".join(parts), has_host


def _valid_ip(text: str) -> str | None:
    try:
        return str(ipaddress.ip_address(text.strip()))
    except ValueError:
        return None


def client_address(scope: Mapping[str, Any], trusted: TrustedProxies) -> str:
    """The real client's address: the direct peer, or behind trusted proxies, from XFF.

    Walks ``X-Forwarded-For`` from the right, skipping trusted proxies; the first
    address that is not one is the client. A malformed entry ends the walk (the
    last good address is used). Returns ``""`` when the peer is unknown.
    """
    peer_info = scope.get("client")
    peer = str(peer_info[0]) if peer_info else ""
    if not trusted or peer not in trusted:
        return peer
    chain: list[bytes] = []
    for name, value in scope.get("headers", ()):
        if name.lower() == _XFF:
            chain.extend(value.split(b","))
    address = peer
    for raw in reversed(chain):
        ip = _valid_ip(raw.decode("latin-1"))
        if ip is None:
            break
        address = ip
        if ip not in trusted:
            break
    return address
