"""The abstract :class:`Watch`: a stream of changes, with the rules every backend keeps.

Backends subclass it and feed it through three hooks: ``_deliver`` (one
event), ``_behind`` (how far a batch lagged the newest revision) and
``_fail`` (end the stream). It counts itself in the store's watch series.
"""

from __future__ import annotations

import abc
import asyncio
from collections import deque
from collections.abc import AsyncIterator
from time import perf_counter
from types import TracebackType
from typing import Self

from keel.errors import StoreClosedError
from keel.observe._store_metrics import StoreSeries
from keel.store._types import Event

__all__ = ["Watch"]


class Watch(AsyncIterator[Event], abc.ABC):
    """A stream of changes to one key or prefix.

    MUST: deliver every change at a revision ``>= start_revision`` exactly once,
    in revision order (events of one revision in the order the backend applied
    them); replay history when ``start_revision`` is in the past; raise
    :class:`keel.errors.CompactedError` from iteration when it is below the
    compaction point; survive reconnects without gap or duplicate.

    Use as ``async with store.watch(...) as events: async for ev in events``,
    or iterate directly and call :meth:`aclose` when done. :meth:`start`
    establishes the watch; after it, no change is missed even if iteration
    begins later. ``start_revision`` holds the first revision covered.
    """

    def __init__(self, key: str, *, prefix: bool, start_revision: int | None) -> None:
        self.key = key
        self.prefix = prefix
        self.start_revision = start_revision
        self._queue: asyncio.Queue[Event | BaseException] = asyncio.Queue()
        self._started = False
        self._closed = False
        self._last_revision = 0
        self._series: StoreSeries | None = None  # set by Store.watch
        self._counted = False
        self._stamps: deque[float] = deque()  # when each queued event was delivered

    async def start(self) -> Self:
        """Establish the watch (idempotent); return self."""
        if self._closed:
            raise StoreClosedError("this watch was closed: open a new one")
        if not self._started:
            self._started = True
            await self._open()
            if self._series is not None and not self._counted:
                self._counted = True
                self._series.watches += 1
        return self

    def _uncount(self) -> None:
        """Stop counting this watch as open; its queued events are no longer backlog."""
        if self._counted and self._series is not None:
            self._counted = False
            self._series.watches -= 1
            self._series.events_out += len(self._stamps)
            self._stamps.clear()

    def _deliver(self, event: Event) -> None:
        """Backend hook: queue one event (the backend delivers each revision once)."""
        if self._closed:
            return
        self._queue.put_nowait(event)
        if self._series is not None:
            self._series.events_in += 1
            self._stamps.append(perf_counter())

    def _behind(self, revisions: int) -> None:
        """Backend hook: a batch was delivered ``revisions`` behind the store's newest revision."""
        if self._series is not None:
            self._series.behind(revisions)

    def _fail(self, exc: BaseException) -> None:
        """Backend hook: end the stream with ``exc`` after the queued events."""
        if not self._closed:
            self._queue.put_nowait(exc)

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> Event:
        if self._closed and self._queue.empty():
            raise StopAsyncIteration
        if not self._started:
            await self.start()
        item = await self._queue.get()
        if isinstance(item, BaseException):
            self._closed = True
            self._uncount()
            if isinstance(item, StopAsyncIteration):
                raise StopAsyncIteration
            raise item
        self._last_revision = item.kv.mod_revision
        if self._series is not None and self._stamps:
            self._series.taken(perf_counter() - self._stamps.popleft())
        return item

    def get_nowait(self) -> Event | None:
        """Return the next queued event without waiting, or None."""
        if self._queue.empty():
            return None
        item = self._queue.get_nowait()
        if isinstance(item, BaseException):
            self._queue.put_nowait(item)
            return None
        self._last_revision = item.kv.mod_revision
        if self._series is not None and self._stamps:
            self._series.taken(perf_counter() - self._stamps.popleft())
        return item

    async def aclose(self) -> None:
        """Stop the watch and release what it holds (idempotent)."""
        if self._closed and not self._started:
            return
        self._closed = True
        self._uncount()
        if self._started:
            self._started = False
            await self._close()
        self._queue.put_nowait(StopAsyncIteration())

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    @abc.abstractmethod
    async def _open(self) -> None:
        """Register with the backend; set ``start_revision`` if it was None."""

    @abc.abstractmethod
    async def _close(self) -> None:
        """Unregister from the backend."""

    def __repr__(self) -> str:
        state = "closed" if self._closed else ("open" if self._started else "new")
        kind = "prefix" if self.prefix else "key"
        return (
            f"<{type(self).__name__} {kind}={self.key!r} start={self.start_revision} "
            f"last={self._last_revision} {state} queued={self._queue.qsize()}>"
        )
