"""Redlock: one lock across N independent Redis servers, as published by Redis' author.

The algorithm (https://redis.io/docs/latest/develop/use/patterns/distributed-locks/):

1. Take the time; try ``SET key owner NX PX ttl`` on every server at once,
   each with a timeout small against the TTL, so a dead server costs little.
2. The lock is acquired if a majority (``N // 2 + 1``) granted it and the
   *validity* is still positive: ``validity = ttl - elapsed - drift`` with
   ``drift = ttl * 0.01 + 2 ms`` (the servers' clocks may run at slightly
   different rates, and expiry is counted by each server's clock).
3. Otherwise release on *every* server (a server whose answer was lost may
   have granted it) and retry after a random delay, so contenders that
   collided do not collide again in step.

Extension is the same round with compare-and-``PEXPIRE``; release is
compare-and-delete everywhere. keel adds the same per-server ``INCR`` fence
counter as :class:`~keel.coord.redis.RedisLock`, but the token is only
**best effort** here: each server's counter is independent, a majority can
be a different set of servers each time, and a server that restarts without
persistence starts from zero. ``held.fencing_token`` is the largest counter
among the servers that granted the lock; it usually increases, but nothing
guarantees it. When fencing matters, use the store-backed ``keel.coord.Lock``
(one linearizable counter: the owner key's create_revision).

If fewer than a majority of servers answer at all, acquiring raises
:class:`StoreUnavailableError` instead of retrying: no amount of waiting on
contenders helps while the servers are down.
"""

from __future__ import annotations

import asyncio
import logging
import random
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Self

import redis.asyncio as aredis
from redis.exceptions import RedisError

from keel.clock import SYSTEM_CLOCK, Clock
from keel.coord._flag import LossFlag
from keel.coord._front import SingleHolder
from keel.coord.redis._renew import Renewer
from keel.coord.redis._scripts import (
    ACQUIRE,
    EXTEND,
    RELEASE,
    Keys,
    Script,
    check_name,
    check_timeout,
    check_ttl,
)
from keel.errors import LockLostError, StoreUnavailableError, ValidationError

__all__ = ["HeldRedlock", "Redlock", "drift_s"]

log = logging.getLogger("keel.coord.redis")

REDLOCK_PREFIX = "keel:redlock:"
DRIFT_FACTOR = 0.01
"""Clock drift allowance as a fraction of the TTL (the published algorithm's value)."""
DRIFT_FLOOR_S = 0.002
"""Plus 2 ms for the granularity of Redis' millisecond expiries."""


def drift_s(ttl_s: float) -> float:
    """The clock-drift allowance of the published algorithm for ``ttl_s``."""
    return ttl_s * DRIFT_FACTOR + DRIFT_FLOOR_S


@dataclass(frozen=True, slots=True)
class _Round:
    """What one round over all servers answered."""

    answers: tuple[object, ...]  # per server: the script's reply, or None if it failed
    started: float
    elapsed: float

    def count(self, ok: object) -> int:
        return sum(1 for a in self.answers if a == ok)

    @property
    def answered(self) -> int:
        return sum(1 for a in self.answers if a is not None)


