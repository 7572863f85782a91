"""Key layout, Lua scripts, stream ids and error translation of the Redis Streams engine.

Key layout (``<prefix>`` is ``keel:events:`` by default)::

    <prefix>topics                          set: every topic's name (the registry)
    <prefix>{<topic>}:meta                  string: the topic's partition count
    <prefix>{<topic>}:groups                set: the topic's group names
    <prefix>{<topic>}:members:<group>       zset: member -> expiry (server ms)
    <prefix>{<topic>}:claim:<group>:<p>     string: owning member, PX ttl
    <prefix>{<topic>:<p>}                   stream: partition p, its consumer groups

The braces are Redis Cluster hash tags: every key of a topic's metadata shares
one slot (``{<topic>}``), and each partition's stream is in a slot of its own
(``{<topic>:<p>}``), so a topic's partitions spread over the cluster's nodes
while each partition's stream and its groups stay together. Every script
touches one key only, so it runs on a cluster as on one server. The registry
is in a slot of its own: it is updated after the topic's meta key, by a second
command, and :meth:`create_topic` repeats both (idempotently) on every call.

Scripts are sent by SHA and sent whole (``EVAL``, which also caches them) when a
node answers ``NOSCRIPT``: after a restart, or on a cluster node that has not
seen them yet.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
from collections.abc import Sequence
from types import TracebackType
from typing import Any, Literal

from redis.asyncio import Redis, RedisCluster
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, RedisError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from keel.errors import (
    ConflictError,
    KeelError,
    NotFoundError,
    StoreUnavailableError,
    ValidationError,
)

__all__ = [
    "APPEND",
    "CLAIM_PENDING",
    "CREATE_TOPIC",
    "HEARTBEAT",
    "MAX_SEQ",
    "RELEASE",
    "TAKE",
    "Client",
    "Guard",
    "Keys",
    "Script",
    "guarded",
    "parse_id",
    "translate",
]

Client = Redis | RedisCluster
"""Either redis-py asyncio client: one server or a cluster."""

MAX_SEQ = 2**64 - 1
"""The largest sequence part of a stream id (``<ms>-<seq>``, both unsigned 64-bit)."""

_ID = re.compile(r"(\d{1,20})-(\d{1,20})")

# Server-side errors that mean "try again later", not "you did something wrong".
_TRANSIENT = ("READONLY", "OOM", "BUSY", "LOADING", "MASTERDOWN", "TRYAGAIN", "CLUSTERDOWN")


class Keys:
    """The Redis keys of one topic (see the module docstring for the layout).

    Args:
        prefix: the key prefix.
        topic: the topic's name.
    """

    __slots__ = ("groups", "meta", "prefix", "topic")

    def __init__(self, prefix: str, topic: str) -> None:
        self.prefix = prefix
        self.topic = topic
        self.meta = f"{prefix}{{{topic}}}:meta"
        self.groups = f"{prefix}{{{topic}}}:groups"

    def stream(self, partition: int) -> str:
        """The stream key of ``partition``."""
        return f"{self.prefix}{{{self.topic}:{partition}}}"

    def members(self, group: str) -> str:
        """The zset of ``group``'s live members."""
        return f"{self.prefix}{{{self.topic}}}:members:{group}"

    def claim(self, group: str, partition: int) -> str:
        """The ownership key of (``group``, ``partition``)."""
        return f"{self.prefix}{{{self.topic}}}:claim:{group}:{partition}"

    def __repr__(self) -> str:
        return f"<Keys {self.prefix}{{{self.topic}}}>"


class Script:
    """One Lua script, called by SHA and sent whole on ``NOSCRIPT``.

    Args:
        text: the Lua source.
    """

    __slots__ = ("sha", "text")

    def __init__(self, text: str) -> None:
        self.text = text
        self.sha = hashlib.sha1(text.encode(), usedforsecurity=False).hexdigest()

    async def __call__(self, client: Client, keys: Sequence[str], args: Sequence[Any]) -> Any:
        """Run the script on ``client``; redis errors come back untranslated."""
        try:
            return await client.evalsha(self.sha, len(keys), *keys, *args)
        except NoScriptError:
            return await client.eval(self.text, len(keys), *keys, *args)

    def __repr__(self) -> str:
        return f"<Script {self.sha[:10]}>"


CREATE_TOPIC = Script(
    """
local v = redis.call('GET', KEYS[1])
if v then return tonumber(v) end
redis.call('SET', KEYS[1], ARGV[1])
return tonumber(ARGV[1])
"""
)
"""KEYS: meta. ARGV: partitions. -> the topic's partition count (existing or new)."""

APPEND = Script(
    """
local ids = {}
for i = 2, #ARGV do
  if ARGV[1] == '' then
    ids[#ids + 1] = redis.call('XADD', KEYS[1], '*', 'd', ARGV[i])
  else
    ids[#ids + 1] = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*', 'd', ARGV[i])
  end
end
return ids
"""
)
"""KEYS: stream. ARGV: max_len ('' for none), record... -> the new ids (one atomic step)."""

