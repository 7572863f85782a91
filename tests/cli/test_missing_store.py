"""Read-only commands on a SQLite path that does not exist say so; they create nothing."""

from __future__ import annotations

from pathlib import Path

import pytest

import keel
from keel.errors import StoreNotFoundError
from tests.cli._cli import keel_cli

READ_ONLY = [
    ["store", "ls"],
    ["store", "get", "k"],
    ["store", "status"],
    ["store", "watch", "--count", "1"],
    ["store", "lease", "ttl", "1"],
    ["locks"],
    ["leader", "x"],
]


@pytest.mark.parametrize("args", READ_ONLY, ids=" ".join)
def test_read_only_command_on_a_missing_file(tmp_path: Path, args: list[str]) -> None:
    """One 'no store at /abs/path' line, exit 1, and neither the file nor its directory made."""
    path = tmp_path / "no" / "such" / "dir" / "x.db"
    result = keel_cli(*args, url=f"sqlite:///{path}")
    assert result.code == 1, result.err
    assert result.err_lines == [
        f"keel: error: no store at {path}: the file does not exist; check the path, "
        f"or run a command that writes to create it"
    ]
    assert result.out == b""
    assert not (tmp_path / "no").exists()


def test_a_write_still_creates_the_store(tmp_path: Path) -> None:
    """store put creates a missing SQLite file; ls then reads it."""
    url = f"sqlite:///{tmp_path / 'new' / 'k.db'}"
    assert keel_cli("store", "put", "k", "v", url=url).code == 0
    listed = keel_cli("store", "ls", "--json", url=url)
    assert listed.code == 0 and b'"key": "k"' in listed.out


async def test_connect_create_false(tmp_path: Path) -> None:
    """keel.connect(url, create=False) raises StoreNotFoundError for a missing file only."""
    url = f"sqlite:///{tmp_path / 'k.db'}"
    with pytest.raises(StoreNotFoundError, match="no store at"):
        await keel.connect(url, create=False)
    assert not (tmp_path / "k.db").exists()
    async with keel.connect(url) as store:
        await store.put("k", b"v")
    async with keel.connect(url, create=False) as store:
        assert (await store.get("k")) is not None
    async with keel.connect("memory://", create=False) as store:
        assert (await store.get("k")) is None