class HeldRedlock:
    """Proof of owning a :class:`Redlock` on a majority of servers, valid for ``validity_s``.

    Attributes:
        name: the lock's name.
        tokens: per server, the fence counter it gave (None where not granted).
        fencing_token: the largest of ``tokens``: best effort only, see the module.
        validity_s: seconds the lock was known valid for when it was granted.
        valid_until: monotonic deadline of the current validity.
        lost: set when an extension fails on the majority, the validity runs
            out, or on release (reason ``released``).
    """

    __slots__ = (
        "_lock",
        "_owner",
        "_released",
        "_renewer",
        "fencing_token",
        "lost",
        "name",
        "tokens",
        "valid_until",
        "validity_s",
    )

    def __init__(
        self, lock: Redlock, owner: str, tokens: tuple[int | None, ...], round_: _Round
    ) -> None:
        self.name = lock.name
        self.tokens = tokens
        self.fencing_token = max(t for t in tokens if t is not None)
        self.validity_s = lock.ttl_s - round_.elapsed - lock.drift_s
        self.valid_until = round_.started + lock.ttl_s - lock.drift_s
        self.lost = LossFlag()
        self._lock = lock
        self._owner = owner
        self._released = False
        self._renewer: Renewer | None = None
        if lock.auto_extend:
            self._renewer = Renewer(
                what=f"redlock {lock.name!r}",
                extend=self._extend_once,
                deadline=lambda: self.valid_until,
                lost=self.lost,
                interval_s=lock.ttl_s / 3,
                clock=lock.clock,
            )
            self._renewer.start()

    def remaining_s(self) -> float:
        """Seconds of validity left (0 once past)."""
        return max(0.0, self.valid_until - self._lock.clock.monotonic())

    def check(self) -> None:
        """Raise :class:`LockLostError` if the lock is known to be lost, expired or released."""
        if not self.lost.is_set() and self.remaining_s() <= 0:
            self.lost.set("its validity ran out")
        if self.lost.is_set():
            raise LockLostError(f"redlock {self.name!r} was lost: {self.lost.reason}")

    async def _extend_once(self) -> float | None:
        lock = self._lock
        round_ = await lock._round(EXTEND, [self._owner, lock.ttl_ms])
        validity = lock.ttl_s - round_.elapsed - lock.drift_s
        if round_.count(1) >= lock.quorum and validity > 0:
            self.valid_until = max(self.valid_until, round_.started + lock.ttl_s - lock.drift_s)
            return self.valid_until
        if round_.count(0) > len(lock.clients) - lock.quorum:
            return None  # a majority answered "not yours": it is gone
        raise StoreUnavailableError(
            f"redlock {self.name!r}: only {round_.count(1)} of {len(lock.clients)} servers "
            f"extended it in time (a majority is {lock.quorum})"
        )

    async def extend(self) -> None:
        """Extend the lock to the full TTL on a majority of servers.

        Raises:
            LockLostError: a majority no longer holds it for this process.
            StoreUnavailableError: too few servers answered in time.
        """
        self.check()
        if await self._extend_once() is None:
            self.lost.set("a majority of servers no longer held it at extend()")
            self.check()

    async def release(self) -> None:
        """Release on every server (idempotent); unreachable servers let it expire."""
        if self._released:
            return
        self._released = True
        try:
            if self._renewer is not None:
                self._renewer.stop()
            round_ = await self._lock._release_all(self._owner)
            if round_.answered < len(self._lock.clients):
                log.warning(
                    "redlock %r: %d servers did not answer the release; their keys expire",
                    self.name,
                    len(self._lock.clients) - round_.answered,
                )
        finally:
            self.lost.set("released")
            self._lock._released(self)

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
            state = f"held, {self.remaining_s():.1f}s valid"
        return f"<HeldRedlock {self.name!r} token~{self.fencing_token} {state}>"


