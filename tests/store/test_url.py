"""Store URLs: every documented form parses; bad ones name the problem and the fix."""

from __future__ import annotations

import pytest

from keel.errors import InvalidURLError
from keel.store import DEFAULT_ROOT, default_url, parse_url


def test_memory() -> None:
    """memory:// has no location and the default root."""
    url = parse_url("memory://")
    assert (url.scheme, url.root) == ("memory", DEFAULT_ROOT)


@pytest.mark.parametrize(
    ("text", "path"),
    [
        ("sqlite://", ".keel/keel.db"),
        ("sqlite:///data/k.db", "data/k.db"),
        ("sqlite:////var/lib/keel/k.db", "/var/lib/keel/k.db"),
    ],
)
def test_sqlite_paths(text: str, path: str) -> None:
    """Three slashes: relative path; four: absolute; none: the embedded default."""
    assert parse_url(text).path == path


def test_etcd_endpoints_auth_and_options() -> None:
    """etcd URLs carry endpoints, credentials, TLS options and a root."""
    url = parse_url("etcd://alice:s%40cret@10.0.0.1:2379,[::1]:2380?root=staging&ca_file=ca.pem")
    assert url.endpoints == (("10.0.0.1", 2379), ("::1", 2380))
    assert (url.user, url.password) == ("alice", "s@cret")
    assert url.root == "/staging/"
    assert url.options == {"ca_file": "ca.pem"}
    assert "s@cret" not in url.redacted() and "s@cret" not in repr(url)


def test_max_value_bytes_option() -> None:
    """max_value_bytes is read from the query."""
    assert parse_url("memory://?max_value_bytes=10").max_value_bytes == 10


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("localhost:2379", "malformed"),
        ("redis://h:1", "unknown backend"),
        ("etcd://", "host:port"),
        ("etcd://h", "no port"),
        ("etcd://h:x", "bad port"),
        ("etcd://h:70000", "1-65535"),
        ("etcd://bob@h:1", "no password"),
        ("sqlite://rel.db", "sqlite:///relative/path.db"),
        ("memory://?root=/", "root= is empty"),
        ("memory://?colour=blue", "not known for memory"),
        ("memory://?max_value_bytes=-1", "positive whole number"),
        ("memory://somewhere", "takes no host"),
    ],
)
def test_bad_urls(text: str, message: str) -> None:
    """Each malformed URL raises InvalidURLError saying what to write instead."""
    with pytest.raises(InvalidURLError, match=message):
        parse_url(text)


def test_keel_store_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """KEEL_STORE gives the default URL; without it the embedded SQLite file is used."""
    monkeypatch.delenv("KEEL_STORE", raising=False)
    assert default_url() == "sqlite://"
    monkeypatch.setenv("KEEL_STORE", "memory://")
    assert default_url() == "memory://"
