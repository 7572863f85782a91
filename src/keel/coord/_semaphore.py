"""Semaphore and RWLock: more holders than one, on the same waiting line.

Key layouts: ``semaphores/<name>/<lease-id-hex>-<n>`` and
``rwlocks/<name>/<lease-id-hex>-<n>`` (value ``read`` or ``write``), on the
session lease; ``n`` numbers the contenders of one process, so several
holders in one process share a semaphore or a read lock.

- Semaphore: the first ``limit`` keys by create_revision hold it. A waiter
  watches the key ``limit`` places ahead of it: only that key's deletion can
  be the one that lets it in (earlier deletions move it up one place too, and
  it re-reads the line after each wake-up).
- RWLock (etcd's recipe): a reader holds when no writer is ahead of it and
  waits on the last writer ahead; a writer holds when nobody is ahead and
  waits on the key just ahead. The line is FIFO, so a waiting writer is never
  starved by readers that came after it (writer preference among waiters).
"""

from __future__ import annotations

import contextlib
import itertools
import time

from keel.coord._ownership import Ownership
from keel.coord._queue import (
    Entry,
    check_name,
    enqueue,
    leave,
    race_loss,
    wait_for_deletes,
)
from keel.coord._session import Session
from keel.errors import ValidationError
from keel.observe.spans import span_scope, tracing_on
from keel.store import KeyValue

__all__ = ["HeldSlot", "RWLock", "Semaphore"]

_serial = itertools.count(1)


class HeldSlot(Ownership):
    """One held slot of a :class:`Semaphore` or :class:`RWLock`.

    Attributes:
        fencing_token: this holder key's create_revision.
        lost: set when the session is lost or the key was deleted by someone else.
    """

    kind = "slot"

    async def release(self) -> None:
        """Give the slot up (idempotent)."""
        await self._end("released")

    def __repr__(self) -> str:
        return f"<HeldSlot {self.key!r} token={self.fencing_token} {self._state()}>"


async def _join(
    session: Session, prefix: str, value: bytes, blocker: object, wait: bool, what: str
) -> HeldSlot | None:
    """Enqueue under ``prefix`` and wait until ``blocker(entry)`` is None (traced when on)."""
    if not tracing_on():
        return await _queue_up(session, prefix, value, blocker, wait, what)
    with span_scope(
        "semaphore acquire", {"keel.semaphore.key": prefix, "keel.lock.wait": wait}
    ) as span:
        held = await _queue_up(session, prefix, value, blocker, wait, what)
        if span is not None:
            span.set_attribute("keel.lock.acquired", held is not None)
        return held


async def _queue_up(
    session: Session, prefix: str, value: bytes, blocker: object, wait: bool, what: str
) -> HeldSlot | None:
    """Enqueue under ``prefix`` and wait until ``blocker(entry)`` is None."""
    assert callable(blocker)
    began = time.monotonic()
    store = session.store
    key = f"{prefix}{session.lease_id:x}-{next(_serial)}"
    try:
        entry: Entry = await enqueue(session, prefix, key, value)
    except BaseException:
        await leave(store, key)
        raise
    try:
        if blocker(entry) is not None:
            if not wait:
                await leave(store, key)
                return None
            await race_loss(wait_for_deletes(store, prefix, entry, blocker), session.lost, what)
    except BaseException:
        with contextlib.suppress(Exception):
            await leave(store, key)
        raise
    return HeldSlot(session, key, entry.revision, what, waited_s=time.monotonic() - began)


class Semaphore:
    """Up to ``limit`` holders at once, FIFO, each with a fencing token.

    Every contender must use the same ``limit`` for a name.
    """

    def __init__(self, session: Session, name: str, limit: int) -> None:
        if not isinstance(limit, int) or isinstance(limit, bool) or limit < 1:
            raise ValidationError(f"semaphore limit must be an int >= 1, got {limit!r}")
        self.session = session
        self.name = check_name("semaphore", name)
        self.limit = limit
        self.prefix = f"semaphores/{name}/"

    def _blocker(self, entry: Entry) -> KeyValue | None:
        ahead = entry.ahead()
        return ahead[-self.limit] if len(ahead) >= self.limit else None

    async def acquire(self) -> HeldSlot:
        """Wait for a slot (bound the wait with ``asyncio.timeout``)."""
        slot = await _join(self.session, self.prefix, b"", self._blocker, True, self._what())
        assert slot is not None
        return slot

    async def try_acquire(self) -> HeldSlot | None:
        """Take a slot if one is free now; None otherwise."""
        return await _join(self.session, self.prefix, b"", self._blocker, False, self._what())

    def _what(self) -> str:
        return f"semaphore {self.name!r}"

    def __repr__(self) -> str:
        return f"<Semaphore {self.name!r} limit={self.limit}>"


def _reader_blocker(entry: Entry) -> KeyValue | None:
    writers = [kv for kv in entry.ahead() if kv.value == b"write"]
    return writers[-1] if writers else None


def _writer_blocker(entry: Entry) -> KeyValue | None:
    ahead = entry.ahead()
    return ahead[-1] if ahead else None


class RWLock:
    """A readers-writer lock: readers share, writers are exclusive, FIFO between them."""

    def __init__(self, session: Session, name: str) -> None:
        self.session = session
        self.name = check_name("rwlock", name)
        self.prefix = f"rwlocks/{name}/"

    async def read(self) -> HeldSlot:
        """Wait for a shared (read) hold."""
        slot = await _join(
            self.session, self.prefix, b"read", _reader_blocker, True, f"rwlock {self.name!r}"
        )
        assert slot is not None
        return slot

    async def write(self) -> HeldSlot:
        """Wait for the exclusive (write) hold."""
        slot = await _join(
            self.session, self.prefix, b"write", _writer_blocker, True, f"rwlock {self.name!r}"
        )
        assert slot is not None
        return slot

    async def try_read(self) -> HeldSlot | None:
        """Take a read hold if no writer holds or waits ahead; None otherwise."""
        return await _join(
            self.session, self.prefix, b"read", _reader_blocker, False, f"rwlock {self.name!r}"
        )

    async def try_write(self) -> HeldSlot | None:
        """Take the write hold if nobody holds or waits; None otherwise."""
        return await _join(
            self.session, self.prefix, b"write", _writer_blocker, False, f"rwlock {self.name!r}"
        )

    def __repr__(self) -> str:
        return f"<RWLock {self.name!r}>"
