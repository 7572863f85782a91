"""Small helpers shared by tests."""

from __future__ import annotations

import asyncio
from collections.abc import Callable


async def eventually(
    predicate: Callable[[], bool], timeout_s: float, every_s: float = 0.05
) -> None:
    """Poll a cheap in-memory condition until it holds (for state with no event to wait on)."""
    async with asyncio.timeout(timeout_s):
        while True:
            if predicate():
                return
            await asyncio.sleep(every_s)
