"""RedisLock: a mutex on one Redis server, with fencing tokens, auto-extension and no polling.

For users who already run Redis and want a lock without a keel store. The
lock is the classic single-instance recipe (``SET key value NX PX ttl``,
release by compare-and-delete), with three things added:

- **Fencing token.** The acquire script increments ``<key>:fence`` in the
  same atomic step that wins the key, so successive owners get strictly
  increasing tokens, in one round trip. Hand the token to the resource you
  protect and have it refuse tokens lower than the highest it has seen: that
  is what keeps a paused, expired owner from doing damage.
- **Auto-extension** every ``ttl / 3`` while held (see ``_renew.py``); if the
  key was deleted or overwritten, or Redis stayed unreachable for the whole
  TTL, ``held.lost`` is set.
- **Blocking acquire without polling.** Release leaves one element on
  ``<key>:wake``; a waiter blocks in ``BLPOP`` on that list, so a release
  wakes exactly one waiter (Redis serves blocked clients first come, first
  served) within one round trip. The ``BLPOP`` timeout is the holder's
  remaining ``PTTL`` (capped by the TTL and the client's socket timeout):
  a safety net that also wakes waiters at the moment a crashed owner's key
  expires, since nobody releases it. So a waiter wakes on a release, on an
  expiry, or at worst once per TTL - never in a spin. A cancelled waiter
  undoes an acquire whose answer it never read and passes on a wake-up it
  may have consumed, so it leaves nothing behind.

It is not fair (a process that releases and re-acquires at once may win
again before the woken waiter's retry arrives) and it is only as safe as one
Redis server: a failover to a replica that missed the key, or a restart
without persistence, can let two processes hold it. See
``docs/coordination.md``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from types import TracebackType
from typing import Self

import redis.asyncio as aredis
from redis.exceptions import RedisError

from keel.clock import SYSTEM_CLOCK, Clock
from keel.coord._flag import LossFlag
from keel.coord._front import SingleHolder
from keel.coord.redis._lane import lane
from keel.coord.redis._renew import Renewer
from keel.coord.redis._scripts import (
    ACQUIRE,
    DEFAULT_PREFIX,
    EXTEND,
    RELEASE,
    Keys,
    check_name,
    check_timeout,
    check_ttl,
    translate,
)
from keel.errors import LockLostError, ValidationError

__all__ = ["HeldRedisLock", "RedisLock"]

log = logging.getLogger("keel.coord.redis")

CLEANUP_TIMEOUT_S = 2.0
"""How long a cancelled waiter tries to clean up; past it, the TTL does the job."""
SOCKET_MARGIN = 0.8
"""A BLPOP may block for this fraction of the client's socket timeout at most."""


