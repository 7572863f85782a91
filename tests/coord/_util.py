"""Test helpers for coordination: wait on the store's state without sleeping."""

from __future__ import annotations

import asyncio

from keel.store import EventType, Store


async def until_keys(store: Store, prefix: str, count: int, timeout_s: float = 10.0) -> None:
    """Return once at least ``count`` keys exist under ``prefix`` (watch-driven)."""
    async with asyncio.timeout(timeout_s):
        kvs, revision = await store.range(prefix)
        keys = {kv.key for kv in kvs}
        if len(keys) >= count:
            return
        async with store.watch(prefix, prefix=True, start_revision=revision + 1) as events:
            async for event in events:
                if event.type is EventType.PUT:
                    keys.add(event.kv.key)
                else:
                    keys.discard(event.kv.key)
                if len(keys) >= count:
                    return
