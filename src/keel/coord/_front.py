"""The part every lock object shares: ``async with lock as held`` and ``release()``."""

from __future__ import annotations

import abc
from types import TracebackType
from typing import Generic, Protocol, TypeVar

__all__ = ["Releasable", "SingleHolder"]


class Releasable(Protocol):
    """Something held that can be given up."""

    async def release(self) -> None:
        """Give it up (idempotent)."""
        ...


H = TypeVar("H", bound=Releasable)


class SingleHolder(abc.ABC, Generic[H]):
    """A lock object that holds at most one ``H`` at a time (store Lock, RedisLock, Redlock).

    Subclasses implement :meth:`acquire` and keep the current hold in ``_held``.
    """

    _held: H | None

    @abc.abstractmethod
    async def acquire(self) -> H:
        """Wait until held; return the hold."""

    async def release(self) -> None:
        """Release the hold this object has, if any."""
        if self._held is not None:
            await self._held.release()

    async def __aenter__(self) -> H:
        return await self.acquire()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.release()
