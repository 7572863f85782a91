"""The engine contract of keel.events: a stream store with consumer groups.

The bus (publish, subscribe, retries, dead letters, outbox) is written once
against :class:`Engine`; two engines implement it: the store engine
(``keel.events._store_engine``, on the keel Store contract: memory, sqlite,
etcd) and the Redis Streams engine (``keel.events.redis``). The model is
exactly Redis Streams' consumer groups, per topic partition:

- a topic has a fixed number of partitions; each partition is an append-only
  stream whose entry ids are strictly increasing *within the partition*
  (Redis: ``<ms>-<seq>``; store: a zero-padded sequence). Ids are opaque to
  the bus: it compares them only through the engine and moves positions with
  :meth:`Engine.position_before`.
- a *position* is an id (or ``"0"``: before the first entry): reads return
  the entries strictly after it.
- a group has, per partition, a last-delivered position and a pending list:
  entries delivered to a consumer and not yet acked, each with its consumer,
  its delivery count and the time of its last delivery.
- membership and partition ownership (TTL'd, renewed by their holder) let the
  bus give each (group, partition) to one live member at a time, which keeps
  per-key order within a group.

MUST rules common to every method: a backend failure raises
:class:`keel.errors.StoreUnavailableError` (lower-layer exceptions are
translated, never leaked); a method naming a topic that was never created
raises :class:`keel.errors.NotFoundError`, except :meth:`Engine.create_topic`,
:meth:`Engine.partitions` and :meth:`Engine.topics`; a method naming a group
that was never created on the topic raises ``NotFoundError`` too, except
:meth:`Engine.create_group`, :meth:`Engine.groups` and the membership methods.
A partition outside ``range(partitions)`` raises
:class:`keel.errors.ValidationError`, and so do :meth:`Engine.create_topic`
and :meth:`Engine.create_group` for a name that ``keel.events.check_topic`` /
``check_group`` refuse (a ``/`` or a brace would break key layouts and Redis
Cluster hash tags) or a partition count outside 1..1024. Entry data is untrusted bytes: engines
store and return it unchanged and never decode it.

Change from the first draft of the shared design: :meth:`Engine.position_before`
was added, because replay "from an id" must include that id and ids are opaque
(a Redis id's predecessor is not a string operation the bus should know).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple, Protocol

__all__ = ["END", "START", "Engine", "Entry", "GroupLag"]

START = "0"
"""The position before the first entry of every partition (``create_group(start=START)``)."""

END = "$"
"""``create_group(start=END)``: the group sees only entries appended after its creation."""


class Entry(NamedTuple):
    """One stored event as read back.

    Attributes:
        id: the engine's id, ordered within its partition.
        data: the encoded event record (untrusted: decode at one boundary).
        deliveries: times delivered to the group so far, counting this one
            (1 for a first delivery and for plain reads).
    """

    id: str
    data: bytes
    deliveries: int = 1


@dataclass(frozen=True, slots=True)
class GroupLag:
    """How far a group is behind on one partition.

    Attributes:
        pending: entries delivered to a consumer and not yet acked.
        undelivered: entries after the group's last-delivered position.
    """

    pending: int
    undelivered: int


class Engine(Protocol):
    """A stream store with consumer groups. Every method may raise StoreUnavailableError."""

    name: str
    """Short engine name for metrics and ``repr`` (``"store:sqlite"``, ``"redis"``)."""

    async def create_topic(self, topic: str, partitions: int) -> int:
        """Create ``topic`` with ``partitions`` partitions, unless it exists.

        MUST be idempotent and race-safe: concurrent creators all get the same
        answer, and an existing topic keeps its partition count.

        Returns:
            The topic's partition count (the existing one if it already existed).
        """
        ...

    async def partitions(self, topic: str) -> int | None:
        """Return the partition count of ``topic``, or None if it does not exist."""
        ...

    async def topics(self) -> list[str]:
        """Return every topic's name, sorted."""
        ...

    async def append(self, topic: str, partition: int, records: Sequence[bytes]) -> list[str]:
        """Append ``records`` to one partition, in order, atomically (all or none).

        An engine with a per-write limit may split a large batch into several
        atomic appends (the store engine: 100 records or 1 MiB each); the bus
        sends at most 100 records per call.

        MUST give each record an id greater than every id already in the
        partition (also after trims), in the order given.

        Returns:
            The new ids, one per record, in order.
        """
        ...

    async def read(self, topic: str, partition: int, after: str, count: int) -> list[Entry]:
        """Return up to ``count`` entries with ids after position ``after``, oldest first.

        A plain range read (tail, replay inspection, dead letters): no group
        state changes. ``after=START`` reads from the first retained entry.
        """
        ...

    async def create_group(self, topic: str, group: str, start: str) -> None:
        """Create ``group`` on every partition of ``topic``; do nothing if it exists.

        Args:
            start: ``END`` ("$": only entries appended from now on), ``START``
                ("0": every retained entry) or an id (entries after it, on every
                partition).

        MUST be idempotent: creating an existing group changes nothing (its
        positions and pending lists stay), also under concurrent creators.
        """
        ...

    async def groups(self, topic: str) -> list[str]:
        """Return the groups of ``topic``, sorted (empty for a topic with none)."""
        ...

    async def read_group(
        self, topic: str, partition: int, group: str, consumer: str, count: int, block_s: float
    ) -> list[Entry]:
        """Deliver up to ``count`` new entries of one partition to ``consumer``.

        New means after the group's last-delivered position, oldest first. The
        returned entries MUST be added to the group's pending list (consumer,
        deliveries=1, delivered now) and the last-delivered position moved to
        the last one, atomically with the read: two consumers never get the
        same new entry. When there is none, wait up to ``block_s`` seconds
        (0: do not wait) for one to be appended, then return ``[]``. Entries
        already pending are never returned here (see :meth:`claim_pending`).
        """
        ...

    async def ack(self, topic: str, partition: int, group: str, ids: Sequence[str]) -> int:
        """Remove ``ids`` from the group's pending list of one partition.

        Ids not pending (already acked, never delivered, unknown) are ignored.

        Returns:
            How many ids were pending and are now acked.
        """
        ...

    async def claim_pending(
        self, topic: str, partition: int, group: str, consumer: str, min_idle_s: float, count: int
    ) -> list[Entry]:
        """Take over pending entries idle for at least ``min_idle_s`` (XAUTOCLAIM).

        Scans the pending list of one partition oldest id first; each entry
        whose last delivery is at least ``min_idle_s`` ago (any consumer,
        including ``consumer`` itself) is given to ``consumer``, its delivery
        count incremented and its idle time reset, up to ``count`` entries.
        Pending ids whose entry was trimmed away MUST be dropped from the
        pending list and not returned.

        Returns:
            The claimed entries, oldest first, each with its new ``deliveries``.
        """
        ...

    async def set_group_position(self, topic: str, partition: int, group: str, after: str) -> None:
        """Move the group's last-delivered position of one partition (XGROUP SETID).

        The next :meth:`read_group` returns entries after ``after``; ``START``
        rewinds to the beginning, ``END`` skips to the current end. The pending
        list is left as it is.
        """
        ...

    def position_before(self, entry_id: str) -> str:
        """Return the position just before ``entry_id``: reads after it start at that id.

        A pure function of the id (no I/O); ``START`` for the smallest id.
        Raises ValidationError if ``entry_id`` is not an id of this engine.
        """
        ...

    async def lag(self, topic: str, partition: int, group: str) -> GroupLag:
        """Return the group's pending count and undelivered count on one partition."""
        ...

    async def trim(
        self, topic: str, partition: int, *, max_len: int | None, min_id: str | None
    ) -> int:
        """Delete the oldest entries of one partition (XTRIM MAXLEN / MINID).

        Keeps at most ``max_len`` newest entries and deletes every entry with an
        id below ``min_id``; either may be None. Trimming never lowers the ids
        given to later appends. Engines may trim approximately (never more than
        asked).

        Returns:
            How many entries were deleted.
        """
        ...

    async def id_at(self, topic: str, partition: int, when: float) -> str:
        """Return the id of the first entry appended at or after ``when`` (Unix seconds).

        The engine's own append time counts. When no entry is that recent, it
        returns an id greater than every current one (possibly synthetic), so
        ``position_before(id_at(...))`` is a valid position for replay.
        """
        ...

    async def heartbeat(self, topic: str, group: str, member: str, ttl_s: float) -> list[str]:
        """Record ``member`` alive in the group for ``ttl_s`` seconds.

        MUST forget a member that has not heartbeated for its TTL (its process
        died). ``ttl_s <= 0`` removes ``member`` at once (it leaves) and
        releases nothing else. Unlike other methods, needs no prior
        ``create_group``.

        Returns:
            Every live member of the group, including ``member`` unless it
            left, sorted.
        """
        ...

    async def claim_partition(
        self, topic: str, group: str, partition: int, member: str, ttl_s: float
    ) -> bool:
        """Take or renew ownership of one (group, partition) for ``ttl_s`` seconds.

        MUST succeed only if the partition is unowned, its owner's claim has
        expired, or ``member`` already owns it (then the TTL is renewed); at
        most one member owns a partition at any time, by the engine's clock.

        Returns:
            True if ``member`` owns the partition when the call returns.
        """
        ...

    async def release_partition(self, topic: str, group: str, partition: int, member: str) -> None:
        """Give up ownership of one (group, partition) if ``member`` holds it; else nothing."""
        ...

    async def aclose(self) -> None:
        """Release the engine's resources (connections, leases). Idempotent."""
        ...
