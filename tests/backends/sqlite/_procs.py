"""Helpers of the SQLite process tests: the child module and a file check."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Final

CHILD: Final = "tests.backends.sqlite._child"


def check_file(path: Path) -> tuple[int, list[int]]:
    """Run ``PRAGMA integrity_check`` and return (revision, distinct event revisions)."""
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        revision = conn.execute("SELECT value FROM meta WHERE name = 'revision'").fetchone()[0]
        revs = [r for (r,) in conn.execute("SELECT DISTINCT rev FROM events ORDER BY rev")]
    finally:
        conn.close()
    return int(revision), revs
