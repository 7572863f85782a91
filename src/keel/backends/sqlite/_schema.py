"""The on-disk layout of the SQLite backend, and how rows become records.

One database file holds every root (namespace): keys are stored as the UTF-8
bytes of ``root + key`` in a ``BLOB`` column, so SQLite's ``memcmp`` order is
etcd's byte order and a prefix is one index range ``[prefix, successor)``.

Tables::

    meta(name, value)      revision, compact_revision, events (rows kept), boot_id, schema
    kv(key, value, create_rev, mod_rev, version, lease)       the current state
    events(rev, idx, type, key, value, create_rev, version, lease,
           p_value, p_create, p_mod, p_version, p_lease)      the event log
    leases(id, ttl, deadline)                                 live leases

The event log carries ``prev_kv`` with every event, so it serves watch replay,
the live tail of every process, and reads at a past revision (the current
state with the newer events undone) from one table.
"""

from __future__ import annotations

import os
import sqlite3
from typing import Final

from keel.errors import ValidationError
from keel.store import Event, EventType, KeyValue

__all__ = [
    "EVENT_COLUMNS",
    "KV_COLUMNS",
    "SCHEMA_VERSION",
    "EventRow",
    "check_schema",
    "connect",
    "event_row",
    "file_size",
    "init_schema",
    "key_span",
    "read_meta",
    "row_to_event",
    "row_to_kv",
]

SCHEMA_VERSION: Final = 1
KV_COLUMNS: Final = "key, value, create_rev, mod_rev, version, lease"
EVENT_COLUMNS: Final = (
    "rev, type, key, value, create_rev, version, lease, "
    "p_value, p_create, p_mod, p_version, p_lease"
)
_WAL_SIZE_LIMIT: Final = 64 * 1024 * 1024  # truncate the WAL back to this after checkpoints

_DDL: Final = """
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value ANY NOT NULL) STRICT;
CREATE TABLE IF NOT EXISTS kv (
    key BLOB PRIMARY KEY, value BLOB NOT NULL, create_rev INTEGER NOT NULL,
    mod_rev INTEGER NOT NULL, version INTEGER NOT NULL, lease INTEGER NOT NULL
) WITHOUT ROWID, STRICT;
CREATE INDEX IF NOT EXISTS kv_by_lease ON kv (lease) WHERE lease != 0;
CREATE TABLE IF NOT EXISTS events (
    rev INTEGER NOT NULL, idx INTEGER NOT NULL, type INTEGER NOT NULL, key BLOB NOT NULL,
    value BLOB NOT NULL, create_rev INTEGER NOT NULL, version INTEGER NOT NULL,
    lease INTEGER NOT NULL, p_value BLOB, p_create INTEGER, p_mod INTEGER,
    p_version INTEGER, p_lease INTEGER, PRIMARY KEY (rev, idx)
) WITHOUT ROWID, STRICT;
CREATE TABLE IF NOT EXISTS leases (
    id INTEGER PRIMARY KEY, ttl INTEGER NOT NULL, deadline REAL NOT NULL
) STRICT;
CREATE INDEX IF NOT EXISTS leases_by_deadline ON leases (deadline);
"""

_PUT: Final = 0
_DELETE: Final = 1


def connect(
    path: str, *, synchronous: str, busy_timeout_s: float, read_only: bool
) -> sqlite3.Connection:
    """Open one connection in autocommit mode (transactions are explicit ``BEGIN``s)."""
    conn = sqlite3.connect(
        path, timeout=busy_timeout_s, isolation_level=None, check_same_thread=False
    )
    try:
        conn.execute(f"PRAGMA synchronous={synchronous}")
        conn.execute(f"PRAGMA journal_size_limit={_WAL_SIZE_LIMIT}")
        if read_only:
            conn.execute("PRAGMA query_only=1")
    except BaseException:
        conn.close()
        raise
    return conn


def init_schema(conn: sqlite3.Connection, path: str) -> None:
    """Create the tables and the first meta rows if missing (caller holds the write gate).

    A file that already holds tables must be a keel database of this schema
    version: another application's database, or one written by a newer keel,
    is refused (ValidationError) before anything is written to it.
    """
    mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
    if str(mode).lower() != "wal":
        raise sqlite3.OperationalError(f"could not switch the database to WAL (got {mode})")
    conn.execute("BEGIN IMMEDIATE")
    try:
        check_schema(conn, path)
        for statement in filter(None, (s.strip() for s in _DDL.split(";"))):
            conn.execute(statement)
        conn.executemany(
            "INSERT OR IGNORE INTO meta (name, value) VALUES (?, ?)",
            [
                ("schema", SCHEMA_VERSION),
                ("revision", 1),
                ("compact_revision", 0),
                ("events", 0),
                ("boot_id", ""),
            ],
        )
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


