"""RedisEngine: the keel.events engine contract on Redis Streams (one server or a cluster).

Each topic partition is one Redis stream and each group one Redis consumer
group on every partition's stream, so the contract maps onto Redis commands
one to one: ``append`` is ``XADD``, ``read_group`` ``XREADGROUP``, ``ack``
``XACK``, ``claim_pending`` ``XAUTOCLAIM``, ``set_group_position`` ``XGROUP
SETID``, ``lag`` ``XINFO GROUPS``, ``trim`` ``XTRIM``. Key layout and scripts:
``_scripts.py``.

Blocking reads: a ``read_group`` with ``block_s > 0`` is an ``XREADGROUP
BLOCK`` that keeps one pooled connection busy until it answers, so a process
holds one connection per partition it reads at once (the pool grows to that;
a cluster client's per-node pool is capped at ``max_connections``, 100 by
default). The wait is capped below the client's socket timeout so a quiet
stream never looks like a dead server; the bus reads again in a loop anyway.

The topic's partition count and the groups known to exist are cached per
engine (neither ever changes once created), so the hot path (``append``,
``read_group``, ``ack``) is one round trip after the first call per topic,
sent on one server through the short path of ``_wire.py``. Untrusted
entries: see ``_replies.py``.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Sequence
from typing import Any, Self

from redis.exceptions import RedisError

from keel.errors import NotFoundError, ValidationError
from keel.events._engine import END, START, Entry, GroupLag
from keel.events._model import check_group, check_partitions, check_topic
from keel.events.redis._connect import block_cap, open_client
from keel.events.redis._replies import (
    FIELD,
    data_of,
    entries,
    first_stream,
    pairs,
    position,
    text,
    ttl_ms,
)
from keel.events.redis._scripts import (
    APPEND,
    CLAIM_PENDING,
    CREATE_TOPIC,
    HEARTBEAT,
    MAX_SEQ,
    RELEASE,
    TAKE,
    Client,
    Keys,
    guarded,
    parse_id,
)
from keel.events.redis._wire import wire_for

__all__ = ["DEFAULT_PREFIX", "RedisEngine"]

DEFAULT_PREFIX = "keel:events:"
LAG_COUNT_CAP = 100_000
"""When Redis cannot tell a group's lag (after trims or a SETID), count at most this many."""
_PAGE = 1000


