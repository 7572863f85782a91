"""Bad input to ``keel``: one line on stderr, a documented exit code, no traceback, no change."""

from __future__ import annotations

import asyncio
import signal
import subprocess
from pathlib import Path

import pytest

import keel
from keel.testing import free_port
from tests.cli._cli import KEEL, Arg, keel_cli, keel_env, snapshot

HUGE = "99999999999999999999"  # > 2**64: overflowed SQLite's INTEGER

# (argv after --store, expected exit code, a fragment of the one error line)
CASES: list[tuple[list[Arg], int, str]] = [
    (["store", "lease", "ttl", HUGE], 2, "out of range"),
    (["store", "lease", "revoke", HUGE], 2, "out of range"),
    (["store", "lease", "revoke", "0x8000000000000000"], 2, "out of range"),
    (["store", "put", "--lease", HUGE, "k", "v"], 2, "out of range"),
    (["store", "put", "--lease", "zz", "k", "v"], 2, "not a number"),
    (["store", "lease", "ttl", "12345"], 1, "not found"),
    (["store", "put", b"\xff", "v"], 2, "UTF-8"),
    (["store", "put", "k", b"\xff"], 2, "--file"),
    (["store", "get", b"\xffkey"], 2, "UTF-8"),
    (["store", "put", "", "v"], 2, "key is empty"),
    (["store", "get", ""], 2, "key is empty"),
    (["store", "put", "/keel/abs", "v"], 2, "outside the store's root"),
    (["store", "put", "x" * 5000, "v"], 2, "longer than"),
    (["store", "put", "k"], 2, "exactly one"),
    (["store", "put", "k", "v", "--file", "-"], 2, "exactly one"),
    (["store", "put", "k", "--file", "/no/such/file"], 2, "cannot read"),
    (["store", "rm", "", "--prefix"], 2, "--yes"),
    (["store", "lease", "grant", "-5"], 2, "No such option"),
    (["store", "lease", "grant", "0"], 2, "greater than or equal to 1"),
    (["store", "lease", "grant", "1.5"], 2, "integer"),
    (["store", "lease", "grant", HUGE], 2, "9000000000"),
    (["store", "ls", "--limit", "-1"], 2, "--limit"),
    (["store", "ls", "--limit", HUGE], 2, "--limit"),
    (["store", "ls", "--revision", "-5"], 2, "--revision"),
    (["store", "ls", "--revision", "999"], 2, "in the future"),
    (["store", "ls", "--nosuch"], 2, "No such option"),
    (["store", "watch", "--rev", "-3"], 2, "--rev"),
    (["store", "watch", "--count", "-1"], 2, "--count"),
    (["store", "compact", "999"], 2, "in the future"),
    (["store", "compact", "0"], 2, "greater than or equal to 1"),
    (["store", "compact", HUGE], 2, "less than or equal to"),
    (["nosuch"], 2, "No such command"),
    (["lock", "job"], 2, "Missing argument"),
    (["lock", "job", "--"], 2, "give the command"),
    (["lock", "--timeout", "nan", "job", "--", "true"], 2, "--timeout"),
    (["lock", "--timeout", "-1", "job", "--", "true"], 2, "--timeout"),
    (["lock", "--ttl", "0", "job", "--", "true"], 2, "ttl"),
    (["lock", "job", "--", "/no/such/command"], 2, "cannot run"),
    (["lock", "", "--", "true"], 2, "not valid"),
    (["lock", b"\xff", "--", "true"], 2, "UTF-8"),
    (["leader", ""], 2, "not valid"),
]


@pytest.fixture
async def seeded(tmp_path: Path) -> str:
    """A SQLite store holding a few keys and a lease."""
    url = f"sqlite:///{tmp_path / 'k.db'}"
    async with keel.connect(url) as store:
        lease = await store.grant(600)
        await store.put("a", b"1")
        await store.put("b", b"2", lease=lease.id)
    return url


def _assert_one_line(result_err: list[str], code: int, want_code: int, fragment: str) -> None:
    assert code == want_code, result_err
    assert len(result_err) == 1, result_err
    assert result_err[0].startswith("keel: error: "), result_err
    assert fragment in result_err[0], result_err


@pytest.mark.parametrize(("args", "code", "fragment"), CASES, ids=lambda v: repr(v)[:40])
async def test_bad_input_is_one_line_and_changes_nothing(
    seeded: str, args: list[Arg], code: int, fragment: str
) -> None:
    """Each bad input: the documented exit code, one 'keel: error:' line, no traceback, no write."""
    before = await snapshot(seeded)
    result = await asyncio.to_thread(keel_cli, *args, url=seeded)
    assert b"Traceback" not in result.err
    _assert_one_line(result.err_lines, result.code, code, fragment)
    assert result.out == b""
    assert await snapshot(seeded) == before


BAD_URLS: list[tuple[str, str]] = [
    ("etcd://[::1:2379", "malformed"),
    ("etcd://localhost", "has no port"),
    ("etcd://h:99999", "1-65535"),
    ("etcd://h:1/path", "no path"),
    ("mysql://x", "unknown backend"),
    ("sqlite://rel.db", "sqlite:///relative/path.db"),
    ("sqlite:///a%00b.db", "NUL"),
    ("memory://?nosuch=1", "not known"),
    ("sqlite://?max_value_bytes=-1", "max_value_bytes"),
    ("nourl", "malformed"),
]


@pytest.mark.parametrize(("url", "fragment"), BAD_URLS)
def test_bad_store_url_is_one_line(url: str, fragment: str) -> None:
    """A malformed --store URL is refused with one line and exit 2."""
    result = keel_cli("store", "ls", url=url)
    assert b"Traceback" not in result.err
    _assert_one_line(result.err_lines, result.code, 2, fragment)


@pytest.mark.parametrize(
    "args",
    [["store", "ls"], ["store", "put", "k", "v"], ["lock", "job", "--", "true"], ["locks"]],
)
def test_unreachable_etcd_is_one_line(args: list[str]) -> None:
    """An etcd URL with nothing listening: exit 3 (unavailable), one line naming the endpoint."""
    port = free_port()
    result = keel_cli(*args, url=f"etcd://127.0.0.1:{port}?timeout_s=1")
    assert b"Traceback" not in result.err
    _assert_one_line(result.err_lines, result.code, 3, f"127.0.0.1:{port}")


def test_debug_adds_the_traceback() -> None:
    """keel --debug prints the traceback, then the same one-line error, exit 2."""
    plain = keel_cli("store", "ls", url="etcd://[::1:2379")
    debug = keel_cli("--debug", "store", "ls", url="etcd://[::1:2379")
    assert debug.code == plain.code == 2
    assert b"Traceback" in debug.err and b"Traceback" not in plain.err
    assert debug.err_lines[-1] == plain.err_lines[0]


def test_ctrl_c_exits_130_without_a_traceback(tmp_path: Path) -> None:
    """SIGINT to a running 'keel store watch' ends it with 130 and nothing on stderr."""
    url = f"sqlite:///{tmp_path / 'k.db'}"
    assert keel_cli("store", "put", "a", "1", url=url).code == 0
    proc = subprocess.Popen(
        [KEEL, "--store", url, "store", "watch", "--rev", "1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=keel_env(),
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().startswith(b"PUT a")  # the watch is running
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 130
    assert b"Traceback" not in err
