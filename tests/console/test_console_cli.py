"""``keel console``: serve, adduser, passwd, users, rmuser as real processes on a SQLite store."""

from __future__ import annotations

import asyncio
import json
import os
import signal
from pathlib import Path

import httpx
import pytest
from tests.console._core import KEEL, PASSWORD, keel

import keel as keel_pkg
from keel.console._sessions import Sessions

pytestmark = pytest.mark.slow  # keel processes: a few seconds each on a busy machine


async def test_user_commands(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'keel.db'}"
    code, out, err = await keel(
        "console", "adduser", "ada", "--role", "admin", "--password-stdin",
        url=url, stdin=PASSWORD.encode() + b"\n",
    )  # fmt: skip
    assert code == 0 and "ada added (admin)" in out, err
    short = await keel(
        "console", "adduser", "bob", "--password-stdin", url=url, stdin=b"short\n"
    )  # fmt: skip
    assert short[0] == 2 and short[2].count("\n") == 1 and "short" not in short[2]
    as_argument = await keel("console", "adduser", "bob", "--password", PASSWORD, url=url)
    assert as_argument[0] == 2  # there is no such option: passwords never go in argv
    no_tty = await keel("console", "adduser", "bob", url=url)
    assert no_tty[0] == 2 and "--password-stdin" in no_tty[2]
    code, out, err = await keel("console", "users", "-o", "json", url=url)
    assert code == 0 and json.loads(out)[0]["name"] == "ada" and "argon2" not in out
    async with keel_pkg.connect(url) as store:
        token, _ = await Sessions(store).create("ada")
    code, out, err = await keel(
        "console", "passwd", "ada", "--password-stdin", url=url, stdin=b"another password\n"
    )  # fmt: skip
    assert code == 0 and "1 session(s) ended" in out, err
    async with keel_pkg.connect(url) as store:
        assert await Sessions(store).get(token) is None
    last = await keel("console", "rmuser", "ada", url=url)
    assert last[0] != 0 and "last admin" in last[2]
    for output in (out, err, last[1], last[2]):
        assert PASSWORD not in output and "another password" not in output


async def test_serve_prints_its_address_and_the_first_user_hint(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'keel.db'}"
    refused = await keel("console", "--host", "0.0.0.0", url=url)
    assert refused[0] == 2 and "without TLS" in refused[2]
    env = {k: v for k, v in os.environ.items() if k != "KEEL_STORE"}
    proc = await asyncio.create_subprocess_exec(
        KEEL, "--store", url, "console", "--port", "0",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env,
    )  # fmt: skip
    assert proc.stdout is not None
    try:
        async with asyncio.timeout(30):
            first = (await proc.stdout.readline()).decode()
            second = (await proc.stdout.readline()).decode()
            third = (await proc.stdout.readline()).decode()
        assert first.startswith("keel console: serving http://127.0.0.1:")
        assert "keel console adduser NAME --role admin" in second
        address = first.split()[-1]
        link = third.split()[-1]
        assert third.startswith("keel console: or open once: ") and link.startswith(address)
        async with httpx.AsyncClient() as http:
            setup = await http.get(link)
            assert setup.status_code == 200 and "Create the first admin" in setup.text
            login = await http.get(f"{address}/login")
            assert login.status_code == 200 and "keel console adduser" in login.text
            assert (await http.get(f"{address}/")).status_code == 401
        proc.send_signal(signal.SIGINT)
        async with asyncio.timeout(30):
            await proc.wait()
        assert proc.returncode == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
