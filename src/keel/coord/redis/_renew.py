"""Auto-extension of a held Redis lock, and the deadline after which it counts as lost.

A Redis lock is a key with a TTL; holding it longer than the TTL means
extending it before it runs out. The renewer extends every ``ttl / 3`` (two
more chances before expiry if one fails, the same rhythm as a keel
``Session``'s keepalive), retries sooner after a transport error, and sets
the holder's ``lost`` flag when:

- an extension answers "not the owner" (the key expired or was deleted or
  overwritten by someone else), or
- the validity deadline passes without a successful extension (Redis was
  unreachable for the whole TTL): from then on another process may own it.

The deadline is counted from the moment each extension was *sent*, never
from when its answer arrived, so a slow answer can only make us give up
early, never late.

There is no session whose task group could own this task (a Redis lock
stands alone), so the held lock owns it: it is started by a timer set at
acquire and cancelled at release; nothing it raises is dropped, every
failure ends in ``lost`` with a reason.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from keel.clock import Clock
from keel.coord._flag import LossFlag
from keel.errors import KeelError, StoreUnavailableError

__all__ = ["Renewer"]

log = logging.getLogger("keel.coord.redis")

RETRY_FRACTION = 0.25
"""After a failed extension, retry after this fraction of the normal interval."""


class Renewer:
    """Extends a held lock every ``interval_s`` until stopped or lost.

    Args:
        what: names the lock in reasons and logs.
        extend: one extension; returns the new monotonic validity deadline, or
            None when this process is no longer the owner. May raise
            :class:`StoreUnavailableError` (retried until the deadline).
        deadline: returns the current validity deadline (monotonic seconds).
        lost: the holder's loss flag.
        interval_s: time between extensions.
        clock: the time source.
    """

    __slots__ = (
        "_clock",
        "_deadline",
        "_extend",
        "_interval_s",
        "_lost",
        "_task",
        "_timer",
        "_what",
    )

    def __init__(
        self,
        *,
        what: str,
        extend: Callable[[], Awaitable[float | None]],
        deadline: Callable[[], float],
        lost: LossFlag,
        interval_s: float,
        clock: Clock,
    ) -> None:
        self._what = what
        self._extend = extend
        self._deadline = deadline
        self._lost = lost
        self._interval_s = interval_s
        self._clock = clock
        self._task: asyncio.Task[None] | None = None
        self._timer: asyncio.TimerHandle | None = None

    def start(self) -> None:
        """Begin extending: the first extension is due after ``interval_s``.

        Until then there is only a timer on the event loop, no task: most
        locks are held for less than a third of their TTL, and a task per
        acquire cost a tenth of the uncontended throughput (bench/locks_redis.py).
        """
        loop = asyncio.get_running_loop()
        self._timer = loop.call_later(self._interval_s, self._due)

    def _due(self) -> None:
        self._timer = None
        self._task = asyncio.get_running_loop().create_task(
            self._run(), name=f"keel-redis-renew {self._what}"
        )

    def stop(self) -> None:
        """Stop extending.

        A running task is cancelled, not awaited: an extension still in flight
        is harmless, since it only extends a key that still holds our owner value.
        """
        timer, self._timer = self._timer, None
        if timer is not None:
            timer.cancel()
        task, self._task = self._task, None
        if task is not None:
            task.cancel()

    async def _run(self) -> None:
        next_at = self._clock.monotonic()
        while not self._lost.is_set():
            await self._clock.sleep(min(next_at, self._deadline()) - self._clock.monotonic())
            if self._clock.monotonic() >= self._deadline():
                self._lost.set(f"{self._what} could not be extended before its ttl ran out")
                return
            next_at = await self._once()

    async def _once(self) -> float:
        """One extension; returns when to try the next one."""
        now = self._clock.monotonic()
        try:
            async with asyncio.timeout(max(0.0, self._deadline() - now)):
                valid_until = await self._extend()
        except (StoreUnavailableError, TimeoutError) as exc:
            log.warning("extending %s failed, retrying: %s", self._what, exc)
            return now + self._interval_s * RETRY_FRACTION
        except KeelError as exc:
            self._lost.set(f"{self._what} could not be extended: {exc}")
            return now
        if valid_until is None:
            self._lost.set(f"{self._what} expired or was taken over: its key no longer holds ours")
        return now + self._interval_s

    def __repr__(self) -> str:
        running = self._task is not None and not self._task.done()
        state = "running" if running else "idle"
        return f"<Renewer {self._what} every {self._interval_s:g}s {state}>"
