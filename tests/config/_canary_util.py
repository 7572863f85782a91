"""Waiting on a canary record in tests (bounded polling: the record lives in another process)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from keel.config import Canary, ConfigCenter


async def canary_until(
    center: ConfigCenter, name: str, ok: Callable[[Canary], bool], timeout_s: float = 30
) -> Canary:
    """Wait (bounded) until the canary record of ``name`` satisfies ``ok``; return it."""
    async with asyncio.timeout(timeout_s):
        while True:
            canary = await center.canary(name)
            if canary is not None and ok(canary):
                return canary
            await asyncio.sleep(0.05)
