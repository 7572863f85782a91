"""The route document: what validates, and errors that name the route and the field."""

from __future__ import annotations

import pytest

from keel.errors import ValidationError
from keel.gateway import AuthConfig, GatewayDocument, parse_document
from keel.gateway._plan import _credentials

GOOD = """
consumer_header: x-consumer
routes:
  - id: users
    match: {hosts: [api.example.com], path: /api/users/, methods: [GET, POST]}
    forward: {service: users, strip_prefix: true, timeout_s: 5}
    request_headers: {set: {x-env: prod}, remove: [x-debug]}
  - id: user
    match: {path: "/u/{id}"}
    forward:
      service: users
      rewrite: "/users/{id}"
      split:
        - {weight: 90, version: v1}
        - {weight: 10, version: v2, when_header: {x-canary: "1"}}
  - id: old
    match: {path: /old/}
    redirect: {location: "/new{rest}", status: 301}
  - id: ping
    match: {path: /ping}
    respond: {status: 200, body: pong}
"""


def test_a_complete_document_validates() -> None:
    """Every action and option parses; header names are lower-cased."""
    doc = parse_document(GOOD)
    assert [r.action for r in doc.routes] == ["forward", "forward", "redirect", "respond"]
    assert doc.routes[0].request_headers.set == {"x-env": "prod"}
    assert doc.routes[1].forward is not None and doc.routes[1].forward.split[1].version == "v2"
    assert GatewayDocument().routes == []


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "routes: [{id: users, forward: {service: u, timeout_s: 0}}]",
            "route 'users': forward.timeout_s",
        ),
        ("routes: [{id: a, respond: {}}, {id: a, respond: {}}]", "route 'a': id used twice"),
        ("routes: [{id: a}]", "route 'a': needs exactly one action"),
        ("routes: [{id: a, redirect: {location: /x}, respond: {}}]", "(has redirect, respond)"),
        ("routes: [{id: a, match: {path: x}, respond: {}}]", "route 'a': match.path: path 'x'"),
        ("routes: [{id: a, respond: {}, bogus: 1}]", "route 'a': bogus: Extra inputs"),
        ("routes: [{respond: {}}]", "route #1: id: Field required"),
        ("routes: [{id: a, forward: {service: u, url: 'http://x'}}]", "exactly one of service"),
        ("routes: [{id: a, forward: {url: 'http://x', split: [{weight: 1}]}}]", "needs service"),
        ("routes: [{id: a, forward: {service: u, split: [{weight: 0}]}}]", "all 0"),
        (
            "routes: [{id: a, match: {path: '/u/{id}'}, forward: {service: u, strip_prefix: 1}}]",
            "strip_prefix",
        ),
        (
            "routes: [{id: a, match: {path: '/u/{id}'}, forward: {service: u, rewrite: '/{x}'}}]",
            "unknown parameters",
        ),
        ("routes: [{id: a, match: {path: '/u/{a*}/b'}, respond: {}}]", "only the last segment"),
        ("routes: [{id: a, match: {methods: [get]}, respond: {}}]", "upper case"),
        ("routes: [{id: a, match: {hosts: ['bad host']}, respond: {}}]", "host 'bad host'"),
        ("routes: [{id: a, auth: {jwt: main}, respond: {}}]", "auth.jwt 'main' is not a verifier"),
        ("routes: [{id: a, cors: true, respond: {}}]", "no cors: policy"),
        ('routes: [{id: a, respond: {headers: {x-a: "1\\r\\nx: y"}}}]', "line break"),
        ("routes: [{id: a, redirect: {location: /x, status: 200}}]", "redirect.status"),
        ("routes: {id: a}", "routes"),
        ("routes: [{id: a, respond: {}}]\nredis_url: http://x", "redis_url"),
    ],
)
def test_invalid_documents_name_the_route_and_field(text: str, message: str) -> None:
    """One ValidationError line that names where the problem is."""
    with pytest.raises(ValidationError) as caught:
        parse_document(text)
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


def test_syntax_errors_are_validation_errors() -> None:
    """A document that does not parse is refused with its line."""
    with pytest.raises(ValidationError, match="line"):
        parse_document("routes: [\n  - {")


def test_a_route_keeps_its_api_key_from_the_upstream_unless_told() -> None:
    """The API-key header a route consumes is dropped upstream; forward_api_key keeps it."""
    assert _credentials(AuthConfig(api_key=True)) == frozenset({b"x-api-key"})
    assert _credentials(AuthConfig(api_key=True, api_key_header="x-key")) == frozenset({b"x-key"})
    assert _credentials(AuthConfig(api_key=True, forward_api_key=True)) == frozenset()
    assert _credentials(AuthConfig(jwt="main")) == frozenset()
    assert _credentials(None) == frozenset()


def test_a_route_can_keep_the_bearer_token_from_the_upstream() -> None:
    """forward_token: false removes Authorization on the route (a JWT travels on by default)."""
    assert _credentials(AuthConfig(jwt="main", forward_token=False)) == {b"authorization"}
    both = AuthConfig(jwt="main", api_key=True, forward_token=False)
    assert _credentials(both) == {b"authorization", b"x-api-key"}
