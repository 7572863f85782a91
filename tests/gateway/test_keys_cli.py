"""``keel gateway keys add|rm|ls`` as a real process: output, exit codes, no secret leaks."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

import keel
from tests.cli._cli import Result, keel_cli


def keys(url: str, *args: str) -> Result:
    """Run ``keel --store URL gateway keys ARGS`` as a real process."""
    return keel_cli("gateway", "keys", *args, url=url)


def _stored(url: str) -> list[str]:
    """The key records in the store, read in this process."""

    async def read() -> list[str]:
        async with keel.connect(url) as store:
            kvs, _ = await store.range("gateway/keys/")
            return [kv.key for kv in kvs]

    return asyncio.run(read())


@pytest.fixture
def url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'keel.db'}"


def test_add_ls_rm(url: str, tmp_path: Path) -> None:
    """add prints the key once on stdout (warning on stderr); ls never shows it; rm revokes."""
    added = keys(url, "add", "alice", "--note", "ci pipeline")
    assert added.code == 0, added.err
    secret = added.out.decode().strip()
    assert secret.startswith("keel_") and "\n" not in secret
    assert "only time" in added.err.decode() and secret not in added.err.decode()
    key_id = secret.split("_")[1]

    listings = {fmt: keys(url, "ls", "-o", fmt) for fmt in ("table", "json", "yaml")}
    for listed in listings.values():
        assert listed.code == 0, listed.err
        text = listed.out.decode()
        assert key_id in text and "alice" in text and "ci pipeline" in text
        assert secret not in text and secret.split("_", 2)[2] not in text
        assert "sha256" not in text and "hash" not in text
    rows = json.loads(listings["json"].out)
    assert [(r["id"], r["consumer"]) for r in rows] == [(key_id, "alice")]

    stored = b"".join(p.read_bytes() for p in tmp_path.iterdir() if p.is_file())
    assert key_id.encode() in stored  # the record is there (db or its WAL) ...
    assert secret.split("_", 2)[2].encode() not in stored  # ... but never the key

    removed = keys(url, "rm", key_id)
    assert removed.code == 0, removed.err
    assert _stored(url) == []


def test_exit_codes(url: str) -> None:
    """rm of an unknown key: 1; bad consumer or output format: 2, one line, nothing written."""
    missing = keys(url, "rm", "0123456789abcdef")
    assert missing.code == 1 and len(missing.err_lines) == 1
    assert "no API key" in missing.err.decode()
    bad = keys(url, "add", "bad\nname")
    assert bad.code == 2 and len(bad.err_lines) == 1, bad.err
    assert bad.out == b""
    assert keys(url, "ls", "-o", "xml").code == 2
    assert _stored(url) == []
