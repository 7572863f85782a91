"""The compiled router: which route takes a request, decided from precomputed tables.

:class:`Router` is built once per publish from the routes' :class:`Match`
parts; a lookup does no parsing and no regex work for prefix routes. Order:

1. a higher ``priority`` wins;
2. then the more specific match: exact host over ``*.`` wildcard over any
   host; then the longer literal path (a template's literal segments count,
   and a template beats a prefix of the same length); then more header
   conditions; then a method list over none;
3. then the order in the document.

Candidates are indexed by the first path segment (routes whose first segment
is a literal sit under it; ``/`` and templates starting with a parameter sit
under every key), so a lookup looks at the routes that could match, in order,
and stops at the first that does. A request whose path and host match some
route but whose method matches none gets 405 with the allowed methods.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from keel.gateway._model import Match

__all__ = ["Hit", "Router", "Rule", "compile_rule", "normal_host"]

T = TypeVar("T")
_NO_PARAMS: Mapping[str, str] = {}


_HOSTS: dict[bytes, str] = {}


def normal_host(value: bytes | None) -> str:
    """The request host without its port, lower-case (``API.x.com:8080`` → ``api.x.com``)."""
    if not value:
        return ""
    found = _HOSTS.get(value)
    if found is not None:
        return found
    host = value.decode("latin-1").lower()
    if host.startswith("["):  # [::1]:8080
        host = host[: host.find("]") + 1]
    else:
        colon = host.rfind(":")
        host = host[:colon] if colon != -1 else host
    if len(_HOSTS) >= 1024:  # a bounded memo: the same few Host values come back
        _HOSTS.clear()
    _HOSTS[value] = host
    return host


@dataclass(slots=True, eq=False)
class Rule(Generic[T]):
    """One compiled route: its precomputed match checks and the caller's payload."""

    id: str
    payload: T
    priority: int
    order: int
    hosts: frozenset[str]
    wildcards: tuple[str, ...]  # ".example.com" for "*.example.com"
    prefix: str | None  # "/api" ("" for "/"); None for a template
    template: re.Pattern[str] | None
    literal: str  # the template's literal part before the first parameter
    methods: frozenset[str]
    headers: tuple[tuple[bytes, bytes | None], ...]  # None: present with any value
    first: str | None  # first path segment when literal, else None (under every key)
    specificity: tuple[int, ...] = field(default=())

    def host_ok(self, host: str) -> bool:
        """Whether ``host`` (normalized) is one this rule takes."""
        if not self.hosts and not self.wildcards:
            return True
        if host in self.hosts:
            return True
        return any(host.endswith(w) and len(host) > len(w) for w in self.wildcards)

    def path(self, path: str) -> tuple[Mapping[str, str], str] | None:
        """``(params, rest)`` when ``path`` matches; rest is what follows a prefix ("" if none)."""
        prefix = self.prefix
        if prefix is not None:
            if not prefix:
                return _NO_PARAMS, path
            if path.startswith(prefix):
                n = len(prefix)
                if len(path) == n:
                    return _NO_PARAMS, ""
                if path[n] == "/":
                    return _NO_PARAMS, path[n:]
            return None
        assert self.template is not None
        if not path.startswith(self.literal):
            return None
        found = self.template.fullmatch(path)
        if found is None:
            return None
        return {k: v or "" for k, v in found.groupdict().items()}, ""

    def headers_ok(self, headers: Mapping[bytes, bytes]) -> bool:
        """Whether every header condition holds."""
        for name, value in self.headers:
            got = headers.get(name)
            if got is None or (value is not None and got != value):
                return False
        return True


@dataclass(frozen=True, slots=True)
class Hit(Generic[T]):
    """A match: the rule, the template's parameters, and the path after a prefix."""

    rule: Rule[T]
    params: Mapping[str, str]
    rest: str


