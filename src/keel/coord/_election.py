"""Election: leader election with fencing, the etcd recipe over the store contract.

Key layout: ``elections/<name>/<lease-id-hex>`` holding the candidate's value,
on its session lease. The leader is the key with the lowest create_revision;
its create_revision is the leadership's fencing token. A candidate waits for
the deletion of the candidate just ahead of it. Because the leader's key lives
on its session lease, and the session counts its TTL from when each renewal
was sent, a leader whose session is lost learns it no later than the store
deletes its key, so before any other candidate can win.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

from keel._aio import Opening
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
from keel.errors import NotLeaderError
from keel.observe.spans import span_scope, tracing_on
from keel.store import EventType, KeyValue, Put

__all__ = ["Election", "Leader", "Leadership"]

ELECTIONS_PREFIX = "elections/"


@dataclass(frozen=True, slots=True)
class Leader:
    """Who leads an election.

    Attributes:
        value: what the leader proclaimed (often its address or node id).
        fencing_token: the leader key's create_revision.
        key: the leader's key in the store.
        lease: the leader's session lease.
    """

    value: bytes
    fencing_token: int
    key: str
    lease: int


def _leader_of(kvs: list[KeyValue] | tuple[KeyValue, ...]) -> Leader | None:
    if not kvs:
        return None
    first = min(kvs, key=lambda kv: kv.create_revision)
    return Leader(first.value, first.create_revision, first.key, first.lease)


def _predecessor(entry: Entry) -> KeyValue | None:
    ahead = entry.ahead()
    return ahead[-1] if ahead else None


def _as_bytes(value: bytes | str) -> bytes:
    return value.encode() if isinstance(value, str) else bytes(value)


class Leadership(Ownership):
    """Being the leader, until resigned or lost.

    Attributes:
        fencing_token: the leader key's create_revision, strictly increasing
            across successive leaders.
        lost: set when the session is lost or the key was deleted by someone else.
    """

    kind = "leadership"

    def __init__(
        self, election: Election, key: str, token: int, value: bytes, *, waited_s: float = 0.0
    ) -> None:
        what = f"election {election.name!r}"
        super().__init__(election.session, key, token, what, waited_s=waited_s)
        self.election = election
        self.value = value

    async def proclaim(self, value: bytes | str) -> None:
        """Change the value observers see, without giving up leadership.

        Raises:
            NotLeaderError: leadership was lost or resigned.
        """
        data = _as_bytes(value)
        result = await self.election.session.store.txn(
            [self.guard()], [Put(self.key, data, lease=self.election.session.lease_id)]
        )
        if not result.succeeded:
            self.lost.set("leader key is gone")
            raise NotLeaderError(f"not the leader of {self.election.name!r} any more")
        self.value = data

    async def resign(self) -> None:
        """Step down (idempotent); the next candidate leads at once."""
        if self._ended:
            return
        try:
            await self._end("resigned")
        finally:
            self.election._mutex.release()

    async def _finish(self) -> None:
        await self.resign()

    def __repr__(self) -> str:
        return f"<Leadership {self.election.name!r} token={self.fencing_token} {self._state()}>"


class Election:
    """Leader election named ``name`` among sessions.

    ``async with election.campaign(b"node-1") as leadership:`` blocks until
    this process leads; ``await election.leader()`` says who leads now;
    ``election.observe()`` follows every change of leader.
    """

    def __init__(self, session: Session, name: str) -> None:
        self.session = session
        self.name = check_name("election", name)
        self.prefix = f"{ELECTIONS_PREFIX}{name}/"
        self._mutex = session._local_mutex(self.prefix)

    def campaign(self, value: bytes | str) -> Opening[Leadership]:
        """Stand for leader with ``value``; wait until elected.

        Raises:
            SessionLostError: the session was lost while waiting.
        """
        data = _as_bytes(value)
        return Opening(lambda: self._campaign(data), lambda leadership: leadership.resign())

    async def _campaign(self, value: bytes) -> Leadership:
        if not tracing_on():
            return await self._stand(value)
        with span_scope("election campaign", {"keel.election.name": self.name}):
            return await self._stand(value)

    async def _stand(self, value: bytes) -> Leadership:
        began = time.monotonic()
        store = self.session.store
        await self._mutex.acquire()
        key = f"{self.prefix}{self.session.lease_id:x}"
        try:
            try:
                entry = await enqueue(self.session, self.prefix, key, value)
            except BaseException:
                await leave(store, key)
                raise
            try:
                if _predecessor(entry) is not None:
                    await race_loss(
                        wait_for_deletes(store, self.prefix, entry, _predecessor),
                        self.session.lost,
                        f"campaigning in {self.name!r}",
                    )
            except BaseException:
                with contextlib.suppress(Exception):
                    await leave(store, entry.key)
                raise
        except BaseException:
            self._mutex.release()
            raise
        return Leadership(self, key, entry.revision, value, waited_s=time.monotonic() - began)

    async def leader(self) -> Leader | None:
        """The current leader, or None when nobody leads."""
        kvs, _ = await self.session.store.range(self.prefix)
        return _leader_of(kvs)

    async def observe(self) -> AsyncIterator[Leader | None]:
        """Yield the current leader, then each change of leader or of its value.

        Changes that happen while the consumer is busy are coalesced: the
        iterator always catches up to the most recent leader.
        """
        store = self.session.store
        kvs, revision = await store.range(self.prefix)
        line = {kv.key: kv for kv in kvs}
        current = _leader_of(kvs)
        yield current
        async with store.watch(self.prefix, prefix=True, start_revision=revision + 1) as events:
            async for event in events:
                if event.type is EventType.PUT:
                    line[event.kv.key] = event.kv
                else:
                    line.pop(event.kv.key, None)
                while (more := events.get_nowait()) is not None:
                    if more.type is EventType.PUT:
                        line[more.kv.key] = more.kv
                    else:
                        line.pop(more.kv.key, None)
                leader = _leader_of(list(line.values()))
                if leader != current:
                    current = leader
                    yield current

    def __repr__(self) -> str:
        return f"<Election {self.name!r} lease={self.session._lease_id:x}>"