class HeldRedisLock:
    """Proof of owning a :class:`RedisLock`, valid until released, expired or lost.

    Attributes:
        name: the lock's name.
        key: the Redis key holding the owner value.
        value: the owner value in that key (``<random id>:<fencing token>``).
        fencing_token: strictly increasing across successive owners of this
            name on this Redis server; pass it to the resource you protect.
        lost: set when the key expired or was taken over, or Redis stayed
            unreachable for a whole TTL; also set (reason ``released``) on release.
        valid_until: monotonic time until which the key is sure to exist.
    """

    __slots__ = (
        "_lock",
        "_owner",
        "_released",
        "_renewer",
        "fencing_token",
        "key",
        "lost",
        "name",
        "valid_until",
        "value",
    )

    def __init__(self, lock: RedisLock, owner: str, token: int, valid_until: float) -> None:
        self.name = lock.name
        self.key = lock.keys.lock
        self.value = f"{owner}:{token}"
        self.fencing_token = token
        self.lost = LossFlag()
        self.valid_until = valid_until
        self._lock = lock
        self._owner = owner
        self._released = False
        self._renewer: Renewer | None = None
        if lock.auto_extend:
            self._renewer = Renewer(
                what=f"redis lock {lock.name!r}",
                extend=self._extend_once,
                deadline=lambda: self.valid_until,
                lost=self.lost,
                interval_s=lock.ttl_s / 3,
                clock=lock.clock,
            )
            self._renewer.start()

    def remaining_s(self) -> float:
        """Seconds the key is sure to exist for, from now (0 once past)."""
        return max(0.0, self.valid_until - self._lock.clock.monotonic())

    def check(self) -> None:
        """Raise :class:`LockLostError` if the lock is known to be lost or released."""
        if self.lost.is_set():
            raise LockLostError(f"redis lock {self.name!r} was lost: {self.lost.reason}")

    async def _extend_once(self) -> float | None:
        lock = self._lock
        started = lock.clock.monotonic()
        try:
            extended = await EXTEND(lock.client, [self.key], [self._owner, lock.ttl_ms])
        except RedisError as exc:
            raise translate(exc, f"extending redis lock {self.name!r}") from exc
        if not extended:
            return None
        # Counted from the send time: the key expires no earlier than that + ttl.
        self.valid_until = max(self.valid_until, started + lock.ttl_s)
        return self.valid_until

    async def extend(self) -> None:
        """Reset the key's TTL to the full ``ttl_s`` now.

        Raises:
            LockLostError: this process no longer owns the lock (``lost`` is set).
            StoreUnavailableError: Redis did not answer.
        """
        self.check()
        if await self._extend_once() is None:
            self.lost.set("expired or was taken over before extend()")
            self.check()

    async def release(self) -> None:
        """Give the lock up (idempotent) and wake one waiter.

        If the lock had already expired or been taken over, nothing is deleted
        and ``lost`` tells so; the next owner's key is never touched.

        Raises:
            StoreUnavailableError: Redis did not answer; the key then expires
                within its TTL on its own.
        """
        if self._released:
            return
        self._released = True
        lock = self._lock
        try:
            if self._renewer is not None:
                self._renewer.stop()
            keys = [self.key, lock.keys.wake]
            released = await RELEASE(lock.client, keys, [self._owner, "1", lock.ttl_ms, "0"])
        except RedisError as exc:
            self.lost.set("released while redis was unreachable: the key expires within its ttl")
            raise translate(exc, f"releasing redis lock {self.name!r}") from exc
        finally:
            lock._released(self)
        if not released:
            log.warning("redis lock %r had expired or been taken over before release", self.name)
            self.lost.set("expired or was taken over before release")
        self.lost.set("released")

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.release()

    def __repr__(self) -> str:
        if self._released:
            state = "released"
        elif self.lost.is_set():
            state = f"lost ({self.lost.reason})"
        else:
            state = f"held, {self.remaining_s():.1f}s left"
        return f"<HeldRedisLock {self.name!r} token={self.fencing_token} {state}>"