_TABLES: Final = frozenset({"meta", "kv", "events", "leases"})


def check_schema(conn: sqlite3.Connection, path: str) -> None:
    """Refuse a non-empty file that is not a keel database of ``SCHEMA_VERSION``."""
    tables = {
        str(name)
        for (name,) in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
        )
    }
    if not tables:
        return
    where = f"sqlite store {path}"
    foreign = sorted(tables - _TABLES)
    if foreign or "meta" not in tables:
        shown = ", ".join(foreign or sorted(tables))
        raise ValidationError(
            f"{where} is a SQLite database of another application (tables: {shown}), not "
            f"a keel store; nothing was changed: point the URL at a new file or at a keel "
            f"database"
        )
    try:
        row = conn.execute("SELECT value FROM meta WHERE name = 'schema'").fetchone()
    except sqlite3.OperationalError:
        row = None
    version = row[0] if row is not None else None
    if version == SCHEMA_VERSION:
        return
    if isinstance(version, int) and version > SCHEMA_VERSION:
        raise ValidationError(
            f"{where} has schema version {version}, written by a newer keel; this keel "
            f"reads version {SCHEMA_VERSION}; nothing was changed: upgrade keel in this "
            f"process to the version that wrote the file"
        )
    if version is None:
        raise ValidationError(
            f"{where} has a meta table but no keel schema version, so it is not a keel "
            f"store; nothing was changed: point the URL at a new file or at a keel database"
        )
    raise ValidationError(
        f"{where} has schema version {version!r}, which this keel (version "
        f"{SCHEMA_VERSION}) does not know; nothing was changed: point the URL at a new "
        f"file, or restore the keel database from a backup"
    )


def read_meta(conn: sqlite3.Connection) -> dict[str, int | str]:
    """Every meta row, by name."""
    return {name: value for name, value in conn.execute("SELECT name, value FROM meta")}


def key_span(full_key: bytes, prefix: bool) -> tuple[bytes, bytes | None]:
    """The ``[low, high)`` key range of a key (``high`` None: exactly ``low``)."""
    if not prefix:
        return full_key, None
    stripped = full_key.rstrip(b"\xff")
    if not stripped:
        raise ValueError("a prefix of only 0xff bytes has no upper bound")
    return full_key, stripped[:-1] + bytes([stripped[-1] + 1])


def row_to_kv(row: tuple[bytes, bytes, int, int, int, int], root_len: int) -> KeyValue:
    """A ``kv`` row (``KV_COLUMNS``) as a record with its root stripped."""
    key, value, create_rev, mod_rev, version, lease = row
    return KeyValue(key[root_len:].decode(), bytes(value), create_rev, mod_rev, version, lease)


EventRow = tuple[
    int,
    int,
    bytes,
    bytes,
    int,
    int,
    int,
    bytes | None,
    int | None,
    int | None,
    int | None,
    int | None,
]


def row_to_event(row: EventRow, root_len: int) -> Event:
    """An ``events`` row (``EVENT_COLUMNS``) as an Event with its root stripped."""
    rev, kind, key_bytes, value, create_rev, version, lease = row[:7]
    p_value, p_create, p_mod, p_version, p_lease = row[7:]
    key = key_bytes[root_len:].decode()
    prev = None
    if p_create is not None:
        assert p_value is not None and p_mod is not None
        prev = KeyValue(key, bytes(p_value), p_create, p_mod, p_version or 0, p_lease or 0)
    if kind == _DELETE:
        return Event(EventType.DELETE, KeyValue(key, b"", 0, rev, 0, 0), prev)
    return Event(EventType.PUT, KeyValue(key, bytes(value), create_rev, rev, version, lease), prev)


def event_row(rev: int, idx: int, event: Event, full_key: bytes) -> tuple[object, ...]:
    """The ``events`` row for one event (insert order: rev, idx, then ``EVENT_COLUMNS[1:]``)."""
    kv, prev = event.kv, event.prev_kv
    kind = _DELETE if event.type is EventType.DELETE else _PUT
    head = (rev, idx, kind, full_key, kv.value, kv.create_revision, kv.version, kv.lease)
    if prev is None:
        return (*head, None, None, None, None, None)
    return (*head, prev.value, prev.create_revision, prev.mod_revision, prev.version, prev.lease)


def file_size(path: str) -> int:
    """Bytes on disk of the database and its WAL."""
    total = 0
    for name in (path, path + "-wal"):
        try:
            total += os.path.getsize(name)
        except OSError:
            continue
    return total
