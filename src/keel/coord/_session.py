"""Session: one lease kept alive for everything a process owns.

A process opens one :class:`Session` and hangs its registrations, locks and
candidacies on the session's lease, so one keepalive every ``ttl/3`` serves
them all, and so they all end together when the process dies.

The session declares itself *lost* (``session.lost`` is set and owners
react) when the store says the lease is gone, or at its own deadline::

    deadline = sent + ttl - margin        margin = max(0.1 s, ttl / 10)

where ``sent`` is when the last *successful* renewal was sent (not when its
answer came). The store renewed the lease at some moment after that, so it
cannot expire the lease before ``sent + ttl``: the process learns of the loss
at least ``margin`` before any other process can take over what it owned.
No renewal attempt runs past the deadline (each is cut off there), so a slow
or partitioned store cannot delay the verdict. A lost session never quietly
takes a new lease; owners that want to go on open a new session.

The keepalive decisions (when to renew next, how long an attempt may take,
when to declare loss) are pure functions of the clock's readings
(:func:`next_step`, :func:`loss_deadline`); the loop around them only does
the I/O.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Coroutine
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self

from keel.clock import SYSTEM_CLOCK, Clock
from keel.coord._flag import LossFlag
from keel.errors import KeelError, LeaseNotFoundError, SessionLostError, ValidationError
from keel.observe._component_metrics import component_metrics
from keel.store import Lease, Store

__all__ = ["Session", "SessionStatistics", "attempt_budget", "loss_deadline", "next_step"]

log = logging.getLogger("keel.coord.session")

_MIN_RETRY_S = 0.05
_MIN_MARGIN_S = 0.1  # covers event-loop lag and the renewal's trip to the leader
_MARGIN_SHARE = 0.1


async def _granted(store: Store, ttl_s: int) -> Lease:
    """Grant a lease; if the caller is cancelled meanwhile, revoke what the grant made.

    A backend may finish a grant after its caller stopped waiting (sqlite's
    runs in a thread): without this, a process stopped while starting would
    leave a lease (and what it later holds) behind until its TTL.
    """
    grant = asyncio.ensure_future(store.grant(ttl_s))
    try:
        return await asyncio.shield(grant)
    except asyncio.CancelledError:
        with contextlib.suppress(Exception):
            lease = await grant
            await store.revoke(lease.id)
        raise


@dataclass(frozen=True, slots=True)
class SessionStatistics:
    """Counters of one session.

    Attributes:
        lease_id: the lease (0 before the session starts).
        ttl_s: the lease TTL.
        keepalives: successful renewals.
        failures: renewals that failed (store unreachable or slow).
        last_renewed_s_ago: seconds since the last successful renewal.
        lost: whether the session is lost.
    """

    lease_id: int
    ttl_s: int
    keepalives: int
    failures: int
    last_renewed_s_ago: float
    lost: bool


def loss_deadline(*, last_sent: float, ttl_s: float) -> float:
    """When a session whose last successful renewal was sent at ``last_sent`` is lost.

    ``last_sent + ttl_s - margin`` with ``margin = max(0.1 s, ttl_s / 10)``:
    the store cannot expire the lease before ``last_sent + ttl_s``, since it
    renewed the lease after the request was sent.
    """
    return last_sent + ttl_s - max(_MIN_MARGIN_S, ttl_s * _MARGIN_SHARE)


def next_step(*, now: float, last_sent: float, ttl_s: float, failed: bool) -> float | None:
    """Decide the wait before the next renewal, or None when the session is lost.

    Renew every ``ttl/3`` while renewals succeed; after a failure retry at
    ``ttl/10`` (so a few more tries fit before the deadline); at the deadline
    (:func:`loss_deadline`) the session is lost. The wait never passes the
    deadline.
    """
    left = loss_deadline(last_sent=last_sent, ttl_s=ttl_s) - now
    if left <= 0:
        return None
    wait = ttl_s / 10 if failed else ttl_s / 3
    return min(left, max(_MIN_RETRY_S, wait))


def attempt_budget(*, now: float, last_sent: float, ttl_s: float) -> float:
    """How long one renewal may take: until the deadline, never past it.

    A slow answer is still worth having while the lease lives; a member that
    stopped answering is the backend's to leave (etcd moves to the next one).
    """
    return max(0.0, loss_deadline(last_sent=last_sent, ttl_s=ttl_s) - now)


class Session:
    """A lease on ``store`` kept alive in the background while the session is open.

    Use as ``async with Session(store, ttl_s=10) as session:``; on exit the
    lease is revoked, so everything attached to it goes at once instead of
    after the TTL.

    Args:
        store: the store to hold the lease on.
        ttl_s: lease TTL in whole seconds; the owner's keys outlive a crash by
            at most this long.
        clock: time source (tests pass a FakeClock).
    """

    def __init__(self, store: Store, ttl_s: int = 10, *, clock: Clock = SYSTEM_CLOCK) -> None:
        if not isinstance(ttl_s, int) or isinstance(ttl_s, bool) or ttl_s < 1:
            raise ValidationError(f"session ttl_s must be whole seconds >= 1, got {ttl_s!r}")
        self.store = store
        self.ttl_s = ttl_s
        self._clock = clock
        self._lease_id = 0
        self._last_sent = 0.0
        self._keepalives = 0
        self._failures = 0
        self.lost = LossFlag()
        """Set when the lease is gone or could not be renewed within its TTL."""
        self._tasks: asyncio.TaskGroup | None = None
        self._stop = asyncio.Event()
        self._mutexes: dict[str, asyncio.Lock] = {}
        self._stop_counted = False

    @property
    def lease_id(self) -> int:
        """The session's lease id, to attach keys to (``store.put(..., lease=...)``).

        Raises:
            SessionLostError: the session is lost or not started.
        """
        if self.lost.is_set():
            raise SessionLostError(f"session lease {self._lease_id} is lost: {self.lost.reason}")
        if not self._lease_id:
            raise SessionLostError("session is not started: use 'async with Session(...)'")
        return self._lease_id

    async def __aenter__(self) -> Self:
        asked = self._clock.monotonic()
        lease = await _granted(self.store, self.ttl_s)
        self._lease_id = lease.id
        self._last_sent = asked
        component_metrics().session_opened(self.store.backend)
        self._tasks = asyncio.TaskGroup()
        await self._tasks.__aenter__()
        self._tasks.create_task(self._keep_alive(), name=f"keel-session-{lease.id}")
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop.set()
        if self._lease_id and not self._stop_counted:
            self._stop_counted = True
            component_metrics().session_closed(self.store.backend)
        self.lost.set("session closed")  # ends the owners' monitors before the group joins
        if self._tasks is not None:
            await self._tasks.__aexit__(None, None, None)
            self._tasks = None
        if not self.store.closed:
            with contextlib.suppress(KeelError, TimeoutError):
                async with asyncio.timeout(max(1.0, self.ttl_s / 3)):
                    await self.store.revoke(self._lease_id)

    def _spawn(self, coro: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        """Run an owner's background task for the session's lifetime (it must not raise)."""
        if self._tasks is None:
            coro.close()
            raise SessionLostError("session is not started: use 'async with Session(...)'")
        return self._tasks.create_task(coro, name=name)

    def _local_mutex(self, key: str) -> asyncio.Lock:
        """A process-local FIFO mutex per store key, so one session queues its own contenders."""
        return self._mutexes.setdefault(key, asyncio.Lock())

    async def _keep_alive(self) -> None:
        failed = False
        while not self._stop.is_set():
            wait = next_step(
                now=self._clock.monotonic(),
                last_sent=self._last_sent,
                ttl_s=self.ttl_s,
                failed=failed,
            )
            if wait is None:
                ttl = self.ttl_s
                self._declare_lost(f"lease {self._lease_id} not renewed within its {ttl}s TTL")
                return
            if await self._wait_or_stop(wait):
                return
            sent = self._clock.monotonic()
            budget = attempt_budget(now=sent, last_sent=self._last_sent, ttl_s=self.ttl_s)
            metrics = component_metrics()
            try:
                await self._within(budget, self.store.keepalive(self._lease_id))
            except LeaseNotFoundError:
                self._declare_lost(f"lease {self._lease_id} expired or was revoked")
                return
            except (KeelError, TimeoutError) as exc:
                failed = True
                self._failures += 1
                metrics.keepalive(self.store.backend, None)
                log.info("session keepalive failed, will retry: %s", exc or "timed out")
            else:
                failed = False
                self._keepalives += 1
                metrics.keepalive(self.store.backend, self._clock.monotonic() - sent)
                # The store renewed at some moment after `sent` (a backend answers
                # each call with the renewal of a request written after it), so the
                # lease cannot expire before sent + ttl: count from `sent`.
                self._last_sent = sent

    def _declare_lost(self, reason: str) -> None:
        self.lost.set(reason)
        component_metrics().session_lost(self.store.backend)
        log.warning("session lost: %s", reason)

    async def _within(self, seconds: float, call: Coroutine[Any, Any, int]) -> int:
        """Await ``call`` for at most ``seconds`` on the session's clock.

        Raises:
            TimeoutError: ``call`` had not finished (it is cancelled).
        """
        task = asyncio.ensure_future(call)
        timer = asyncio.ensure_future(self._clock.sleep(seconds))
        try:
            await asyncio.wait({task, timer}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            timer.cancel()
            if not task.done():
                task.cancel()
            await asyncio.gather(task, timer, return_exceptions=True)
        if task.cancelled():
            raise TimeoutError
        return task.result()

    async def _wait_or_stop(self, seconds: float) -> bool:
        """Sleep on the clock unless the session is closed first; True if closed."""
        sleeper = asyncio.ensure_future(self._clock.sleep(seconds))
        stopper = asyncio.ensure_future(self._stop.wait())
        try:
            await asyncio.wait({sleeper, stopper}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            sleeper.cancel()
            stopper.cancel()
        return self._stop.is_set()

    def statistics(self) -> SessionStatistics:
        """A snapshot of the session's counters."""
        ago = self._clock.monotonic() - self._last_sent if self._lease_id else 0.0
        return SessionStatistics(
            lease_id=self._lease_id,
            ttl_s=self.ttl_s,
            keepalives=self._keepalives,
            failures=self._failures,
            last_renewed_s_ago=ago,
            lost=self.lost.is_set(),
        )

    def __repr__(self) -> str:
        state = f"lost ({self.lost.reason})" if self.lost.is_set() else "alive"
        return (
            f"<Session lease={self._lease_id} ttl={self.ttl_s}s {state} "
            f"renewals={self._keepalives}>"
        )
