"""Small asyncio helpers shared by every layer (imports nothing of keel)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Generator
from types import TracebackType
from typing import Any, Generic, TypeVar

__all__ = ["Opening"]

T = TypeVar("T")


class Opening(Generic[T]):
    """Something that opens a resource: ``x = await opening`` or ``async with opening as x``.

    The ``async with`` form closes the resource on exit; the ``await`` form
    leaves closing to the caller. Used by ``keel.connect``,
    ``Election.campaign``, ``Registry.register`` and ``ConfigCenter.bind``.

    Args:
        open: makes the resource (called once).
        close: ends it (``async with`` only).
    """

    __slots__ = ("_close", "_open", "_value")

    def __init__(
        self, open: Callable[[], Awaitable[T]], close: Callable[[T], Awaitable[object]]
    ) -> None:
        self._open = open
        self._close = close
        self._value: T | None = None

    def __await__(self) -> Generator[Any, None, T]:
        return self._await().__await__()

    async def _await(self) -> T:
        return await self._open()

    async def __aenter__(self) -> T:
        self._value = await self._open()
        return self._value

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._value is not None:
            await self._close(self._value)
