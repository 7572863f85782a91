"""A one-way flag that can be awaited: how loss is made visible."""

from __future__ import annotations

import asyncio
from collections.abc import Generator
from typing import Any

__all__ = ["LossFlag"]


class LossFlag:
    """Set once, never cleared; ``await flag`` (or ``await flag.wait()``) until it is set.

    Used for ``session.lost``, ``held.lost`` and ``leadership.lost``: owners
    check ``flag.is_set()`` before acting, or await it in a task that
    cancels their work.
    """

    __slots__ = ("_event", "_reason")

    def __init__(self) -> None:
        self._event = asyncio.Event()
        self._reason: str | None = None

    def set(self, reason: str) -> None:
        """Set the flag with a human-readable reason (later calls keep the first reason)."""
        if self._reason is None:
            self._reason = reason
        self._event.set()

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
