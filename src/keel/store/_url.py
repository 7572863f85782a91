"""Store URLs: parse and validate them before anything is opened.

URL forms::

    memory://                              in this process only
    sqlite://                              the embedded default, .keel/keel.db
    sqlite:///relative/path.db             a file relative to the working directory
    sqlite:////absolute/path.db            an absolute path (four slashes)
    etcd://host:port[,host:port...]        an etcd v3 cluster
    etcd://user:password@host:port         ... with auth
    etcd://h:p?ca_file=ca.pem&cert_file=c.pem&key_file=k.pem   ... with TLS

Every form takes ``root=/prefix/`` (the namespace; default ``/keel/``) and
``max_value_bytes=N`` in its query. ``KEEL_STORE`` gives the URL when none is
passed.

A URL's password never leaves this module in text: errors, ``repr``/``str`` of
:class:`StoreURL` and status output show ``user:***@host`` (see
:func:`redact_url` for URLs that did not parse).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from keel.errors import InvalidURLError
from keel.store._base import DEFAULT_MAX_VALUE_BYTES, DEFAULT_ROOT

__all__ = [
    "DEFAULT_SQLITE_PATH",
    "DEFAULT_URL",
    "StoreURL",
    "default_url",
    "parse_url",
    "redact_url",
]

DEFAULT_SQLITE_PATH = ".keel/keel.db"
DEFAULT_URL = "sqlite://"
_SCHEMES = ("memory", "sqlite", "etcd")
_COMMON_OPTIONS = frozenset({"root", "max_value_bytes"})
_OPTIONS: dict[str, frozenset[str]] = {
    "memory": _COMMON_OPTIONS | {"history_limit"},
    "sqlite": _COMMON_OPTIONS | {"synchronous", "retention", "busy_timeout_s"},
    "etcd": _COMMON_OPTIONS
    | {"ca_file", "cert_file", "key_file", "server_name", "timeout_s", "tls", "lazy"},
}
# ``scheme://user:secret@``: the secret runs to the last '@' of the text (a
# password may hold '/', '?' or '@'; hiding too much beats showing a secret),
# and ``password=``/``token=``-like query options.
_USERINFO = re.compile(r"(?P<head>://[^/?#@:]*):.*@", re.DOTALL)
_SECRET_OPTION = re.compile(
    r"(?P<head>[?&;](?:[^=&;]*(?:password|passwd|pwd|secret|token)[^=&;]*)=)[^&;#]*",
    re.IGNORECASE,
)


def redact_url(text: str) -> str:
    """``text`` with the password of any URL in it replaced by ``***``.

    Works on text that did not parse as a URL too, so error messages about a
    malformed URL can quote it. The user name stays (it helps to see which
    user was meant); a ``password=`` or ``token=`` query option is hidden too.
    """
    text = _USERINFO.sub(r"\g<head>:***@", text)
    return _SECRET_OPTION.sub(r"\g<head>***", text)


@dataclass(frozen=True, slots=True)
class StoreURL:
    """A parsed store URL.

    Attributes:
        scheme: ``memory``, ``sqlite`` or ``etcd``.
        path: the database file (sqlite).
        endpoints: ``(host, port)`` pairs (etcd).
        user: etcd user name, if any.
        password: etcd password, if any.
        root: the root prefix.
        max_value_bytes: the largest value accepted.
        options: the other query options, as strings.
    """

    scheme: str
    path: str = ""
    endpoints: tuple[tuple[str, int], ...] = ()
    user: str | None = None
    password: str | None = field(default=None, repr=False)
    root: str = DEFAULT_ROOT
    max_value_bytes: int = DEFAULT_MAX_VALUE_BYTES
    options: dict[str, str] = field(default_factory=dict)

    def __repr__(self) -> str:
        return f"StoreURL({self.redacted()!r})"

    def __str__(self) -> str:
        return self.redacted()

    def redacted(self) -> str:
        """The URL without the password, for logs and status output."""
        query = "" if self.root == DEFAULT_ROOT else f"?root={self.root}"
        if self.scheme == "memory":
            return "memory://" + query
        if self.scheme == "sqlite":
            return f"sqlite:///{self.path}" + query
        who = f"{self.user}:***@" if self.user else ""
        hosts = ",".join(f"[{h}]:{p}" if ":" in h else f"{h}:{p}" for h, p in self.endpoints)
        return f"etcd://{who}{hosts}{query}"


def default_url() -> str:
    """The URL from ``KEEL_STORE``, else the embedded SQLite default."""
    return os.environ.get("KEEL_STORE") or DEFAULT_URL


def _parse_endpoints(netloc: str) -> tuple[tuple[str, int], ...]:
    endpoints: list[tuple[str, int]] = []
    for part in netloc.split(","):
        host, sep, port_text = part.strip().rpartition(":")
        if not sep or not host:
            raise InvalidURLError(
                f"etcd endpoint {part!r} has no port: write host:port, e.g. 127.0.0.1:2379"
            )
        host = host.strip("[]")
        try:
            port = int(port_text)
        except ValueError:
            raise InvalidURLError(
                f"etcd endpoint {part!r} has a bad port {port_text!r}: use a number 1-65535"
            ) from None
        if not 1 <= port <= 65535:
            raise InvalidURLError(f"etcd endpoint {part!r}: port must be 1-65535")
        endpoints.append((host, port))
    return tuple(endpoints)


def parse_url(url: str) -> StoreURL:
    """Parse a store URL, or raise :class:`InvalidURLError` naming the problem and the fix.

    The error messages quote the URL with its password replaced by ``***``.
    """
    if not isinstance(url, str):
        raise InvalidURLError(
            f"store URL must be a str, not {type(url).__name__}: "
            f"use memory://, sqlite:///path.db or etcd://host:port"
        )
    shown = redact_url(url)
    if "://" not in url:
        raise InvalidURLError(
            f"store URL {shown!r} is malformed: use memory://, sqlite:///path.db or etcd://host:port"
        )
    if "\x00" in url:
        raise InvalidURLError(f"store URL {shown!r} contains a NUL character: remove it")
    try:
        return _parse(url, shown)
    except ValueError as exc:  # urllib's own checks (a bad IPv6 bracket, a bad port...)
        if isinstance(exc, InvalidURLError):
            raise
        raise InvalidURLError(
            f"store URL {shown!r} is malformed ({exc}): write etcd://host:port, "
            f"with IPv6 hosts in brackets: etcd://[::1]:2379"
        ) from None


def _parse(url: str, shown: str) -> StoreURL:
    scheme, _, rest = url.partition("://")
    scheme = scheme.lower()
    if scheme not in _SCHEMES:
        raise InvalidURLError(
            f"store URL {shown!r} names an unknown backend {scheme!r}: use one of "
            f"memory://, sqlite:///path.db, etcd://host:port"
        )
    location, _, query = rest.partition("?")
    options = dict(parse_qsl(query, keep_blank_values=True, strict_parsing=False))
    unknown = set(options) - _OPTIONS[scheme]
    if unknown:
        raise InvalidURLError(
            f"store URL option(s) {', '.join(sorted(unknown))} not known for {scheme}: "
            f"use {', '.join(sorted(_OPTIONS[scheme]))}"
        )
    root = options.pop("root", DEFAULT_ROOT)
    if not root.strip("/"):
        raise InvalidURLError("root= is empty: give a prefix such as /keel/ or /staging/")
    root = "/" + root.strip("/") + "/"
    max_text = options.pop("max_value_bytes", str(DEFAULT_MAX_VALUE_BYTES))
    if not max_text.isdigit() or int(max_text) < 1:
        raise InvalidURLError(f"max_value_bytes={max_text!r}: give a positive whole number")
    common: dict[str, Any] = {"root": root, "max_value_bytes": int(max_text), "options": options}
    if scheme == "memory":
        if location:
            raise InvalidURLError(f"memory:// takes no host or path, got {location!r}")
        return StoreURL("memory", **common)
    if scheme == "sqlite":
        path = unquote(location[1:] if location.startswith("/") else location)
        if "\x00" in path:
            raise InvalidURLError(f"sqlite URL {shown!r}: the path contains a NUL byte: remove it")
        if location and not location.startswith("/"):
            raise InvalidURLError(
                f"sqlite URL {shown!r}: write sqlite:///relative/path.db or "
                f"sqlite:////absolute/path.db (the path comes after the third '/')"
            )
        return StoreURL("sqlite", path=path or DEFAULT_SQLITE_PATH, **common)
    parts = urlsplit("etcd://" + location)
    netloc = location.rpartition("@")[2]
    if not netloc or parts.path not in ("", "/"):
        raise InvalidURLError(
            f"etcd URL {shown!r} needs host:port endpoints and no path: "
            f"etcd://127.0.0.1:2379[,host:port...]"
        )
    user = unquote(parts.username) if parts.username else None
    password = unquote(parts.password) if parts.password else None
    if user and password is None:
        raise InvalidURLError("etcd URL names a user but no password: write etcd://user:pass@h:p")
    return StoreURL(
        "etcd",
        endpoints=_parse_endpoints(netloc),
        user=user,
        password=password,
        **common,
    )
