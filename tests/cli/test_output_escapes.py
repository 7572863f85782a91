"""Keys and values from the store reach a terminal escaped, never as raw control codes."""

from __future__ import annotations

import asyncio
import os
import pty
import subprocess
from pathlib import Path

import pytest

import keel
from keel.cli._common import printable, printable_bytes
from keel.coord import Election, Lock, Session
from tests.cli._cli import KEEL, keel_cli, keel_env

TITLE = "\x1b]0;pwned\x07"  # sets the terminal's title
CLEAR = "\x1b[2J"  # clears the screen
KEY = f"esc/{CLEAR}k"
VALUE = f"{TITLE} and {CLEAR}\u202eevil".encode()
RAW = (b"\x1b", b"\x07", "\u202e".encode())


def _assert_escaped(out: bytes) -> None:
    for raw in RAW:
        assert raw not in out, out
    assert b"\\x1b" in out, out


@pytest.fixture
async def url(tmp_path: Path) -> str:
    """A SQLite store holding one key and value full of terminal escape codes."""
    url = f"sqlite:///{tmp_path / 'k.db'}"
    async with keel.connect(url) as store:
        lease = await store.grant(600)
        await store.put(KEY, VALUE, lease=lease.id)
    return url


def test_printable_escapes_controls_only() -> None:
    """Controls, format characters and separators become escapes; other text stays."""
    assert printable(f"a{CLEAR}b\n\tc\u202ed\u2028") == "a\\x1b[2Jb\\n\\tc\\u202ed\\u2028"
    assert printable("zoë 東京 ok") == "zoë 東京 ok"
    assert printable("\x85\U000e0001") == "\\x85\\U000e0001"
    assert printable_bytes(b"\xff\x1b ok\xc3\xa9") == "\\xff\\x1b oké"


@pytest.mark.parametrize(
    "args",
    [
        ["store", "ls"],
        ["store", "ls", "esc/"],
        ["store", "watch", "--rev", "1", "--count", "1"],
    ],
)
def test_listings_escape_keys_and_values(url: str, args: list[str]) -> None:
    """ls and watch show escape codes of keys and values as text."""
    result = keel_cli(*args, url=url)
    assert result.code == 0, result.err
    _assert_escaped(result.out)


def test_lease_ttl_escapes_keys(url: str) -> None:
    """lease ttl lists a lease's keys escaped."""
    granted = keel_cli("store", "ls", "--json", url=url).out
    lease = str(__import__("json").loads(granted)[0]["lease"])
    result = keel_cli("store", "lease", "ttl", lease, url=url)
    assert result.code == 0, result.err
    _assert_escaped(result.out)


def test_json_output_has_no_raw_controls(url: str) -> None:
    """--json output escapes controls the JSON way."""
    for args in (["store", "ls", "--json"], ["store", "get", "--json", KEY]):
        result = keel_cli(*args, url=url)
        assert result.code == 0, result.err
        for raw in RAW[:2]:
            assert raw not in result.out


def test_get_to_a_pipe_is_raw(url: str) -> None:
    """get writes the value's bytes as they are when stdout is not a terminal."""
    result = keel_cli("store", "get", KEY, url=url)
    assert result.code == 0 and result.out == VALUE


def _get_on_a_terminal(url: str, *extra: str) -> bytes:
    leader, follower = pty.openpty()
    try:
        proc = subprocess.run(
            [KEEL, "--store", url, "store", "get", *extra, KEY],
            stdout=follower,
            stderr=subprocess.PIPE,
            env=keel_env(),
            timeout=60,
            check=False,
        )
        assert proc.returncode == 0, proc.stderr
        os.close(follower)
        follower = -1
        chunks = []
        while True:
            try:
                chunk = os.read(leader, 4096)
            except OSError:  # EIO: the terminal's other side is closed and drained
                break
            if not chunk:
                break
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(leader)
        if follower >= 0:
            os.close(follower)


def test_get_on_a_terminal_escapes_unless_raw(url: str) -> None:
    """get on a terminal shows the value escaped; --raw writes the bytes."""
    _assert_escaped(_get_on_a_terminal(url))
    assert VALUE in _get_on_a_terminal(url, "--raw")


def test_errors_escape_the_key(url: str) -> None:
    """A missing key with escape codes is named escaped in the one error line."""
    result = keel_cli("store", "get", f"nope{CLEAR}", url=url)
    assert result.code == 1 and len(result.err_lines) == 1
    assert b"\x1b" not in result.err


async def _keel(url: str, *args: str) -> bytes:
    proc = await asyncio.create_subprocess_exec(
        KEEL, "--store", url, *args, stdout=subprocess.PIPE, env=keel_env()
    )
    async with asyncio.timeout(60):
        out, _ = await proc.communicate()
    assert proc.returncode == 0
    return out


async def test_leader_and_locks_escape_names_and_values(url: str) -> None:
    """leader shows an escaped leader value; locks shows an escaped lock name."""
    async with keel.connect(url) as store, Session(store, ttl_s=10) as session:
        async with Election(session, "elect").campaign(VALUE):
            _assert_escaped(await _keel(url, "leader", "elect"))
        async with await Lock(session, f"job{CLEAR}").acquire():
            _assert_escaped(await _keel(url, "locks"))
