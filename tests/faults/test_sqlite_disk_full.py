"""A full disk under a SQLite store: the write fails loudly, and the store recovers."""

from __future__ import annotations

import errno
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

import keel
from keel.errors import StoreUnavailableError
from tests.backends.sqlite._procs import check_file

pytestmark = pytest.mark.slow


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 4 MiB tmpfs mounted for this test (needs root), unmounted at teardown."""
    mount = tmp_path / "disk"
    mount.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)],
        capture_output=True,
        check=False,
        timeout=30,
    )
    assert done.returncode == 0, f"as root, a tmpfs must mount: {done.stderr.decode().strip()}"
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False, timeout=30)


def fill(path: Path) -> None:
    """Write zeros to ``path`` until the filesystem is full."""
    chunk = b"\0" * 65536
    with path.open("wb", buffering=0) as out:
        while True:
            try:
                out.write(chunk)
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
                chunk = chunk[: len(chunk) // 2]
                if not chunk:
                    return


async def test_a_full_disk_fails_the_write_and_the_store_recovers(small_disk: Path) -> None:
    """With no space a put raises StoreUnavailable (never a false success); freeing space heals."""
    db = small_disk / "data" / "keel.db"
    url = f"sqlite:///{db}"
    big = os.urandom(512 * 1024)
    async with keel.connect(url) as store:
        before = await store.put("small", b"v")
        filler = small_disk / "filler"
        fill(filler)
        for attempt in range(3):
            with pytest.raises(StoreUnavailableError, match="disk is full"):
                await store.put(f"big/{attempt}", big)
        assert await store.get("big/0") is None
        _, now = await store.range("")
        assert now == before
        filler.unlink()
        rev = await store.put("big/0", big)
        assert rev == before + 1
        kv = await store.get("big/0")
        assert kv is not None and kv.value == big
    revision, revs = check_file(db)
    assert revision == rev and revs == list(range(2, rev + 1))
