"""A one-way flag that can be awaited: how loss is made visible."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Generator
from typing import Any

__all__ = ["LossFlag"]


class LossFlag:
    """Set once, never cleared; ``await flag`` (or ``await flag.wait()``) until it is set.

    Used for ``session.lost``, ``held.lost`` and ``leadership.lost``: owners
    check ``flag.is_set()`` before acting, or await it in a task that
    cancels their work.
    """

    __slots__ = ("_callbacks", "_event", "_reason")

    def __init__(self) -> None:
        self._event = asyncio.Event()
        self._reason: str | None = None
        self._callbacks: list[Callable[[str], object]] = []

    def set(self, reason: str) -> None:
        """Set the flag with a human-readable reason (later calls keep the first reason)."""
        if self._reason is None:
            self._reason = reason
        self._event.set()
        callbacks, self._callbacks = self._callbacks, []
        for callback in callbacks:
            callback(self._reason)

    def on_set(self, callback: Callable[[str], object]) -> Callable[[], None]:
        """Call ``callback(reason)`` when the flag is set (at once if it is); return a remover.

        Cheaper than a task awaiting the flag, for owners that only need to
        pass the loss on.
        """
        if self._reason is not None:
            callback(self._reason)
            return lambda: None
        self._callbacks.append(callback)

        def remove() -> None:
            if callback in self._callbacks:
                self._callbacks.remove(callback)

        return remove

    def is_set(self) -> bool:
        """Whether the loss has happened."""
        return self._event.is_set()

    @property
    def reason(self) -> str | None:
        """Why it was set, or None while it is not."""
        return self._reason

    async def wait(self) -> str:
        """Wait until set; return the reason."""
        await self._event.wait()
        return self._reason or "lost"

    def __await__(self) -> Generator[Any, None, str]:
        return self.wait().__await__()

    def __bool__(self) -> bool:
        return self.is_set()

    def __repr__(self) -> str:
        return f"<LossFlag {'set: ' + repr(self._reason) if self.is_set() else 'clear'}>"