class Redlock(SingleHolder[HeldRedlock]):
    """A lock held on a majority of ``clients``, independent Redis servers.

    Args:
        clients: one ``redis.asyncio.Redis`` per server (not replicas of one
            another); 3 or 5 is usual.
        name: the lock's name (no braces or control characters).
        ttl_s: each server's key TTL in seconds.
        auto_extend: extend every ``ttl_s / 3`` while held (default True).
        retry_delay_s: after a lost round, wait a random time between half this
            and this before the next one.
        server_timeout_s: how long one round waits for each server (default
            ``ttl_s / 20`` clamped to 0.1-1 s: short against the TTL, long
            enough for a first connection on a busy host).
        prefix: the Redis key prefix (default ``keel:redlock:``).
        clock: the time source.

    Raises:
        ValidationError: no clients, bad name, TTL or delays.
    """

    def __init__(
        self,
        clients: Sequence[aredis.Redis],
        name: str,
        ttl_s: float = 10.0,
        *,
        auto_extend: bool = True,
        retry_delay_s: float = 0.2,
        server_timeout_s: float | None = None,
        prefix: str = REDLOCK_PREFIX,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        if not clients:
            raise ValidationError("Redlock needs at least one Redis client (3 or 5 is usual)")
        self.name = check_name(name)
        self.ttl_ms = check_ttl(ttl_s)
        self.ttl_s = float(ttl_s)
        if server_timeout_s is None:
            server_timeout_s = min(max(self.ttl_s / 20, 0.1), 1.0)
        delays = {"retry_delay_s": retry_delay_s, "server_timeout_s": server_timeout_s}
        for what, value in delays.items():
            if not value > 0:
                raise ValidationError(f"{what}={value!r} is not valid: give seconds > 0")
        self.clients = tuple(clients)
        self.quorum = len(self.clients) // 2 + 1
        self.drift_s = drift_s(self.ttl_s)
        self.auto_extend = auto_extend
        self.retry_delay_s = float(retry_delay_s)
        self.server_timeout_s = float(server_timeout_s)
        self.clock = clock
        self.keys = Keys(prefix, name)
        self._mutex = asyncio.Lock()
        self._held: HeldRedlock | None = None

    @property
    def held(self) -> HeldRedlock | None:
        """The handle of the current holder through this object, if any."""
        return self._held

    async def _one(
        self, client: aredis.Redis, script: Script, keys: list[str], args: list[str | int]
    ) -> object:
        try:
            async with asyncio.timeout(self.server_timeout_s):
                reply = await script(client, keys, args)
        except (RedisError, TimeoutError):
            return None
        return (int(reply[0]), int(reply[1])) if isinstance(reply, list) else reply

    async def _round(self, script: Script, args: list[str | int]) -> _Round:
        """Run ``script`` on every server at once, each bounded by ``server_timeout_s``."""
        k = self.keys
        keys = {ACQUIRE: [k.lock, k.fence, k.wake], RELEASE: [k.lock, k.wake]}.get(script, [k.lock])
        started = self.clock.monotonic()
        answers = await asyncio.gather(*(self._one(c, script, keys, args) for c in self.clients))
        return _Round(tuple(answers), started, self.clock.monotonic() - started)

    async def _release_all(self, owner: str) -> _Round:
        return await self._round(RELEASE, [owner, "0", self.ttl_ms, "0"])

    async def _attempt(self) -> HeldRedlock | None:
        """One round of the algorithm; releases everywhere if it did not win."""
        owner = secrets.token_hex(10)
        try:
            round_ = await self._round(ACQUIRE, [owner, self.ttl_ms])
        except BaseException:
            await self._release_all(owner)
            raise
        tokens = tuple(a[1] if isinstance(a, tuple) and a[0] == 1 else None for a in round_.answers)
        granted = sum(1 for t in tokens if t is not None)
        if granted >= self.quorum and self.ttl_s - round_.elapsed - self.drift_s > 0:
            self._held = HeldRedlock(self, owner, tokens, round_)
            return self._held
        await self._release_all(owner)
        if round_.answered < self.quorum:
            raise StoreUnavailableError(
                f"redlock {self.name!r}: only {round_.answered} of {len(self.clients)} servers "
                f"answered within {self.server_timeout_s:g}s; a majority ({self.quorum}) is needed"
            )
        return None

    async def acquire(self, *, timeout_s: float | None = None) -> HeldRedlock:
        """Wait until this process holds the lock on a majority of servers.

        Args:
            timeout_s: give up after this many seconds (None: wait for ever).

        Returns:
            The held lock; release it (or use ``async with``).

        Raises:
            TimeoutError: not acquired within ``timeout_s``; nothing is left behind.
            StoreUnavailableError: fewer than a majority of servers answered.
            ValidationError: negative ``timeout_s``.
        """
        check_timeout(timeout_s)
        async with asyncio.timeout(timeout_s):
            await self._mutex.acquire()
            try:
                while (held := await self._attempt()) is None:
                    delay = random.uniform(self.retry_delay_s / 2, self.retry_delay_s)
                    await self.clock.sleep(delay)
                return held
            except BaseException:
                self._mutex.release()
                raise
        raise AssertionError("unreachable")  # pragma: no cover - for type checkers

    async def try_acquire(self) -> HeldRedlock | None:
        """One round of the algorithm; never waits for a holder.

        Returns:
            The held lock, or None if another process holds it on too many servers.

        Raises:
            StoreUnavailableError: fewer than a majority of servers answered.
        """
        if self._mutex.locked():
            return None
        await self._mutex.acquire()
        try:
            held = await self._attempt()
        except BaseException:
            self._mutex.release()
            raise
        if held is None:
            self._mutex.release()
        return held

    def _released(self, held: HeldRedlock) -> None:
        if self._held is held:
            self._held = None
        self._mutex.release()

    def __repr__(self) -> str:
        state = repr(self._held) if self._held is not None else "not held"
        return (
            f"<Redlock {self.name!r} on {len(self.clients)} servers (quorum {self.quorum}) "
            f"ttl={self.ttl_s:g}s {state}>"
        )
