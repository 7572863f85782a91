"""Helpers of the Redis lock tests: read the server's state, bounded."""

from __future__ import annotations

import asyncio

import redis.asyncio as aredis


async def until_blocked(client: aredis.Redis, count: int, timeout_s: float = 10.0) -> None:
    """Return once exactly ``count`` clients are blocked (in BLPOP) on the server.

    The state lives in the server, which sends no event for it: poll, bounded.
    """
    async with asyncio.timeout(timeout_s):
        while True:
            if (await client.info("clients"))["blocked_clients"] == count:
                return
            await asyncio.sleep(0.01)


async def lock_keys(client: aredis.Redis, name: str) -> set[str]:
    """The Redis keys of lock ``name`` that exist now."""
    return {k.decode() for k in await client.keys(f"keel:lock:{{{name}}}*")}


async def calls(client: aredis.Redis, command: str) -> int:
    """How many times ``command`` ran on the server so far."""
    stats = await client.info("commandstats")
    return int(stats.get(f"cmdstat_{command}", {}).get("calls", 0))
