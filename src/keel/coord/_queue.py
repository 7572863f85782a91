"""The waiting line under a prefix: what locks, semaphores and elections share.

The recipe is etcd's (client/v3/concurrency): each contender puts one key
under the prefix on its session lease; keys are ordered by create_revision,
so the line is FIFO; a contender waits for the deletion of the key just ahead
of it (not the whole line: no thundering herd); the first key owns. The
enqueue is one transaction that also reads the line, so an uncontended
acquire is one round trip.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from keel.coord._flag import LossFlag
from keel.coord._session import Session
from keel.errors import KeelError, SessionLostError, StoreUnavailableError, ValidationError
from keel.store import Compare, EventType, Get, KeyValue, Put, Range, Store

__all__ = [
    "MONITOR_DELAY_S",
    "Entry",
    "check_name",
    "enqueue",
    "leave",
    "race_loss",
    "wait_for_deletes",
    "watch_key",
]

log = logging.getLogger("keel.coord")
MONITOR_DELAY_S = 0.5
T = TypeVar("T")


def check_name(kind: str, name: str) -> str:
    """Return ``name`` if it is a usable lock/election name, else raise ValidationError."""
    if not isinstance(name, str) or not name or name.startswith("/") or name.endswith("/"):
        raise ValidationError(
            f"{kind} name {name!r} is not valid: use a non-empty name without leading or "
            f"trailing '/', e.g. 'reports/daily'"
        )
    return name


@dataclass(frozen=True, slots=True)
class Entry:
    """This contender's place in a line.

    Attributes:
        key: its key under the prefix.
        revision: the key's create_revision (the fencing token once it owns).
        line: the keys in the line when it was read, sorted by create_revision.
        read_revision: the store revision at which ``line`` was read.
    """

    key: str
    revision: int
    line: tuple[KeyValue, ...]
    read_revision: int

    def ahead(self) -> list[KeyValue]:
        """The keys created before this one."""
        return [kv for kv in self.line if kv.create_revision < self.revision]


def _by_creation(kvs: object) -> tuple[KeyValue, ...]:
    assert isinstance(kvs, list)
    return tuple(sorted(kvs, key=lambda kv: kv.create_revision))


async def enqueue(session: Session, prefix: str, key: str, value: bytes) -> Entry:
    """Create ``key`` on the session lease unless it exists, and read the line, in one txn."""
    store = session.store
    result = await store.txn(
        [Compare.absent(key)],
        [Put(key, value, lease=session.lease_id), Range(prefix)],
        [Get(key), Range(prefix)],
    )
    line = _by_creation(result.results[1])
    if result.succeeded:
        return Entry(key, result.revision, line, result.revision)
    existing = result.results[0]
    assert isinstance(existing, KeyValue)
    return Entry(key, existing.create_revision, line, result.revision)


async def reread(store: Store, prefix: str, entry: Entry) -> Entry:
    """Read the line again."""
    kvs, revision = await store.range(prefix)
    return Entry(entry.key, entry.revision, _by_creation(kvs), revision)


async def wait_for_delete(store: Store, key: str, start_revision: int) -> None:
    """Return once ``key`` is deleted at a revision >= ``start_revision``."""
    async with store.watch(key, start_revision=start_revision) as events:
        async for event in events:
            if event.type is EventType.DELETE:
                return


async def wait_for_deletes(
    store: Store,
    prefix: str,
    entry: Entry,
    ready: Callable[[Entry], KeyValue | None],
) -> Entry:
    """Wait until ``ready(entry)`` returns None; it returns the key to wait on otherwise.

    Each round watches one key (the one ``ready`` names) from the revision the
    line was read at, so a deletion between the read and the watch is replayed,
    then reads the line again.
    """
    while (blocker := ready(entry)) is not None:
        await wait_for_delete(store, blocker.key, entry.read_revision + 1)
        entry = await reread(store, prefix, entry)
        if not any(kv.key == entry.key for kv in entry.line):
            raise SessionLostError(
                f"our key {entry.key!r} vanished while waiting: the session lease ended"
            )
    return entry


async def race_loss(work: Awaitable[T], lost: LossFlag, what: str) -> T:
    """Await ``work`` unless ``lost`` is set first; then raise SessionLostError."""
    task: asyncio.Future[T] = asyncio.ensure_future(work)
    loser: asyncio.Future[Any] = asyncio.ensure_future(lost.wait())
    try:
        await asyncio.wait([task, loser], return_when=asyncio.FIRST_COMPLETED)
    finally:
        loser.cancel()
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, KeelError):
                await task
    if task.done() and not task.cancelled():
        return task.result()
    raise SessionLostError(f"{what}: session lost ({lost.reason})")


async def leave(store: Store, key: str) -> None:
    """Delete our key; if cancelled meanwhile, finish the delete before re-raising.

    A plain delete is enough: the key's name carries our session's lease id
    (and, for semaphores, a per-process serial), so no other contender can
    ever own a key by that name. Deleting twice is harmless.
    """
    if store.closed:
        return
    try:
        await _delete_quietly(store, key)
    except asyncio.CancelledError:
        task = asyncio.ensure_future(_delete_quietly(store, key))
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError:
            await task
        raise


async def _delete_quietly(store: Store, key: str) -> None:
    with contextlib.suppress(KeelError, TimeoutError):
        async with asyncio.timeout(5):
            await store.delete(key)


async def watch_key(session: Session, key: str, revision: int, lost: LossFlag, what: str) -> None:
    """A task body that sets ``lost`` when our key is deleted (never raises).

    The watch starts at the key's creation revision + 1, so a deletion that
    happened before the watch began is replayed, not missed. Session loss is
    passed on by the owner's callback, which also cancels this task.
    """
    try:
        while True:
            try:
                await wait_for_delete(session.store, key, revision + 1)
                lost.set(f"{what}: key {key!r} was deleted")
                return
            except StoreUnavailableError:
                await asyncio.sleep(0.2)  # the watch retries; the session decides loss
    except asyncio.CancelledError:
        raise
    except KeelError as exc:  # a compacted or closed store: we can no longer tell
        lost.set(f"{what}: cannot observe ownership any more ({exc})")
    except Exception:  # a monitor must never take the session down
        log.exception("ownership monitor for %s failed", key)
        lost.set(f"{what}: monitor failed")
