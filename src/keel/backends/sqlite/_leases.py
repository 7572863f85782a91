"""Leases in the ``leases`` table, and the clock their deadlines are read on.

The clock. A lease row stores its ``deadline`` as a reading of the store's
clock, which is :data:`keel.clock.SYSTEM_CLOCK` in production:
:func:`time.monotonic`, i.e. Linux ``CLOCK_MONOTONIC``. That clock is one
system-wide counter, so a deadline written by one process is compared
correctly by every other process on the host, and unlike wall-clock time it
does not jump when NTP or an operator sets the date (a jump would expire every
lease at once, or keep dead ones for hours). It restarts from zero at boot, so
each database records the kernel's boot id (``/proc/sys/kernel/random/boot_id``);
the first process to open the file after a reboot finds a different id and
expires every lease (their owners died with the old boot). Where there is no
boot id (non-Linux) that check is skipped. An injected ``clock`` (such as
:class:`keel.testing.FakeClock`) is for single-process tests only: its
readings mean nothing to other processes.

Expiry. Every write transaction first expires the leases that are due (so a
put on an expired lease fails as on the memory backend; the writer keeps a
lower bound of the deadlines, so this costs nothing until one may be due),
and every process runs a reaper (:meth:`SqliteStore._reap_forever`) that
checks every 250 ms with a cheap read and, if something is due, expires it in
one write. So a crashed owner's keys go away within TTL + 0.25 s while any
keel process has the file open. Each expired lease deletes its keys, sorted, in one revision,
as DELETE events.
"""

from __future__ import annotations

import math
import random
import sqlite3
from pathlib import Path

from keel.backends.sqlite._schema import key_span
from keel.backends.sqlite._txn import WriteTxn
from keel.errors import LeaseNotFoundError
from keel.store import Lease, LeaseInfo

__all__ = [
    "any_due",
    "check_boot",
    "current_boot_id",
    "expire_due",
    "grant",
    "keepalive",
    "live_leases",
    "revoke",
    "time_to_live",
]

_BOOT_ID_PATH = Path("/proc/sys/kernel/random/boot_id")
_ID_LOW = 1 << 40
_ID_HIGH = 1 << 52


def current_boot_id() -> str:
    """The kernel's boot id, or "" where the OS has none."""
    try:
        return _BOOT_ID_PATH.read_text().strip()
    except OSError:
        return ""


def revoke(txn: WriteTxn, lease_id: int) -> bool:
    """Delete a lease and, in one revision, its keys; return whether it existed."""
    if txn.conn.execute("DELETE FROM leases WHERE id = ?", (lease_id,)).rowcount == 0:
        return False
    keys = [
        bytes(k)
        for (k,) in txn.conn.execute("SELECT key FROM kv WHERE lease = ? ORDER BY key", (lease_id,))
    ]
    if keys:
        rev = txn.begin_step()
        for full in keys:
            txn.delete(full, rev)
        txn.end_step()
    return True


def expire_due(txn: WriteTxn, now: float) -> None:
    """Revoke every lease whose deadline has passed, oldest deadline first.

    Cheap when nothing can be due: ``txn.meta.next_deadline`` is a lower
    bound of every deadline (granting lowers it, keepalive and revoke only
    make the true minimum later, another process's commit makes the writer
    reload it), so the query runs only once that bound has passed, and then
    the bound is read again.
    """
    if now < txn.meta.next_deadline:
        return
    due = txn.conn.execute(
        "SELECT id FROM leases WHERE deadline <= ? ORDER BY deadline, id", (now,)
    ).fetchall()
    for (lease_id,) in due:
        revoke(txn, lease_id)
    (deadline,) = txn.conn.execute("SELECT min(deadline) FROM leases").fetchone()
    txn.meta.next_deadline = math.inf if deadline is None else float(deadline)


def check_boot(txn: WriteTxn, boot_id: str) -> None:
    """After a reboot (a new boot id), expire every lease: their deadlines are void."""
    if not boot_id or txn.meta.boot_id == boot_id:
        return
    for (lease_id,) in txn.conn.execute("SELECT id FROM leases ORDER BY id").fetchall():
        revoke(txn, lease_id)
    txn.conn.execute("UPDATE meta SET value = ? WHERE name = 'boot_id'", (boot_id,))
    txn.meta.boot_id = boot_id


def grant(txn: WriteTxn, ttl: int, now: float) -> Lease:
    """Create a lease with a fresh random id."""
    while True:
        lease_id = random.randrange(_ID_LOW, _ID_HIGH)
        if not txn.conn.execute("SELECT 1 FROM leases WHERE id = ?", (lease_id,)).fetchone():
            break
    deadline = now + ttl
    txn.conn.execute(
        "INSERT INTO leases (id, ttl, deadline) VALUES (?, ?, ?)", (lease_id, ttl, deadline)
    )
    txn.meta.next_deadline = min(txn.meta.next_deadline, deadline)
    return Lease(lease_id, ttl)


def keepalive(txn: WriteTxn, lease_id: int, now: float) -> int:
    """Move a live lease's deadline to now + TTL; return the TTL."""
    row = txn.conn.execute(
        "UPDATE leases SET deadline = ? + ttl WHERE id = ? RETURNING ttl", (now, lease_id)
    ).fetchone()
    if row is None:
        raise LeaseNotFoundError(f"lease {lease_id} not found (expired or revoked)")
    return int(row[0])


def any_due(conn: sqlite3.Connection, now: float) -> bool:
    """Whether some lease's deadline has passed (a read, for the reaper)."""
    return (
        conn.execute("SELECT 1 FROM leases WHERE deadline <= ? LIMIT 1", (now,)).fetchone()
        is not None
    )


def time_to_live(
    conn: sqlite3.Connection, lease_id: int, now: float, root: str
) -> LeaseInfo | None:
    """A live lease's remaining TTL and its keys under ``root``, or None."""
    row = conn.execute("SELECT ttl, deadline FROM leases WHERE id = ?", (lease_id,)).fetchone()
    if row is None or row[1] <= now:
        return None
    ttl, deadline = row
    low, high = key_span(root.encode(), True)
    keys = conn.execute(
        "SELECT key FROM kv WHERE lease = ? AND key >= ? AND key < ? ORDER BY key",
        (lease_id, low, high),
    )
    root_len = len(low)
    names = tuple(bytes(k)[root_len:].decode() for (k,) in keys)
    return LeaseInfo(lease_id, math.ceil(max(0.0, deadline - now)), ttl, names)


def live_leases(conn: sqlite3.Connection, now: float) -> list[int]:
    """The ids of the leases not yet due, sorted."""
    rows = conn.execute("SELECT id FROM leases WHERE deadline > ? ORDER BY id", (now,))
    return [lease_id for (lease_id,) in rows]