class RedisEngine:
    """The keel.events engine on Redis Streams.

    ``await RedisEngine.connect(url)`` opens a client from a URL
    (``redis://``, ``rediss://``, ``redis+cluster://host:port[,host:port...]``,
    ``rediss+cluster://``; query options ``prefix=`` and ``max_len=`` set the
    arguments of the same names);
    ``RedisEngine(client)`` uses a ``redis.asyncio.Redis`` or ``RedisCluster``
    you made (created with the default ``decode_responses=False``).

    Args:
        client: the redis-py asyncio client.
        prefix: the key prefix (default ``keel:events:``).
        max_len: if set, every append also trims its partition to about this
            many entries (``XADD MAXLEN ~``: cheap, never fewer than asked).
        owns_client: close the client on :meth:`aclose` (True from ``connect``).

    Raises:
        ValidationError: a prefix with braces, or a bad ``max_len``.
    """

    name = "redis"

    def __init__(
        self,
        client: Client,
        *,
        prefix: str = DEFAULT_PREFIX,
        max_len: int | None = None,
        owns_client: bool = False,
    ) -> None:
        if "{" in prefix or "}" in prefix:
            raise ValidationError(f"prefix {prefix!r} has a brace: it would break the hash tags")
        if max_len is not None and (isinstance(max_len, bool) or max_len < 1):
            raise ValidationError(f"max_len={max_len!r} is not valid: give a count >= 1, or None")
        self.client = client
        self.prefix = prefix
        self.max_len = max_len
        self._owns = owns_client
        self._max_len_arg = "" if max_len is None else str(max_len)
        self._trim_args: tuple[str, ...] = () if max_len is None else ("MAXLEN", "~", str(max_len))
        self._wire = wire_for(client)
        self._block_cap_s = block_cap(client)
        self._keys: dict[str, Keys] = {}
        self._partitions: dict[str, int] = {}
        self._groups: set[tuple[str, str]] = set()
        self._closed = False

    @classmethod
    async def connect(cls, url: str, *, max_len: int | None = None) -> Self:
        """Open a client from ``url`` and check that Redis answers.

        Raises:
            InvalidURLError: not a Redis URL.
            StoreUnavailableError: Redis did not answer.
        """
        client, options = await open_client(url)
        return cls(
            client,
            prefix=options.prefix or DEFAULT_PREFIX,
            max_len=max_len if max_len is not None else options.max_len,
            owns_client=True,
        )

    # -- topics ---------------------------------------------------------------

    def _k(self, topic: str) -> Keys:
        keys = self._keys.get(topic)
        if keys is None:
            check_topic(topic)  # also keeps braces (hash tags) out of the keys
            keys = self._keys[topic] = Keys(self.prefix, topic)
        return keys

    async def create_topic(self, topic: str, partitions: int) -> int:
        """Create ``topic`` with ``partitions`` partitions unless it exists; return its count."""
        keys = self._k(topic)
        check_partitions(partitions)
        with guarded(f"creating topic {topic!r}"):
            count = int(await CREATE_TOPIC(self.client, [keys.meta], [partitions]))
            await self.client.sadd(f"{self.prefix}topics", topic)
        self._partitions[topic] = count
        return count

    async def partitions(self, topic: str) -> int | None:
        """Return the partition count of ``topic``, or None if it does not exist."""
        known = self._partitions.get(topic)
        if known is not None:
            return known
        with guarded(f"reading topic {topic!r}"):
            raw = await self.client.get(self._k(topic).meta)
        if raw is None:
            return None
        try:
            count = int(raw)
        except ValueError:
            return None  # not ours: someone else's value under our key
        self._partitions[topic] = count
        return count

    async def topics(self) -> list[str]:
        """Return every topic's name, sorted."""
        with guarded("listing topics"):
            raw = await self.client.smembers(f"{self.prefix}topics")
        return sorted(text(name) for name in raw)

    async def _stream(self, topic: str, partition: int) -> str:
        """The stream key of an existing topic's partition (NotFound / Validation otherwise)."""
        count = self._partitions.get(topic)
        if count is None:
            count = await self.partitions(topic)
            if count is None:
                raise NotFoundError(f"topic {topic!r} does not exist: create it first")
        if isinstance(partition, bool) or not isinstance(partition, int):
            raise ValidationError(f"partition {partition!r} is not an int")
        if not 0 <= partition < count:
            raise ValidationError(
                f"partition {partition} is out of range: topic {topic!r} has {count} partitions"
            )
        return self._k(topic).stream(partition)

    async def _group_stream(self, topic: str, partition: int, group: str) -> str:
        key = await self._stream(topic, partition)
        if (topic, group) not in self._groups:
            with guarded(f"looking up group {group!r} of {topic!r}"):
                found = await self.client.sismember(self._k(topic).groups, group)
            if not found:
                raise NotFoundError(f"group {group!r} does not exist on topic {topic!r}")
            self._groups.add((topic, group))
        return key

    # -- streams --------------------------------------------------------------

    async def append(self, topic: str, partition: int, records: Sequence[bytes]) -> list[str]:
        """Append ``records`` to one partition atomically; return their new ids."""
        key = await self._stream(topic, partition)
        if not records:
            return []
        with guarded(f"appending to {key!r}"):
            if len(records) == 1:
                if self._wire is not None:
                    new = await self._wire.execute(
                        "XADD", key, *self._trim_args, "*", FIELD, records[0]
                    )
                else:
                    new = await self.client.xadd(
                        key, {FIELD: records[0]}, maxlen=self.max_len, approximate=True
                    )
                return [text(new)]
            ids = await APPEND(self.client, [key], [self._max_len_arg, *records])
        return [text(i) for i in ids]

    async def read(self, topic: str, partition: int, after: str, count: int) -> list[Entry]:
        """Return up to ``count`` entries after position ``after``, oldest first."""
        key = await self._stream(topic, partition)
        start = "-" if after == START else f"({position(after)}"
        with guarded(f"reading {key!r}"):
            raw = await self.client.xrange(key, start, "+", count=count)
        return entries(raw)

    async def trim(
        self, topic: str, partition: int, *, max_len: int | None, min_id: str | None
    ) -> int:
        """Delete the oldest entries (exact ``XTRIM MAXLEN`` / ``MINID``); return how many."""
        key = await self._stream(topic, partition)
        removed = 0
        with guarded(f"trimming {key!r}"):
            if min_id is not None:
                parse_id(min_id)
                removed += await self.client.xtrim(key, minid=min_id, approximate=False)
            if max_len is not None:
                removed += await self.client.xtrim(key, maxlen=max_len, approximate=False)
        return removed

    async def id_at(self, topic: str, partition: int, when: float) -> str:
        """Return the id of the first entry at/after ``when``, else ``<when ms>-0`` (synthetic)."""
        key = await self._stream(topic, partition)
        if not isinstance(when, int | float) or not math.isfinite(when):
            raise ValidationError(f"when={when!r} is not a Unix time in seconds")
        floor = f"{max(0, int(when * 1000))}-0"
        with guarded(f"reading {key!r}"):
            raw = await self.client.xrange(key, floor, "+", count=1)
        return text(raw[0][0]) if raw else floor

    def position_before(self, entry_id: str) -> str:
        """Return the position just before ``entry_id`` (``START`` for the smallest id)."""
        ms, seq = parse_id(entry_id)
        if seq > 0:
            return f"{ms}-{seq - 1}"
        if ms > 0:
            return f"{ms - 1}-{MAX_SEQ}"
        return START

    # -- groups ---------------------------------------------------------------

    async def create_group(self, topic: str, group: str, start: str) -> None:
        """Create ``group`` on every partition (``XGROUP CREATE ... MKSTREAM``); idempotent."""
        check_group(group)
        if start not in (START, END):
            parse_id(start)
        count = await self.partitions(topic)
        if count is None:
            raise NotFoundError(f"topic {topic!r} does not exist: create it first")
        keys = self._k(topic)
        with guarded(f"creating group {group!r} on {topic!r}"):
            for partition in range(count):
                await self._create_group_on(keys.stream(partition), group, start)
            await self.client.sadd(keys.groups, group)
        self._groups.add((topic, group))

    async def _create_group_on(self, key: str, group: str, start: str) -> None:
        try:
            await self.client.xgroup_create(key, group, start, mkstream=True)
        except RedisError as exc:
            if not str(exc).startswith("BUSYGROUP"):
                raise

    async def groups(self, topic: str) -> list[str]:
        """Return the groups of ``topic``, sorted."""
        if await self.partitions(topic) is None:
            raise NotFoundError(f"topic {topic!r} does not exist: create it first")
        with guarded(f"listing groups of {topic!r}"):
            raw = await self.client.smembers(self._k(topic).groups)
        return sorted(text(name) for name in raw)

    async def read_group(
        self, topic: str, partition: int, group: str, consumer: str, count: int, block_s: float
    ) -> list[Entry]:
        """Deliver up to ``count`` new entries to ``consumer`` (``XREADGROUP``), waiting up to
        ``block_s`` seconds (capped below the socket timeout) when there is none."""
        key = await self._group_stream(topic, partition, group)
        block = None
        if block_s > 0:
            block = max(1, int(min(block_s, self._block_cap_s) * 1000))
        with guarded(f"reading {key!r} for group {group!r}"):
            if self._wire is not None:
                waits = () if block is None else ("BLOCK", block)
                raw: Any = await self._wire.execute(
                    "XREADGROUP",
                    "GROUP",
                    group,
                    consumer,
                    "COUNT",
                    count,
                    *waits,
                    "STREAMS",
                    key,
                    ">",
                )
            else:
                raw = await self.client.xreadgroup(
                    group, consumer, {key: ">"}, count=count, block=block
                )
        return entries(first_stream(raw))

    async def ack(self, topic: str, partition: int, group: str, ids: Sequence[str]) -> int:
        """Remove ``ids`` from the group's pending list (``XACK``); return how many were pending."""
        key = await self._group_stream(topic, partition, group)
        if not ids:
            return 0
        with guarded(f"acking on {key!r} for group {group!r}"):
            if self._wire is not None:
                return int(await self._wire.execute("XACK", key, group, *ids))
            return int(await self.client.xack(key, group, *ids))

    async def claim_pending(
        self, topic: str, partition: int, group: str, consumer: str, min_idle_s: float, count: int
    ) -> list[Entry]:
        """Take over pending entries idle >= ``min_idle_s`` (``XAUTOCLAIM``), with their counts."""
        key = await self._group_stream(topic, partition, group)
        idle_ms = max(0, int(min_idle_s * 1000))
        with guarded(f"claiming pending entries of {key!r}"):
            raw = await CLAIM_PENDING(self.client, [key], [group, consumer, idle_ms, count])
        return [Entry(text(i), data_of(pairs(fields)), int(n)) for i, fields, n in raw]

    async def set_group_position(self, topic: str, partition: int, group: str, after: str) -> None:
        """Move the group's last-delivered position (``XGROUP SETID``)."""
        key = await self._group_stream(topic, partition, group)
        to = after if after in (START, END) else position(after)
        with guarded(f"moving group {group!r} on {key!r}"):
            await self.client.xgroup_setid(key, group, to)

    async def lag(self, topic: str, partition: int, group: str) -> GroupLag:
        """Return the group's pending and undelivered counts (``XINFO GROUPS``)."""
        key = await self._group_stream(topic, partition, group)
        with guarded(f"reading the lag of group {group!r} on {key!r}"):
            infos = await self.client.xinfo_groups(key)
            info = next((i for i in infos if text(i["name"]) == group), None)
            if info is None:
                raise NotFoundError(f"group {group!r} does not exist on {key!r}")
            undelivered = info.get("lag")
            if undelivered is None:  # Redis < 7, or it cannot tell after trims/SETID
                undelivered = await self._count_after(key, text(info["last-delivered-id"]))
        return GroupLag(pending=int(info["pending"]), undelivered=int(undelivered))

    async def _count_after(self, key: str, position: str) -> int:
        """Entries after ``position``, counted by paging (at most :data:`LAG_COUNT_CAP`)."""
        counted = 0
        while counted < LAG_COUNT_CAP:
            page: Any = await self.client.xrange(key, f"({position}", "+", count=_PAGE)
            counted += len(page)
            if len(page) < _PAGE:
                break
            position = text(page[-1][0])
        return counted

    # -- membership and ownership ---------------------------------------------

    async def heartbeat(self, topic: str, group: str, member: str, ttl_s: float) -> list[str]:
        """Record ``member`` alive for ``ttl_s`` seconds (<= 0: it leaves); return live members."""
        key = self._k(topic).members(group)
        ms = 0 if isinstance(ttl_s, int | float) and ttl_s <= 0 else ttl_ms(ttl_s)
        with guarded(f"heartbeating in {key!r}"):
            raw = await HEARTBEAT(self.client, [key], [member, ms])
        return sorted(text(m) for m in raw)

    async def claim_partition(
        self, topic: str, group: str, partition: int, member: str, ttl_s: float
    ) -> bool:
        """Take or renew ownership of (group, partition) for ``ttl_s`` (``SET PX`` if free/own)."""
        key = self._k(topic).claim(group, partition)
        with guarded(f"claiming {key!r}"):
            return bool(await TAKE(self.client, [key], [member, ttl_ms(ttl_s)]))

    async def release_partition(self, topic: str, group: str, partition: int, member: str) -> None:
        """Give up (group, partition) if ``member`` holds it (compare-and-delete)."""
        key = self._k(topic).claim(group, partition)
        with guarded(f"releasing {key!r}"):
            await RELEASE(self.client, [key], [member])

    async def aclose(self) -> None:
        """Close the client if this engine opened it. Idempotent."""
        if self._closed:
            return
        self._closed = True
        if self._wire is not None:
            await self._wire.release_idle()
        if self._owns:
            # closing a broken connection: nothing left to free
            with contextlib.suppress(RedisError):
                await self.client.aclose()

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"{len(self._partitions)} topics known"
        return f"<RedisEngine {type(self.client).__name__} prefix={self.prefix!r} {state}>"
