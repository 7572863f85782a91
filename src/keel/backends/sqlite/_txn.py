"""One write transaction: bump the revision, apply, append to the event log.

:class:`WriteTxn` runs in the writer thread inside ``BEGIN IMMEDIATE`` (held
by :class:`keel.backends.sqlite._worker.Worker`), so everything here is plain
synchronous SQL on one connection. It mirrors the memory backend rule for
rule: each step that changes something takes the next revision (gap-free,
because the counter is read and written inside the same exclusive
transaction), its events share that revision in apply order, and a step that
changes nothing takes none.

Retention: ``meta.events`` counts the rows of the event log. When it exceeds
``retention``, the compaction point moves to the revision of the oldest event
that keeps ``retention`` events (as the memory backend's ``history_limit``),
and older rows are deleted in the same transaction.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

from keel.backends.sqlite._schema import KV_COLUMNS, key_span, read_meta, row_to_kv
from keel.errors import CompactedError, LeaseNotFoundError, ValidationError
from keel.store import Compare, Delete, Get, KeyValue, Op, OpResult, Put, Range

__all__ = ["WriteTxn", "select_keys"]

_PUT = 0
_DELETE = 1
_INSERT_EVENT = (
    "INSERT INTO events (rev, idx, type, key, value, create_rev, version, lease, "
    "p_value, p_create, p_mod, p_version, p_lease) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)"
)
_KvRow = tuple[bytes, bytes, int, int, int, int]


def select_keys(conn: sqlite3.Connection, full: bytes, prefix: bool) -> list[bytes]:
    """The current full keys equal to ``full`` or under it, in byte order."""
    low, high = key_span(full, prefix)
    if high is None:
        rows = conn.execute("SELECT key FROM kv WHERE key = ?", (low,))
    else:
        rows = conn.execute(
            "SELECT key FROM kv WHERE key >= ? AND key < ? ORDER BY key", (low, high)
        )
    return [bytes(k) for (k,) in rows]


class WriteTxn:
    """The state of one write transaction on the writer's connection.

    Args:
        conn: the writer connection, inside ``BEGIN IMMEDIATE``.
        root: the store's root prefix (prepended to every key).
        retention: event-log rows to keep.
    """

    def __init__(self, conn: sqlite3.Connection, root: str, retention: int) -> None:
        meta = read_meta(conn)
        self.conn = conn
        self.revision = int(meta["revision"])
        self.compact_revision = int(meta["compact_revision"])
        self.events = int(meta["events"])
        self.boot_id = str(meta.get("boot_id", ""))
        self._root = root
        self._root_len = len(root.encode())
        self._retention = retention
        self._initial = (self.revision, self.compact_revision, self.events)
        self._rows: list[tuple[object, ...]] = []
        self._step_rows = 0

    # -- keys and records ---------------------------------------------------

    def full(self, key: str) -> bytes:
        """The stored form of a relative key."""
        return (self._root + key).encode()

    def _row(self, full: bytes) -> _KvRow | None:
        row: _KvRow | None = self.conn.execute(
            f"SELECT {KV_COLUMNS} FROM kv WHERE key = ?", (full,)
        ).fetchone()
        return row

    def get(self, key: str) -> KeyValue | None:
        """The current record of a relative key."""
        row = self._row(self.full(key))
        return None if row is None else row_to_kv(row, self._root_len)

    def range(self, key: str, prefix: bool, limit: int | None) -> list[KeyValue]:
        """The current records under a relative key or prefix, sorted."""
        keys = select_keys(self.conn, self.full(key), prefix)
        if limit:
            keys = keys[:limit]
        rows = (self._row(k) for k in keys)
        return [row_to_kv(r, self._root_len) for r in rows if r is not None]

    # -- steps ----------------------------------------------------------------

    def begin_step(self) -> int:
        """Start a step; return the revision its changes will carry."""
        self._step_rows = 0
        return self.revision + 1

    def end_step(self) -> None:
        """Finish a step: it took a revision only if it changed something."""
        if self._step_rows:
            self.revision += 1

    def _log(
        self, rev: int, kind: int, full: bytes, kv: tuple[bytes, int, int, int], prev: _KvRow | None
    ) -> None:
        tail = (None,) * 5 if prev is None else prev[1:]
        self._rows.append((rev, self._step_rows, kind, full, *kv, *tail))
        self._step_rows += 1

    def put(self, full: bytes, value: bytes, lease: int, rev: int) -> None:
        """Set a key at ``rev`` (version +1, or a new incarnation) and log the event."""
        prev = self._row(full)
        create, version = (rev, 1) if prev is None else (prev[2], prev[4] + 1)
        self._log(rev, _PUT, full, (value, create, version, lease), prev)
        self.conn.execute(
            "INSERT OR REPLACE INTO kv (key, value, create_rev, mod_rev, version, lease) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            (full, value, create, rev, version, lease),
        )

    def delete(self, full: bytes, rev: int) -> None:
        """Delete an existing key at ``rev`` and log the DELETE event with its prev_kv."""
        self._log(rev, _DELETE, full, (b"", 0, 0, 0), self._row(full))
        self.conn.execute("DELETE FROM kv WHERE key = ?", (full,))

    # -- the contract's txn ---------------------------------------------------

    def missing_lease(self, ops: Sequence[Op]) -> LeaseNotFoundError | None:
        """The error for the first Put naming a lease that does not exist, if any."""
        for op in ops:
            if not isinstance(op, Put) or not op.lease:
                continue
            if self.conn.execute("SELECT 1 FROM leases WHERE id = ?", (op.lease,)).fetchone():
                continue
            return LeaseNotFoundError(
                f"lease {op.lease} not found (expired or revoked): grant a new lease"
            )
        return None

    def run(
        self, compare: Sequence[Compare], success: Sequence[Op], failure: Sequence[Op]
    ) -> tuple[bool, list[OpResult]] | LeaseNotFoundError:
        """Evaluate the compares and apply one branch as one step."""
        ok = all(c.holds(self.get(c.key)) for c in compare)
        ops = success if ok else failure
        missing = self.missing_lease(ops)
        if missing is not None:
            return missing
        rev = self.begin_step()
        results = [self._apply(op, rev) for op in ops]
        self.end_step()
        return ok, results

    def _apply(self, op: Op, rev: int) -> OpResult:
        if isinstance(op, Put):
            self.put(self.full(op.key), op.value, op.lease or 0, rev)
            return None
        if isinstance(op, Get):
            return self.get(op.key)
        if isinstance(op, Range):
            return self.range(op.key, op.prefix, op.limit)
        assert isinstance(op, Delete)
        keys = select_keys(self.conn, self.full(op.key), op.prefix)
        for full in keys:
            self.delete(full, rev)
        return len(keys)

    # -- compaction and the end ------------------------------------------------

    def compact(self, revision: int) -> None:
        """Forget events before ``revision`` (the contract's rules checked first)."""
        if revision > self.revision:
            raise ValidationError(
                f"cannot compact at revision {revision}: it is in the future "
                f"(current {self.revision})"
            )
        if revision <= self.compact_revision:
            raise CompactedError(self.compact_revision)
        self._compact_to(revision)

    def _compact_to(self, revision: int) -> None:
        cur = self.conn.execute("DELETE FROM events WHERE rev < ?", (revision,))
        self.events -= max(0, cur.rowcount)
        self.compact_revision = revision

    def _retain(self) -> None:
        excess = self.events - self._retention
        if excess <= 0:
            return
        row = self.conn.execute(
            "SELECT rev FROM events ORDER BY rev, idx LIMIT 1 OFFSET ?", (excess,)
        ).fetchone()
        if row is not None and row[0] > self.compact_revision:
            self._compact_to(row[0])

    def finish(self) -> None:
        """Append the logged events, apply retention and store the counters."""
        if self._rows:
            self.conn.executemany(_INSERT_EVENT, self._rows)
            self.events += len(self._rows)
            self._rows.clear()
        self._retain()
        if (self.revision, self.compact_revision, self.events) == self._initial:
            return
        self.conn.executemany(
            "UPDATE meta SET value = ? WHERE name = ?",
            [
                (self.revision, "revision"),
                (self.compact_revision, "compact_revision"),
                (self.events, "events"),
            ],
        )
