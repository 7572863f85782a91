"""Lock: a distributed mutex with fencing tokens, the etcd recipe over the store contract.

Key layout: ``locks/<name>/<lease-id-hex>``, one key per session and lock,
attached to the session's lease (so a crashed owner's key goes with its
lease). The owner is the key with the lowest create_revision; its
create_revision is the **fencing token**, strictly increasing across
successive owners. ``held.guard()`` is the compare a caller adds to its own
transaction so a write succeeds only while it still owns the lock.

Contenders of one session queue on a process-local FIFO mutex first, so a
session never has two keys in one lock's line.
"""

from __future__ import annotations

import asyncio
import contextlib
import time

from keel.coord._front import SingleHolder
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
from keel.errors import LockLostError, ValidationError
from keel.observe.spans import span_scope, tracing_on
from keel.store import KeyValue

__all__ = ["HeldLock", "Lock"]

LOCKS_PREFIX = "locks/"


def _predecessor(entry: Entry) -> KeyValue | None:
    ahead = entry.ahead()
    return ahead[-1] if ahead else None


class HeldLock(Ownership):
    """Proof of owning a :class:`Lock`, valid until released or lost.

    Attributes:
        name: the lock's name.
        key: the owner key in the store.
        fencing_token: the owner key's create_revision; pass it to the resource
            you protect and have it refuse tokens lower than the highest seen.
        lost: set when the session is lost or the key was deleted by someone
            else; after that the lock may be owned by another process.
    """

    kind = "lock"

    def __init__(self, lock: Lock, key: str, token: int, *, waited_s: float = 0.0) -> None:
        super().__init__(lock.session, key, token, f"lock {lock.name!r}", waited_s=waited_s)
        self.name = lock.name
        self._lock = lock

    def check(self) -> None:
        """Raise LockLostError if the lock is known to be lost."""
        if self.lost.is_set():
            raise LockLostError(f"lock {self.name!r} was lost: {self.lost.reason}")

    async def release(self) -> None:
        """Give the lock up (idempotent); the next waiter gets it at once."""
        if self._ended:
            return
        try:
            await self._end("released")
        finally:
            self._lock._held = None
            self._lock._mutex.release()

    async def _finish(self) -> None:
        await self.release()

    def __repr__(self) -> str:
        return f"<HeldLock {self.name!r} token={self.fencing_token} {self._state()}>"


class Lock(SingleHolder[HeldLock]):
    """A distributed mutex named ``name``, taken on behalf of ``session``.

    ``async with Lock(session, "reports") as held:`` blocks until owned;
    ``await lock.acquire(timeout_s=5)`` and ``await lock.try_acquire()`` do the
    same without a block. FIFO among contenders; a cancelled or timed-out
    waiter deletes its key.
    """

    def __init__(self, session: Session, name: str) -> None:
        self.session = session
        self.name = check_name("lock", name)
        self.prefix = f"{LOCKS_PREFIX}{name}/"
        self._mutex = session._local_mutex(self.prefix)
        self._held: HeldLock | None = None

    def _key(self) -> str:
        return f"{self.prefix}{self.session.lease_id:x}"

    async def acquire(self, *, timeout_s: float | None = None) -> HeldLock:
        """Wait until this process owns the lock.

        Raises:
            TimeoutError: not owned within ``timeout_s`` (the waiter's key is removed).
            SessionLostError: the session was lost while waiting.
        """
        if timeout_s is not None and timeout_s < 0:
            raise ValidationError("timeout_s must be >= 0 (None: wait for ever)")
        async with asyncio.timeout(timeout_s):
            await self._mutex.acquire()
            try:
                held = await self._take(wait=True)
                assert held is not None
                return held
            except BaseException:
                self._mutex.release()
                raise
        raise AssertionError("unreachable")  # pragma: no cover - for type checkers

    async def try_acquire(self) -> HeldLock | None:
        """Own the lock if nobody does now; never wait. Returns None if it is taken."""
        if self._mutex.locked():
            return None
        await self._mutex.acquire()
        try:
            held = await self._take(wait=False)
        except BaseException:
            self._mutex.release()
            raise
        if held is None:
            self._mutex.release()
        return held

    async def _take(self, *, wait: bool) -> HeldLock | None:
        if not tracing_on():
            return await self._queue_up(wait=wait)
        with span_scope(
            "lock acquire", {"keel.lock.name": self.name, "keel.lock.wait": wait}
        ) as span:
            held = await self._queue_up(wait=wait)
            if span is not None:
                span.set_attribute("keel.lock.acquired", held is not None)
            return held

    async def _queue_up(self, *, wait: bool) -> HeldLock | None:
        began = time.monotonic()
        store = self.session.store
        key = self._key()
        try:
            entry = await enqueue(self.session, self.prefix, key, b"")
        except BaseException:
            await leave(store, key)
            raise
        try:
            if _predecessor(entry) is not None:
                if not wait:
                    await leave(store, entry.key)
                    return None
                what = f"waiting for lock {self.name!r}"
                await race_loss(
                    wait_for_deletes(store, self.prefix, entry, _predecessor),
                    self.session.lost,
                    what,
                )
        except BaseException:
            with contextlib.suppress(Exception):
                await leave(store, entry.key)
            raise
        held = HeldLock(self, entry.key, entry.revision, waited_s=time.monotonic() - began)
        self._held = held
        return held

    def __repr__(self) -> str:
        state = repr(self._held) if self._held else "not held"
        return f"<Lock {self.name!r} {state}>"
