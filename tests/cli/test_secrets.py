"""A password in a store URL never shows: not in errors, reprs, status output or logs."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator

import pytest

import keel
from keel.errors import InvalidURLError, KeelError
from keel.store import parse_url, redact_url
from keel.testing import EtcdCluster, free_port
from tests.cli._cli import keel_cli

SECRET = "s3cret-Pw"

MALFORMED = [
    f"etcd://alice:{SECRET}@[::1:2379",
    f"etcd://alice:{SECRET}@localhost",
    f"etcd://alice:{SECRET}@h:1/path",
    f"etcd://alice:{SECRET}@h:99999",
    f"etcd://alice:{SECRET}@h:1?nosuch=1",
    f"etcd://alice:{SECRET}/x@h:1",
    f"etcd://alice:{SECRET}@x@h:1/p",
    f"etcd://alice:{SECRET}@h:1?password={SECRET}x&bad=1",
    f"mysql://alice:{SECRET}@h:1",
    f"etcd://alice:{SECRET}@h:1?max_value_bytes=x",
]


@pytest.mark.parametrize("url", MALFORMED)
def test_parse_errors_hide_the_password(url: str) -> None:
    """InvalidURLError quotes a malformed URL with user:***@, never the password."""
    with pytest.raises(InvalidURLError) as info:
        parse_url(url)
    assert SECRET not in str(info.value)
    assert SECRET not in repr(info.value)


@pytest.mark.parametrize("url", MALFORMED[:4])
def test_cli_parse_errors_hide_the_password(url: str) -> None:
    """keel --store URL with a malformed URL: one line, exit 2, no password."""
    result = keel_cli("store", "ls", url=url)
    assert result.code == 2 and len(result.err_lines) == 1
    assert SECRET.encode() not in result.err + result.out


def test_redact_url_keeps_the_user() -> None:
    """redact_url shows which user, never the secret, and leaves URLs without one alone."""
    assert redact_url(f"etcd://alice:{SECRET}@h:1,h:2") == "etcd://alice:***@h:1,h:2"
    assert redact_url("etcd://h:1?root=/a/") == "etcd://h:1?root=/a/"
    assert SECRET not in redact_url(f"etcd://h:1?token={SECRET}")


def test_parsed_url_repr_and_str_hide_the_password() -> None:
    """repr() and str() of a parsed URL show user:***@; the password is still usable."""
    parsed = parse_url(f"etcd://alice:{SECRET}@[::1]:2379,h:2?root=/a/")
    for text in (repr(parsed), str(parsed), parsed.redacted(), f"{parsed}", f"{parsed!r}"):
        assert SECRET not in text and "alice:***@" in text
    assert parsed.password == SECRET
    assert "[::1]:2379" in str(parsed)


async def test_store_repr_and_connection_failure_hide_the_password(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Nothing listening: the error, the store's repr and the logs carry no password."""
    port = free_port()
    caplog.set_level(logging.DEBUG, logger="keel")
    lazy = await keel.connect(f"etcd://alice:{SECRET}@127.0.0.1:{port}?lazy=1&timeout_s=1")
    try:
        assert SECRET not in repr(lazy)
        with pytest.raises(KeelError) as info:
            await lazy.get("k")
        assert SECRET not in str(info.value)
    finally:
        await lazy.close()
    with pytest.raises(KeelError) as info:
        await keel.connect(f"etcd://alice:{SECRET}@127.0.0.1:{port}?timeout_s=1")
    assert SECRET not in str(info.value) and f"127.0.0.1:{port}" in str(info.value)
    assert SECRET not in caplog.text


def test_cli_connection_failure_hides_the_password() -> None:
    """keel with an etcd URL to a closed port: exit 3, the endpoint named, no password."""
    port = free_port()
    result = keel_cli("store", "status", url=f"etcd://alice:{SECRET}@127.0.0.1:{port}?timeout_s=1")
    assert result.code == 3 and len(result.err_lines) == 1
    assert f"127.0.0.1:{port}".encode() in result.err
    assert SECRET.encode() not in result.err + result.out


@pytest.fixture(scope="module")
def auth_etcd() -> Iterator[EtcdCluster]:
    """An etcd member of its own with auth on and a root user whose password is SECRET."""
    with EtcdCluster(1) as cluster:
        cluster.enable_auth(SECRET)
        yield cluster


@pytest.mark.etcd
async def test_status_and_repr_with_auth_hide_the_password(auth_etcd: EtcdCluster) -> None:
    """Connected with user:password: status (table and JSON) and repr show root:*** only."""
    url = auth_etcd.url.replace("etcd://", f"etcd://root:{SECRET}@")
    async with keel.connect(url) as store:
        assert SECRET not in repr(store)
        status = await store.status()
        assert SECRET not in repr(status)
    table = keel_cli("store", "status", url=url)
    as_json = keel_cli("store", "status", "--json", url=url)
    assert table.code == 0 and as_json.code == 0, table.err
    assert SECRET.encode() not in table.out + table.err + as_json.out + as_json.err
    assert json.loads(as_json.out)["url"].startswith("etcd://root:***@")


@pytest.mark.etcd
def test_wrong_password_error_hides_both(auth_etcd: EtcdCluster) -> None:
    """A refused password is reported without the password given."""
    url = auth_etcd.url.replace("etcd://", "etcd://root:Wrong-Pw-42@")
    result = keel_cli("store", "ls", url=url)
    assert result.code == 2 and len(result.err_lines) == 1
    assert b"Wrong-Pw-42" not in result.err and SECRET.encode() not in result.err
