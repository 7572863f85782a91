"""The Lua scripts of the Redis locks, how they are called, and what their errors become.

Every state change of a Redis lock is one script, so it is atomic on the
server and costs one round trip:

- ``ACQUIRE``: ``SET key NX PX`` and ``INCR`` of the lock's fence counter in
  one step, so the fencing token is taken by the same command that wins the
  lock; on a lost race it answers the holder's remaining ``PTTL`` so a waiter
  knows how long it may block at most. It is idempotent for its owner value:
  redis-py retries a command after a dropped connection, and a retried
  acquire that had in fact succeeded must find "you already own it", not
  "somebody owns it".
- ``RELEASE``: compare-and-delete (the owner value must match, so a process
  whose lock expired cannot delete the next owner's), and optionally one
  wake-up signal for waiters.
- ``EXTEND``: compare-and-``PEXPIRE``.
  With ``pass_on`` it also serves a cancelled waiter: it undoes an acquire
  whose answer the waiter never read, and re-signals a free lock in case the
  waiter consumed the wake-up meant for the next one.

Scripts are sent by SHA (``EVALSHA``) and loaded once per server when it
answers ``NOSCRIPT`` (after a restart or ``SCRIPT FLUSH``). We keep our own
tiny :class:`Script` rather than redis-py's because ours is shared by all the
clients a :class:`~keel.coord.redis.Redlock` talks to, and it sends on the
short path of ``_lane.py``.

Key layout (all in one Redis Cluster hash slot through the ``{name}`` tag)::

    keel:lock:{<name>}         owner value "<random hex>:<fencing token>", PX ttl
    keel:lock:{<name>}:fence   the INCR counter of fencing tokens (no expiry)
    keel:lock:{<name>}:wake    a one-element list: "the lock was released"
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from typing import Any

import redis.asyncio as aredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, RedisError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from keel.coord.redis._lane import lane
from keel.errors import ConflictError, KeelError, StoreUnavailableError, ValidationError

__all__ = [
    "ACQUIRE",
    "DEFAULT_PREFIX",
    "EXTEND",
    "RELEASE",
    "Keys",
    "Script",
    "check_name",
    "check_timeout",
    "check_ttl",
    "translate",
]

DEFAULT_PREFIX = "keel:lock:"
MIN_TTL_S = 0.01
"""Redis expiries are in milliseconds; below 10 ms a lock cannot do useful work."""

# Server-side errors that mean "try again later", not "you did something wrong".
_TRANSIENT = ("READONLY", "OOM", "BUSY", "LOADING", "MASTERDOWN", "TRYAGAIN", "CLUSTERDOWN")


class Script:
    """One Lua script, called by SHA and loaded on ``NOSCRIPT``.

    Args:
        text: the Lua source.
    """

    __slots__ = ("sha", "text")

    def __init__(self, text: str) -> None:
        self.text = text
        self.sha = hashlib.sha1(text.encode(), usedforsecurity=False).hexdigest()

    async def __call__(
        self, client: aredis.Redis, keys: Sequence[str], args: Sequence[str | int]
    ) -> Any:
        """Run the script on ``client``; redis errors come back untranslated."""
        road = lane(client)
        try:
            if road is None:
                return await client.evalsha(self.sha, len(keys), *keys, *args)
            return await road.execute("EVALSHA", self.sha, len(keys), *keys, *args)
        except NoScriptError:
            await client.script_load(self.text)
            return await client.evalsha(self.sha, len(keys), *keys, *args)

    def __repr__(self) -> str:
        return f"<Script {self.sha[:10]}>"


# The owner value is "<owner id>:<fencing token>"; every script but ACQUIRE's
# first branch recognises its owner by the "<owner id>:" prefix, so a caller
# that lost the reply of its acquire (and so its token) can still release.
_OWNED = """
local function owned(v)
  return v and string.sub(v, 1, #ARGV[1] + 1) == ARGV[1] .. ':'
end
"""

ACQUIRE = Script(
    _OWNED
    + """
local v = redis.call('GET', KEYS[1])
if not v then
  local token = redis.call('INCR', KEYS[2])
  redis.call('SET', KEYS[1], ARGV[1] .. ':' .. token, 'PX', ARGV[2])
  redis.call('DEL', KEYS[3])
  return {1, token}
end
if owned(v) then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return {1, tonumber(string.sub(v, #ARGV[1] + 2))}
end
return {0, redis.call('PTTL', KEYS[1])}
"""
)
"""KEYS: lock, fence, wake. ARGV: owner, ttl_ms. -> {1, token} or {0, holder's pttl_ms}."""

RELEASE = Script(
    _OWNED
    + """
if owned(redis.call('GET', KEYS[1])) then
  redis.call('DEL', KEYS[1])
  if ARGV[2] == '1' then
    redis.call('DEL', KEYS[2])
    redis.call('RPUSH', KEYS[2], '1')
    redis.call('PEXPIRE', KEYS[2], ARGV[3])
  end
  return 1
end
if ARGV[4] == '1' and redis.call('EXISTS', KEYS[1]) == 0
    and redis.call('EXISTS', KEYS[2]) == 0 then
  redis.call('RPUSH', KEYS[2], '1')
  redis.call('PEXPIRE', KEYS[2], ARGV[3])
end
return 0
"""
)
"""KEYS: lock, wake. ARGV: owner, signal ('1'/'0'), wake_ttl_ms, pass_on ('1'/'0').

Deletes the lock if ``owner`` holds it (then, with ``signal``, leaves one
wake-up for a waiter) and answers 1. Otherwise answers 0, and with
``pass_on`` leaves a wake-up if the lock is free and none is pending: a
waiter cancelled in BLPOP may have consumed the one meant for the next waiter.
"""

EXTEND = Script(
    _OWNED
    + """
if owned(redis.call('GET', KEYS[1])) then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""
)
"""KEYS: lock. ARGV: owner, ttl_ms. -> 1 extended, 0 not the owner any more."""


class Keys:
    """The Redis keys of one lock name (see the module docstring for the layout).

    Args:
        prefix: the key prefix, ``keel:lock:`` by default.
        name: the lock's name.
    """

    __slots__ = ("fence", "lock", "wake")

    def __init__(self, prefix: str, name: str) -> None:
        self.lock = f"{prefix}{{{name}}}"
        self.fence = f"{self.lock}:fence"
        self.wake = f"{self.lock}:wake"

    def __repr__(self) -> str:
        return f"<Keys {self.lock!r}>"


def check_name(name: str) -> str:
    """Return ``name`` if usable as a Redis lock name.

    Raises:
        ValidationError: empty, not a string, or containing braces or control
            characters (braces would break the key's Redis Cluster hash tag).
    """
    if (
        not isinstance(name, str)
        or not name
        or "{" in name
        or "}" in name
        or any(ord(c) < 32 for c in name)
    ):
        raise ValidationError(
            f"redis lock name {name!r} is not valid: use a non-empty name without braces "
            f"or control characters, e.g. 'reports/daily'"
        )
    return name


def check_ttl(ttl_s: float) -> int:
    """Return ``ttl_s`` in whole milliseconds.

    Raises:
        ValidationError: not a finite number of seconds >= 0.01.
    """
    if (
        isinstance(ttl_s, bool)
        or not isinstance(ttl_s, int | float)
        or not math.isfinite(ttl_s)
        or ttl_s < MIN_TTL_S
    ):
        raise ValidationError(
            f"ttl_s={ttl_s!r} is not valid: give the lock's time to live in seconds, "
            f">= {MIN_TTL_S} (e.g. ttl_s=10)"
        )
    return max(1, round(ttl_s * 1000))


def check_timeout(timeout_s: float | None) -> None:
    """Raise ValidationError unless ``timeout_s`` is None or a number >= 0."""
    if timeout_s is not None and not (
        isinstance(timeout_s, int | float) and not isinstance(timeout_s, bool) and timeout_s >= 0
    ):
        raise ValidationError(f"timeout_s={timeout_s!r} is not valid: give seconds >= 0, or None")


def translate(exc: RedisError, what: str) -> KeelError:
    """The keel error for a redis-py error raised while doing ``what``.

    Connection problems, timeouts and transient server states (READONLY after
    a failover, OOM, LOADING...) become :class:`StoreUnavailableError`, which
    callers may retry; any other refusal (e.g. WRONGTYPE: someone else's data
    under our key) becomes :class:`ConflictError`.
    """
    if isinstance(exc, RedisConnectionError | RedisTimeoutError):
        return StoreUnavailableError(f"redis did not answer while {what}: {exc}")
    if isinstance(exc, ResponseError) and str(exc).startswith(_TRANSIENT):
        return StoreUnavailableError(f"redis is not accepting writes while {what}: {exc}")
    return ConflictError(f"redis refused {what}: {exc}")