class RedisLock(SingleHolder[HeldRedisLock]):
    """A distributed mutex named ``name`` on one Redis server.

    ``async with RedisLock(client, "reports", ttl_s=10) as held:`` blocks until
    owned; ``await lock.acquire(timeout_s=5)`` and ``await lock.try_acquire()``
    are the explicit forms. Tasks sharing one ``RedisLock`` object queue
    locally first; give each contender its own object to contend through Redis.

    Args:
        client: a ``redis.asyncio.Redis`` with a connection pool (each blocked
            waiter holds one pooled connection in ``BLPOP``).
        name: the lock's name (no braces or control characters).
        ttl_s: the key's time to live in seconds; a crashed owner's lock frees
            itself after at most this long.
        auto_extend: extend every ``ttl_s / 3`` while held (default True).
        prefix: the Redis key prefix (default ``keel:lock:``).
        clock: the time source.

    Raises:
        ValidationError: bad name or TTL, or a single-connection client.
    """

    def __init__(
        self,
        client: aredis.Redis,
        name: str,
        ttl_s: float = 10.0,
        *,
        auto_extend: bool = True,
        prefix: str = DEFAULT_PREFIX,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self.name = check_name(name)
        self.ttl_ms = check_ttl(ttl_s)
        self.ttl_s = float(ttl_s)
        if client.single_connection_client:
            raise ValidationError(
                "RedisLock needs a pooled client: a waiter's BLPOP would block every other "
                "command of a single-connection client; drop single_connection_client=True"
            )
        self.client = client
        self.auto_extend = auto_extend
        self.clock = clock
        self.keys = Keys(prefix, name)
        socket_timeout = client.connection_pool.connection_kwargs.get("socket_timeout")
        self._max_block_s = self.ttl_s
        if socket_timeout:
            self._max_block_s = min(self._max_block_s, float(socket_timeout) * SOCKET_MARGIN)
        self._mutex = asyncio.Lock()
        self._held: HeldRedisLock | None = None

    @property
    def held(self) -> HeldRedisLock | None:
        """The handle of the current holder through this object, if any."""
        return self._held

    async def acquire(self, *, timeout_s: float | None = None) -> HeldRedisLock:
        """Wait until this process owns the lock.

        Args:
            timeout_s: give up after this many seconds (None: wait for ever).

        Returns:
            The held lock; release it (or use ``async with``).

        Raises:
            TimeoutError: not owned within ``timeout_s``; nothing is left behind.
            StoreUnavailableError: Redis did not answer.
            ValidationError: negative ``timeout_s``.
        """
        check_timeout(timeout_s)
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

    async def try_acquire(self) -> HeldRedisLock | None:
        """Own the lock if nobody does now, with one round trip; never wait.

        Returns:
            The held lock, or None if it is taken (here or elsewhere).

        Raises:
            StoreUnavailableError: Redis did not answer.
        """
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

    async def _take(self, *, wait: bool) -> HeldRedisLock | None:
        owner = secrets.token_hex(10)
        keys = self.keys
        try:
            while True:
                started = self.clock.monotonic()
                reply = await ACQUIRE(
                    self.client, [keys.lock, keys.fence, keys.wake], [owner, self.ttl_ms]
                )
                if reply[0] == 1:
                    held = HeldRedisLock(self, owner, int(reply[1]), started + self.ttl_s)
                    self._held = held
                    return held
                if not wait:
                    return None
                await self._block(int(reply[1]))
        except RedisError as exc:
            await self._abandon(owner)
            raise translate(exc, f"acquiring redis lock {self.name!r}") from exc
        except BaseException:
            await self._abandon(owner)
            raise

    async def _block(self, holder_pttl_ms: int) -> None:
        """Wait in BLPOP for a release, at most until the holder's key expires."""
        if holder_pttl_ms == -2:  # expired between GET and PTTL: retry at once
            return
        bound = self._max_block_s if holder_pttl_ms < 0 else holder_pttl_ms / 1000
        bound = min(bound, self._max_block_s)
        if bound > 0:
            # Redis takes fractional seconds; 0 would mean "for ever".
            seconds = f"{max(bound, 0.001):.3f}"
            road = lane(self.client)
            if road is None:  # pragma: no cover - single-connection clients are refused
                await self.client.blpop([self.keys.wake], timeout=float(seconds))
            else:
                await road.execute("BLPOP", self.keys.wake, seconds)

    async def _abandon(self, owner: str) -> None:
        """Undo an acquire whose answer may be lost and pass on a consumed wake-up."""
        keys = [self.keys.lock, self.keys.wake]
        with contextlib.suppress(RedisError, TimeoutError):
            async with asyncio.timeout(CLEANUP_TIMEOUT_S):
                await RELEASE(self.client, keys, [owner, "1", self.ttl_ms, "1"])

    def _released(self, held: HeldRedisLock) -> None:
        if self._held is held:
            self._held = None
        self._mutex.release()

    def __repr__(self) -> str:
        state = repr(self._held) if self._held is not None else "not held"
        return f"<RedisLock {self.name!r} ttl={self.ttl_s:g}s {state}>"
