"""RedisLock across real OS processes: mutual exclusion, fencing order, a kill -9ed owner."""

from __future__ import annotations

import asyncio
import itertools
import time

import pytest
import redis.asyncio as aredis

from keel.coord.redis import RedisLock
from keel.testing import RedisServer
from tests._procs import Children

CHILD = "tests.coord.redis._child"

pytestmark = pytest.mark.slow


async def test_eight_processes_keep_mutual_exclusion(
    children: Children, redis_server: RedisServer, client: aredis.Redis, name: str
) -> None:
    """8 processes x 50 guarded read-modify-writes: exact count, tokens strictly increasing."""
    procs = [
        await children.start(CHILD, "counter", redis_server.url, name, 50, 5) for _ in range(8)
    ]
    for child in procs:
        await child.expect("ready")
    for child in procs:
        child.send("go")
    for child in procs:
        await child.expect("done", timeout_s=60)
        assert await child.wait() == 0
    assert int(await client.get(f"test:{name}:counter")) == 400
    tokens = [int(t) for t in await client.lrange(f"test:{name}:tokens", 0, -1)]
    assert len(tokens) == 400
    assert all(a < b for a, b in itertools.pairwise(tokens))
    assert await client.exists(f"keel:lock:{{{name}}}") == 0


async def test_killed_owner_is_replaced_within_ttl(
    children: Children, redis_server: RedisServer, client: aredis.Redis, name: str
) -> None:
    """A kill -9ed owner's lock goes to the waiter within TTL + 2 s, with a higher token."""
    ttl_s = 2.0
    owner = await children.start(CHILD, "holder", redis_server.url, name, ttl_s)
    (token,) = await owner.expect("held")
    waiter = asyncio.create_task(RedisLock(client, name, ttl_s).acquire(timeout_s=20))
    owner.kill9()
    killed_at = time.monotonic()
    held = await asyncio.wait_for(waiter, 20)
    waited = time.monotonic() - killed_at
    assert waited <= ttl_s + 2.0, waited
    assert held.fencing_token > int(token)
    await held.release()
