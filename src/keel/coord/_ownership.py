"""What a held lock, a held semaphore slot and a leadership have in common."""

from __future__ import annotations

import asyncio
import time
from types import TracebackType
from typing import Self

from keel.coord._flag import LossFlag
from keel.coord._queue import MONITOR_DELAY_S, leave, watch_key
from keel.coord._session import Session
from keel.observe import capability_metrics
from keel.observe._component_metrics import component_metrics
from keel.observe.spans import end_span, start_span
from keel.store import Compare

__all__ = ["Ownership"]


class Ownership:
    """Owning a key in a line: its fencing token, its loss flag, its guard, its end.

    Attributes:
        kind: ``lock``, ``slot`` or ``leadership`` (the metrics label).
        key: the owner key in the store.
        fencing_token: the key's create_revision; strictly increasing across owners.
        lost: set when the session is lost or the key was deleted by someone else
            (or, with the reason "released"/"resigned", when this process ended it).
    """

    kind = "lock"

    def __init__(
        self, session: Session, key: str, token: int, what: str, *, waited_s: float = 0.0
    ) -> None:
        self.key = key
        self.fencing_token = token
        self.lost = LossFlag()
        self._session = session
        self._what = what
        self._ended = False
        # Loss of the session reaches us through a callback (no task per hold);
        # the key itself is watched only once the hold has lasted a moment, so
        # short holds never pay for a watch (see keel.coord._queue.watch_key).
        self._monitor: asyncio.Task[None] | None = None
        self._timer: asyncio.TimerHandle | None = asyncio.get_running_loop().call_later(
            MONITOR_DELAY_S, self._watch
        )
        self._unhook = session.lost.on_set(self._session_lost)
        capability_metrics().acquired(self.kind, waited_s)
        self.since = time.monotonic()
        """When the ownership began (``time.monotonic()``); for the longest-hold series."""
        component_metrics().hold(self)
        self._span = start_span(
            f"{self.kind} hold",
            {"keel.key": key, "keel.fencing_token": token, "keel.kind": self.kind},
        )

    def _session_lost(self, reason: str) -> None:
        self.lost.set(f"{self._what}: session lost ({reason})")
        self._stop_watching()

    def _watch(self) -> None:
        self._timer = None
        if not self._ended and not self.lost.is_set():
            self._monitor = self._session._spawn(
                watch_key(self._session, self.key, self.fencing_token, self.lost, self._what),
                name=f"keel-monitor-{self.key}",
            )

    def _stop_watching(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._monitor is not None:
            self._monitor.cancel()

    def guard(self) -> Compare:
        """A compare that holds only while this process still owns the key.

        Put it in your own transaction:
        ``await store.txn([held.guard()], [Put("reports/x", data)])``.
        """
        return Compare.create_revision(self.key, "==", self.fencing_token)

    async def _end(self, reason: str) -> bool:
        """Delete the key and mark the ownership ended; False if it had ended already."""
        if self._ended:
            return False
        self._ended = True
        self._unhook()
        self._stop_watching()
        capability_metrics().ended(self.kind, lost=self.lost.is_set())
        if self._span is not None:
            self._span.set_attribute("keel.lost", self.lost.is_set())
            end_span(self._span)
        try:
            await leave(self._session.store, self.key)
        finally:
            self.lost.set(reason)
        return True

    async def _finish(self) -> None:
        """End the ownership the way the subclass names it (release, resign)."""
        await self._end("released")

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._finish()

    def _state(self) -> str:
        return "ended" if self._ended else ("lost" if self.lost.is_set() else "held")
