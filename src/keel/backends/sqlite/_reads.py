"""Reads, each inside one read transaction (one WAL snapshot) on the reader thread.

A read at a past revision takes the current records of the span and undoes the
newer events of that span, newest first, using the ``prev_kv`` each event
carries, exactly as the memory backend does with its log. Every event newer
than any readable revision is kept (compaction only deletes events older than
``compact_revision``), so the undo is always complete.
"""

from __future__ import annotations

import sqlite3

from keel.backends.sqlite._schema import KV_COLUMNS, key_span, read_meta, row_to_kv
from keel.errors import CompactedError, ValidationError
from keel.store import KeyValue

__all__ = ["count_keys", "get", "range_at", "range_now", "revisions"]

_KvRow = tuple[bytes, bytes, int, int, int, int]


def _span_sql(prefix: bool) -> str:
    return "key >= ? AND key < ?" if prefix else "key = ?"


def _span_args(full: bytes, prefix: bool) -> tuple[bytes, ...]:
    low, high = key_span(full, prefix)
    return (low,) if high is None else (low, high)


def revisions(conn: sqlite3.Connection) -> tuple[int, int]:
    """The current revision and the compaction point."""
    meta = read_meta(conn)
    return int(meta["revision"]), int(meta["compact_revision"])


def get(conn: sqlite3.Connection, root: str, key: str) -> KeyValue | None:
    """The current record of one key."""
    full = (root + key).encode()
    row = conn.execute(f"SELECT {KV_COLUMNS} FROM kv WHERE key = ?", (full,)).fetchone()
    return None if row is None else row_to_kv(row, len(root.encode()))


def range_now(
    conn: sqlite3.Connection, root: str, key: str, prefix: bool, limit: int | None
) -> tuple[list[KeyValue], int]:
    """The current records of a span, sorted, and the current revision."""
    full = (root + key).encode()
    rows = conn.execute(
        f"SELECT {KV_COLUMNS} FROM kv WHERE {_span_sql(prefix)} ORDER BY key LIMIT ?",
        (*_span_args(full, prefix), limit or -1),
    )
    root_len = len(root.encode())
    kvs = [row_to_kv(r, root_len) for r in rows]
    return kvs, revisions(conn)[0]


def range_at(
    conn: sqlite3.Connection, root: str, key: str, prefix: bool, limit: int | None, revision: int
) -> tuple[list[KeyValue], int]:
    """The records of a span as of ``revision``, sorted, and the current revision.

    Raises:
        ValidationError: ``revision`` is in the future.
        CompactedError: ``revision`` is below the compaction point.
    """
    current, compact = revisions(conn)
    if revision > current:
        raise ValidationError(f"revision {revision} is in the future (current {current})")
    if revision < compact:
        raise CompactedError(compact)
    full = (root + key).encode()
    args = _span_args(full, prefix)
    where = _span_sql(prefix)
    state: dict[bytes, _KvRow] = {
        bytes(r[0]): r for r in conn.execute(f"SELECT {KV_COLUMNS} FROM kv WHERE {where}", args)
    }
    undo = conn.execute(
        "SELECT key, p_value, p_create, p_mod, p_version, p_lease FROM events "
        f"WHERE rev > ? AND {where} ORDER BY rev DESC, idx DESC",
        (revision, *args),
    )
    for k, p_value, p_create, p_mod, p_version, p_lease in undo:
        name = bytes(k)
        if p_create is None:
            state.pop(name, None)
        else:
            state[name] = (name, p_value, p_create, p_mod, p_version, p_lease)
    root_len = len(root.encode())
    kvs = [row_to_kv(state[k], root_len) for k in sorted(state)]
    return (kvs[:limit] if limit else kvs), current


def count_keys(conn: sqlite3.Connection, root: str) -> int:
    """How many keys live under ``root``."""
    low, high = key_span(root.encode(), True)
    row = conn.execute("SELECT count(*) FROM kv WHERE key >= ? AND key < ?", (low, high))
    return int(row.fetchone()[0])
