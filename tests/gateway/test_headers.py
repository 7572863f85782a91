"""Upstream headers: hop-by-hop removal, consumer header spoofing, forwarded headers."""

from __future__ import annotations

import itertools

import pytest

from keel.gateway._auth import Consumer
from keel.gateway._headers import client_address, forwarded_element, upstream_headers
from keel.gateway._policy import TrustedProxies

NONE = TrustedProxies.parse([])
PROXIES = TrustedProxies.parse(["10.0.0.0/8", "::1"])
ALICE = Consumer("alice", "api_key", "0123456789abcdef")


def _up(
    headers: list[tuple[bytes, bytes]],
    *,
    client: str | None = "203.0.113.7",
    trusted: TrustedProxies = NONE,
    consumer: Consumer | None = None,
    style: str = "both",
    drop: frozenset[bytes] = frozenset(),
) -> list[tuple[bytes, bytes]]:
    return upstream_headers(
        headers,
        client=client,
        scheme="https",
        host=b"api.example",
        trusted=trusted,
        consumer=consumer,
        consumer_header=b"x-consumer",
        drop=drop,
        style=style,
    )


def _values(headers: list[tuple[bytes, bytes]], name: bytes) -> list[bytes]:
    return [v for k, v in headers if k.lower() == name]


def test_hop_by_hop_headers_are_removed() -> None:
    """RFC 9110 §7.6.1 hop-by-hop headers never reach the upstream; others do."""
    hop = [
        (b"connection", b"keep-alive"),
        (b"keep-alive", b"timeout=5"),
        (b"proxy-connection", b"keep-alive"),
        (b"te", b"trailers"),
        (b"transfer-encoding", b"chunked"),
        (b"upgrade", b"h2c"),
        (b"trailer", b"x-sum"),
        (b"proxy-authorization", b"Basic eDp5"),
    ]
    out = _up([(b"host", b"api.example"), (b"accept", b"*/*"), *hop])
    names = {k for k, _ in out}
    assert not names & {k for k, _ in hop}
    assert (b"host", b"api.example") in out and (b"accept", b"*/*") in out


def test_headers_named_in_connection_are_removed() -> None:
    """Every header named in Connection goes (any case, several copies), but never Host/CL."""
    out = _up(
        [
            (b"host", b"api.example"),
            (b"content-length", b"3"),
            (b"connection", b"X-Secret, close"),
            (b"Connection", b"x-other ,host, content-length"),
            (b"x-secret", b"1"),
            (b"X-Other", b"2"),
            (b"x-kept", b"3"),
        ]
    )
    names = [k for k, _ in out]
    assert b"x-secret" not in names and b"x-other" not in names
    assert {b"host", b"content-length", b"x-kept"} <= set(names)


def _case_variants(name: str) -> list[bytes]:
    letters = itertools.product(*({c.lower(), c.upper()} for c in name))
    return sorted({"".join(chars).encode() for chars in letters})


@pytest.mark.parametrize("consumer", [None, ALICE], ids=["anonymous", "authenticated"])
def test_client_consumer_header_never_passes(consumer: Consumer | None) -> None:
    """Every case variant and every duplicate of the consumer header is stripped."""
    spoofed = [(variant, b"admin") for variant in _case_variants("x-consumer")]
    assert len(spoofed) == 2**9  # x-consumer has 9 letters
    out = _up([*spoofed, (b"x-consumer", b"root"), (b"accept", b"*/*")], consumer=consumer)
    values = _values(out, b"x-consumer")
    assert values == ([b"alice"] if consumer else [])
    assert b"admin" not in [v for _, v in out] and b"root" not in [v for _, v in out]


def test_forwarded_headers_from_an_untrusted_peer_are_replaced() -> None:
    """A direct client cannot claim another address, scheme or host."""
    out = _up(
        [
            (b"x-forwarded-for", b"1.2.3.4"),
            (b"X-Forwarded-For", b"5.6.7.8"),
            (b"x-forwarded-proto", b"http"),
            (b"x-forwarded-host", b"evil.example"),
            (b"forwarded", b"for=1.2.3.4"),
            (b"x-real-ip", b"1.2.3.4"),
        ]
    )
    assert _values(out, b"x-forwarded-for") == [b"203.0.113.7"]
    assert _values(out, b"x-forwarded-proto") == [b"https"]
    assert _values(out, b"x-forwarded-host") == []  # the upstream gets the client's Host
    assert _values(out, b"forwarded") == [b"for=203.0.113.7;proto=https;host=api.example"]
    assert _values(out, b"x-real-ip") == []