CLAIM_PENDING = Script(
    """
local r = redis.call('XAUTOCLAIM', KEYS[1], ARGV[1], ARGV[2], ARGV[3], '0-0', 'COUNT', ARGV[4])
local out = {}
for _, e in ipairs(r[2]) do
  if e then
    local p = redis.call('XPENDING', KEYS[1], ARGV[1], e[1], e[1], 1)
    local n = 1
    if p[1] then n = p[1][4] end
    out[#out + 1] = {e[1], e[2], n}
  end
end
return out
"""
)
"""KEYS: stream. ARGV: group, consumer, min_idle_ms, count. -> {{id, fields, deliveries}...}.

``XAUTOCLAIM`` answers the claimed entries without their delivery counts, so
the same script reads each count back with ``XPENDING <id> <id> 1``: one round
trip, and atomic, so the counts are the ones the claim left. Redis 7 drops
pending ids whose entry was trimmed away from the pending list itself (its
third reply element lists them); Redis 6.2 answers them as nil entries, which
are skipped here (and stay pending there: use Redis 7).
"""

HEARTBEAT = Script(
    """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if tonumber(ARGV[2]) > 0 then
  redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
else
  redis.call('ZREM', KEYS[1], ARGV[1])
end
local last = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
if last[2] then redis.call('PEXPIREAT', KEYS[1], last[2]) end
return redis.call('ZRANGE', KEYS[1], 0, -1)
"""
)
"""KEYS: members. ARGV: member, ttl_ms (0: leave). -> live members (expired ones removed first).

Expiries are in the server's clock (``TIME``), so members on hosts with skewed
clocks agree; the key itself expires with its longest-lived member.
"""

TAKE = Script(
    """
local v = redis.call('GET', KEYS[1])
if (not v) or v == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0
"""
)
"""KEYS: claim. ARGV: member, ttl_ms. -> 1 if ``member`` owns it now (taken or renewed), else 0."""

RELEASE = Script(
    """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""
)
"""KEYS: claim. ARGV: member. -> 1 if deleted (``member`` held it), else 0."""


def parse_id(entry_id: str) -> tuple[int, int]:
    """Split a stream id ``<ms>-<seq>`` into its two numbers.

    Raises:
        ValidationError: not a full Redis stream id.
    """
    match = _ID.fullmatch(entry_id) if isinstance(entry_id, str) else None
    if match is None or int(match[1]) > MAX_SEQ or int(match[2]) > MAX_SEQ:
        raise ValidationError(
            f"{entry_id!r} is not a Redis stream id: give an id as '<ms>-<seq>', "
            f"e.g. '1700000000000-0', as returned by publish()"
        )
    return int(match[1]), int(match[2])


def translate(exc: RedisError, what: str) -> KeelError:
    """The keel error for a redis-py error raised while doing ``what``.

    Connection problems, timeouts and transient server states (LOADING, a
    cluster failing over...) become :class:`StoreUnavailableError`; a missing
    consumer group :class:`NotFoundError`; a malformed id :class:`ValidationError`;
    someone else's data under our key (WRONGTYPE) :class:`ConflictError`; any
    other failure of the server :class:`StoreUnavailableError`.
    """
    text = str(exc)
    if isinstance(exc, RedisConnectionError | RedisTimeoutError):
        return StoreUnavailableError(f"redis did not answer while {what}: {exc}")
    if isinstance(exc, ResponseError):
        if text.startswith("NOGROUP"):
            return NotFoundError(f"consumer group not found while {what}: {exc}")
        if "Invalid stream ID" in text:
            return ValidationError(f"bad stream id while {what}: {exc}")
        if text.startswith("WRONGTYPE"):
            return ConflictError(f"a key of another type is in the way while {what}: {exc}")
        if text.startswith(_TRANSIENT):
            return StoreUnavailableError(f"redis is not accepting commands while {what}: {exc}")
    return StoreUnavailableError(f"redis failed while {what}: {exc}")


class Guard:
    """Translate redis errors raised in the block, and keep cancellations redis-py lost.

    Why the second part: on Python 3.11, redis-py sends every command under
    ``asyncio.wait_for`` when the client has a socket timeout (the default),
    and 3.11's ``wait_for`` returns the result instead of raising when the
    task is cancelled just as the send completes (fixed in 3.12). The command
    then answers normally and the cancellation is gone: a reader the bus
    cancels goes on reading. The task still counts the request
    (``Task.cancelling()``), so a block that ends with more cancellation
    requests than it began with raises :class:`asyncio.CancelledError` here.
    Comparing with the count at entry keeps cleanup code that runs while a
    cancellation is already being handled (a ``finally`` releasing a claim)
    working.

    Args:
        what: what the block does, for the error message (``"reading <key>"``).
    """

    __slots__ = ("_asked", "_task", "what")

    def __init__(self, what: str) -> None:
        self.what = what
        self._task: asyncio.Task[Any] | None = None
        self._asked = 0

    def __enter__(self) -> None:
        task = self._task = asyncio.current_task()
        self._asked = task.cancelling() if task is not None else 0

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> Literal[False]:
        if isinstance(exc, RedisError):
            raise translate(exc, self.what) from exc
        if exc is None and self._task is not None and self._task.cancelling() > self._asked:
            raise asyncio.CancelledError(f"cancelled while {self.what}")
        return False


def guarded(what: str) -> Guard:
    """``with guarded("reading <key>"):`` - see :class:`Guard`."""
    return Guard(what)