def compile_rule(id: str, match: Match, priority: int, order: int, payload: T) -> Rule[T]:
    """Precompute one route's checks."""
    hosts = frozenset(h for h in match.hosts if not h.startswith("*."))
    wildcards = tuple(h[1:] for h in match.hosts if h.startswith("*."))
    prefix: str | None = None
    template: re.Pattern[str] | None = None
    literal = ""
    if match.is_template:
        template, literal = _template(match.path)
        literal_len = sum(len(s) + 1 for s in match.path.split("/") if s and "{" not in s)
        path_rank = (literal_len, 1)
    else:
        prefix = match.path.rstrip("/")
        path_rank = (len(prefix), 0)
    segments = match.path.strip("/").split("/")
    first = segments[0] if segments[0] and "{" not in segments[0] else None
    host_rank = 2 if hosts else 1 if wildcards else 0
    headers = tuple(
        (name.encode("latin-1"), None if value == "*" else value.encode("latin-1"))
        for name, value in match.headers.items()
    )
    return Rule(
        id=id,
        payload=payload,
        priority=priority,
        order=order,
        hosts=hosts,
        wildcards=wildcards,
        prefix=prefix,
        template=template,
        literal=literal,
        methods=frozenset(match.methods),
        headers=headers,
        first=first,
        specificity=(host_rank, *path_rank, len(headers), 1 if match.methods else 0),
    )


def _template(path: str) -> tuple[re.Pattern[str], str]:
    """The template's regex, and its literal start (before the first parameter)."""
    parts: list[str] = []
    literal: list[str] = []
    in_literal = True
    for segment in path.strip("/").split("/"):
        if segment.startswith("{"):
            in_literal = False
            name = segment.strip("{}")
            if name.endswith("*"):
                parts.append(f"(?:/(?P<{name[:-1]}>.*))?")
            else:
                parts.append(f"/(?P<{name}>[^/]+)")
        elif segment:
            parts.append("/" + re.escape(segment))
            if in_literal:
                literal.append("/" + segment)
    return re.compile("".join(parts) + "/?"), "".join(literal)


class Router(Generic[T]):
    """Routes compiled for lookup; immutable, rebuilt on each publish.

    Args:
        routes: ``(id, match, priority, payload)`` in document order.
    """

    def __init__(self, routes: Sequence[tuple[str, Match, int, T]]) -> None:
        rules = [compile_rule(id, m, p, i, payload) for i, (id, m, p, payload) in enumerate(routes)]
        rules.sort(key=lambda r: (-r.priority, tuple(-x for x in r.specificity), r.order))
        self.rules: tuple[Rule[T], ...] = tuple(rules)
        everywhere = tuple(r for r in rules if r.first is None)
        keys = {r.first for r in rules if r.first is not None}
        self._by_first: dict[str, tuple[Rule[T], ...]] = {
            key: tuple(r for r in rules if r.first is None or r.first == key) for key in keys
        }
        self._everywhere = everywhere
        self.uses_headers = any(r.headers for r in rules)
        """Whether any route matches on headers (else the app skips building a header map)."""

    def candidates(self, path: str) -> tuple[Rule[T], ...]:
        """The rules that could match ``path``, in precedence order."""
        end = path.find("/", 1)
        first = path[1:end] if end != -1 else path[1:]
        return self._by_first.get(first, self._everywhere)

    def match(
        self, method: str, host: str, path: str, headers: Mapping[bytes, bytes] | None
    ) -> Hit[T] | frozenset[str] | None:
        """The first matching route, or the methods allowed at this path (405), or None (404).

        Args:
            method: the request method.
            host: the normalized host (:func:`normal_host`).
            path: the decoded request path.
            headers: lower-case name to value (the last one wins); None when
                :attr:`uses_headers` is false.
        """
        allowed: set[str] | None = None
        for rule in self.candidates(path):
            if not rule.host_ok(host):
                continue
            found = rule.path(path)
            if found is None:
                continue
            if rule.headers and (headers is None or not rule.headers_ok(headers)):
                continue
            if rule.methods and method not in rule.methods:
                if method == "HEAD" and "GET" in rule.methods:
                    return Hit(rule, found[0], found[1])
                allowed = (allowed or set()) | rule.methods
                continue
            return Hit(rule, found[0], found[1])
        return frozenset(allowed) if allowed else None

    def __len__(self) -> int:
        return len(self.rules)

    def __repr__(self) -> str:
        return f"<Router routes={[r.id for r in self.rules]}>"
