"""Helpers of the keel.events tests: collect events from a subscription, wait for ownership."""

from __future__ import annotations

import asyncio

from keel.events import Event, Subscription
from keel.events._member import owned_partitions

FAST = {"member_ttl_s": 2.0, "block_s": 0.2}
"""Subscription options for tests: quick takeover, short blocking reads."""


async def take(
    sub: Subscription, count: int, *, ack: bool = True, timeout_s: float = 20
) -> list[Event]:
    """The next ``count`` events of ``sub`` (acked unless ``ack=False``)."""
    got: list[Event] = []
    async with asyncio.timeout(timeout_s):
        while len(got) < count:
            event = await sub.next()
            got.append(event)
            if ack:
                await event.ack()
    return got


async def settled(*subs: Subscription, partitions: int = 4, timeout_s: float = 20) -> None:
    """Wait until the consumers of one group own the partitions rendezvous hashing gives them."""
    names = [sub.name for sub in subs]
    want = [sorted(owned_partitions(partitions, names, name)) for name in names]
    async with asyncio.timeout(timeout_s):
        while [sub.owned for sub in subs] != want:  # noqa: ASYNC110  # ownership has no event
            await asyncio.sleep(0.05)
