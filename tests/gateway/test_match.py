"""The compiled router: host, path prefix and template, method and header matching; precedence."""

from __future__ import annotations

from typing import Any

from keel.gateway._match import Hit, Router, normal_host
from keel.gateway._model import Match


def router(*routes: tuple[str, dict[str, Any]] | tuple[str, dict[str, Any], int]) -> Router[str]:
    built = []
    for spec in routes:
        id, match = spec[0], spec[1]
        priority = spec[2] if len(spec) > 2 else 0
        built.append((id, Match.model_validate(match), priority, id))
    return Router(built)


def hit(r: Router[str], path: str, method: str = "GET", host: str = "", **headers: str) -> str:
    found = r.match(method, host, path, {k.encode(): v.encode() for k, v in headers.items()})
    assert isinstance(found, Hit), f"{method} {host}{path}: {found}"
    return found.rule.id


def test_prefix_is_segment_wise() -> None:
    """``/api/`` matches ``/api`` and below it, never ``/apix``; the rest follows the prefix."""
    r = router(("api", {"path": "/api/"}))
    assert hit(r, "/api") == "api" and hit(r, "/api/users/1") == "api"
    assert r.match("GET", "", "/apix", None) is None
    found = r.match("GET", "", "/api/users/1", None)
    assert isinstance(found, Hit) and found.rest == "/users/1"


def test_longer_prefix_wins_and_root_catches_all() -> None:
    """The most specific prefix wins whatever the document order; ``/`` takes the rest."""
    r = router(
        ("root", {"path": "/"}), ("api", {"path": "/api"}), ("users", {"path": "/api/users"})
    )
    assert hit(r, "/api/users/7") == "users"
    assert hit(r, "/api/orders") == "api"
    assert hit(r, "/other") == "root" and hit(r, "/") == "root"


def test_templates_capture_parameters() -> None:
    """``{id}`` takes one segment, ``{rest*}`` the remainder; a template beats a shorter prefix."""
    r = router(
        ("user", {"path": "/users/{id}"}),
        ("files", {"path": "/files/{path*}"}),
        ("users", {"path": "/users"}),
    )
    found = r.match("GET", "", "/users/42", None)
    assert isinstance(found, Hit) and found.rule.id == "user" and found.params == {"id": "42"}
    assert hit(r, "/users/42/orders") == "users"
    found = r.match("GET", "", "/files/a/b.txt", None)
    assert isinstance(found, Hit) and found.params == {"path": "a/b.txt"}
    found = r.match("GET", "", "/files", None)
    assert isinstance(found, Hit) and found.params == {"path": ""}


def test_hosts_exact_wildcard_any() -> None:
    """An exact host beats a wildcard, which beats any host; the wildcard needs a subdomain."""
    r = router(
        ("any", {"path": "/"}),
        ("wild", {"path": "/", "hosts": ["*.example.com"]}),
        ("exact", {"path": "/", "hosts": ["api.example.com"]}),
    )
    assert hit(r, "/", host="api.example.com") == "exact"
    assert hit(r, "/", host="www.example.com") == "wild"
    assert hit(r, "/", host="example.com") == "any"
    assert normal_host(b"API.Example.com:8080") == "api.example.com"
    assert normal_host(b"[::1]:80") == "[::1]"


def test_methods_405_and_head() -> None:
    """A path that matches only with other methods is a 405 with those methods; HEAD rides GET."""
    r = router(
        ("read", {"path": "/items", "methods": ["GET"]}),
        ("write", {"path": "/items", "methods": ["POST"]}),
    )
    assert hit(r, "/items", "POST") == "write"
    assert hit(r, "/items", "HEAD") == "read"
    assert r.match("DELETE", "", "/items", None) == frozenset({"GET", "POST"})
    assert r.match("DELETE", "", "/nothing", None) is None


def test_headers_exact_and_present() -> None:
    """Header conditions: an exact value or ``*`` for present; more conditions are more specific."""
    r = router(
        ("plain", {"path": "/"}),
        ("beta", {"path": "/", "headers": {"x-beta": "*"}}),
        ("beta-eu", {"path": "/", "headers": {"x-beta": "*", "x-region": "eu"}}),
    )
    assert hit(r, "/") == "plain"
    assert hit(r, "/", **{"x-beta": "1"}) == "beta"
    assert hit(r, "/", **{"x-beta": "1", "x-region": "eu"}) == "beta-eu"
    assert hit(r, "/", **{"x-beta": "1", "x-region": "us"}) == "beta"
    assert r.uses_headers


def test_priority_beats_specificity_then_document_order() -> None:
    """A higher priority wins over a more specific match; equal ones keep document order."""
    r = router(("specific", {"path": "/a/b/c"}), ("broad", {"path": "/a"}, 10))
    assert hit(r, "/a/b/c") == "broad"
    r = router(("first", {"path": "/a"}), ("second", {"path": "/a"}))
    assert hit(r, "/a") == "first"


def test_first_segment_index_keeps_global_order() -> None:
    """Routes under other first segments are never candidates; catch-alls stay in order."""
    r = router(
        ("tenant", {"path": "/{tenant}/home"}), ("api", {"path": "/api"}), ("root", {"path": "/"})
    )
    assert [x.id for x in r.candidates("/api/x")] == ["tenant", "api", "root"]
    assert [x.id for x in r.candidates("/acme/home")] == ["tenant", "root"]
    assert hit(r, "/acme/home") == "tenant"
    assert "api" in repr(r) and len(r) == 3
