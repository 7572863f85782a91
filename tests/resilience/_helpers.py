"""Small helpers shared by the resilience tests."""

from __future__ import annotations

import asyncio


async def _nothing() -> None:
    return None


async def settle() -> None:
    """Return once every task already scheduled has taken its next step.

    asyncio runs ready callbacks in FIFO order, so a task created now finishes
    after the steps scheduled before it; no sleeping, no guessing.
    """
    await asyncio.create_task(_nothing())