def test_x_forwarded_host_carries_the_host_a_route_replaces() -> None:
    """Only a route that sets or removes Host sends the client's in X-Forwarded-Host."""
    incoming = [(b"host", b"api.example"), (b"x-forwarded-host", b"evil.example")]
    kept = _up(incoming, style="x-forwarded")
    assert _values(kept, b"host") == [b"api.example"]
    assert _values(kept, b"x-forwarded-host") == []
    replaced = _up(incoming, style="x-forwarded", drop=frozenset({b"host"}))
    assert _values(replaced, b"host") == []
    assert _values(replaced, b"x-forwarded-host") == [b"api.example"]


def test_forwarded_headers_from_a_trusted_proxy_are_appended() -> None:
    """Behind a trusted proxy, its chain is kept and this hop appended."""
    out = _up(
        [
            (b"x-forwarded-for", b"198.51.100.1"),
            (b"x-forwarded-for", b"10.1.1.1"),
            (b"x-forwarded-proto", b"https"),
            (b"x-forwarded-host", b"shop.example"),
            (b"forwarded", b"for=198.51.100.1;proto=https"),
        ],
        client="10.0.0.2",
        trusted=PROXIES,
    )
    assert _values(out, b"x-forwarded-for") == [b"198.51.100.1, 10.1.1.1, 10.0.0.2"]
    assert _values(out, b"x-forwarded-host") == [b"shop.example"]
    assert _values(out, b"forwarded") == [
        b"for=198.51.100.1;proto=https, for=10.0.0.2;proto=https;host=api.example"
    ]


def test_one_style_of_forwarded_headers_by_default_or_as_chosen() -> None:
    """X-Forwarded-* alone by default (each added header costs every upstream), or Forwarded."""
    incoming = [(b"forwarded", b"for=198.51.100.1"), (b"x-forwarded-for", b"198.51.100.1")]
    default = upstream_headers(
        incoming,
        client="203.0.113.7",
        scheme="https",
        host=b"api.example",
        trusted=NONE,
        consumer=None,
        consumer_header=b"x-consumer",
    )
    assert [k for k, _ in default] == [b"x-forwarded-for", b"x-forwarded-proto"]
    rfc = _up(incoming, client="10.0.0.2", trusted=PROXIES, style="rfc7239")
    assert rfc == [(b"forwarded", b"for=198.51.100.1, for=10.0.0.2;proto=https;host=api.example")]


def test_forwarded_element_quotes_ipv6_and_unknown() -> None:
    """RFC 7239: IPv6 quoted in brackets, a host with a port quoted, unknown peers."""
    assert forwarded_element("2001:db8::1", "http", b"h:8080") == (
        b'for="[2001:db8::1]";proto=http;host="h:8080"'
    )
    assert forwarded_element(None, "http", None) == b"for=unknown;proto=http"


def _scope(peer: str, xff: list[bytes]) -> dict[str, object]:
    return {"client": (peer, 5555), "headers": [(b"x-forwarded-for", v) for v in xff]}


def test_client_address_trusts_xff_only_from_trusted_proxies() -> None:
    """The real client is the right-most untrusted XFF entry behind trusted peers only."""
    assert client_address(_scope("203.0.113.7", [b"1.2.3.4"]), PROXIES) == "203.0.113.7"
    assert client_address(_scope("10.0.0.2", [b"1.2.3.4, 10.9.9.9"]), PROXIES) == "1.2.3.4"
    assert client_address(_scope("10.0.0.2", [b"6.6.6.6, 1.2.3.4"]), PROXIES) == "1.2.3.4"
    assert client_address(_scope("10.0.0.2", [b"garbage, 10.1.1.1"]), PROXIES) == "10.1.1.1"
    assert client_address(_scope("10.0.0.2", []), PROXIES) == "10.0.0.2"
    assert client_address(_scope("10.0.0.2", [b"1.2.3.4"]), NONE) == "10.0.0.2"
    assert client_address({"headers": []}, PROXIES) == ""


def test_trusted_proxies_parse_errors_name_the_value() -> None:
    """A bad CIDR is refused with its value in the message."""
    from keel.errors import ValidationError

    with pytest.raises(ValidationError, match=r"10\.0\.0\.300"):
        TrustedProxies.parse(["10.0.0.0/8", "10.0.0.300"])
    assert "::1" in PROXIES and "10.200.0.1" in PROXIES and "11.0.0.1" not in PROXIES
    assert "not-an-ip" not in PROXIES
