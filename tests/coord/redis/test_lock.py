"""RedisLock on a real redis-server, contenders in one process."""

from __future__ import annotations

import asyncio
import math

import pytest
import redis.asyncio as aredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from keel.coord.redis import RedisLock
from keel.errors import LockLostError, StoreUnavailableError, ValidationError
from keel.testing import free_port
from tests.coord.redis._util import calls, lock_keys, until_blocked


async def test_uncontended_acquire_and_release(client: aredis.Redis, name: str) -> None:
    """The owner value holds the token; release deletes the key; tokens increase."""
    async with RedisLock(client, name, 10) as held:
        assert await client.get(held.key) == held.value.encode()
        assert held.value.endswith(f":{held.fencing_token}")
        assert 9 < await client.pttl(held.key) / 1000 <= 10
        assert not held.lost
    assert await client.exists(held.key) == 0
    assert held.lost.reason == "released"
    again = await RedisLock(client, name, 10).acquire()
    assert again.fencing_token == held.fencing_token + 1
    await again.release()


async def test_try_acquire_while_held_returns_none(client: aredis.Redis, name: str) -> None:
    """try_acquire answers None while another owner holds it, and changes nothing."""
    held = await RedisLock(client, name).acquire()
    before = await lock_keys(client, name)
    assert await RedisLock(client, name).try_acquire() is None
    assert await lock_keys(client, name) == before
    assert await client.get(held.key) == held.value.encode()
    await held.release()
    mine = await RedisLock(client, name).try_acquire()
    assert mine is not None and mine.fencing_token > held.fencing_token
    await mine.release()


async def test_release_wakes_a_waiter_without_polling(client: aredis.Redis, name: str) -> None:
    """A waiter blocks in BLPOP and wakes on release, long before the 30 s TTL."""
    held = await RedisLock(client, name, 30).acquire()
    before = await calls(client, "evalsha")
    waiter = asyncio.create_task(RedisLock(client, name, 30).acquire(timeout_s=10))
    await until_blocked(client, 1)
    await held.release()
    async with asyncio.timeout(2):
        second = await waiter
    # the waiter's failed try, the release, the waiter's win: nothing in a loop
    assert await calls(client, "evalsha") - before == 3
    assert second.fencing_token == held.fencing_token + 1
    await second.release()


async def test_cancelled_waiter_leaves_nothing_behind(client: aredis.Redis, name: str) -> None:
    """A cancelled waiter unblocks on the server and leaves no key; the owner keeps its lock."""
    held = await RedisLock(client, name).acquire()
    before = await lock_keys(client, name)
    waiter = asyncio.create_task(RedisLock(client, name).acquire())
    await until_blocked(client, 1)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    await until_blocked(client, 0)
    assert await lock_keys(client, name) == before
    assert await client.get(held.key) == held.value.encode()
    await held.release()
    async with asyncio.timeout(2):
        await (await RedisLock(client, name).acquire()).release()


async def test_acquire_timeout_raises_and_leaves_nothing(client: aredis.Redis, name: str) -> None:
    """acquire(timeout_s=...) raises TimeoutError and leaves no key or blocked client."""
    held = await RedisLock(client, name).acquire()
    before = await lock_keys(client, name)
    with pytest.raises(TimeoutError):
        await RedisLock(client, name).acquire(timeout_s=0.2)
    await until_blocked(client, 0)
    assert await lock_keys(client, name) == before
    await held.release()


async def test_tasks_sharing_one_object_take_turns(client: aredis.Redis, name: str) -> None:
    """Tasks sharing one RedisLock object queue locally, one holder at a time."""
    lock = RedisLock(client, name)
    inside = 0
    tokens: list[int] = []

    async def worker() -> None:
        nonlocal inside
        for _ in range(5):
            async with lock as held:
                inside += 1
                assert inside == 1
                await asyncio.sleep(0)
                tokens.append(held.fencing_token)
                inside -= 1

    async with asyncio.timeout(10), asyncio.TaskGroup() as group:
        for _ in range(4):
            group.create_task(worker())
    assert tokens == sorted(tokens) and len(set(tokens)) == 20


async def test_auto_extend_keeps_the_lock_past_its_ttl(client: aredis.Redis, name: str) -> None:
    """A held lock outlives four TTLs while its holder is alive."""
    async with RedisLock(client, name, 0.3) as held:
        await asyncio.sleep(1.2)
        assert not held.lost
        assert await client.get(held.key) == held.value.encode()
        assert await RedisLock(client, name, 0.3).try_acquire() is None


async def test_deleted_key_sets_lost(client: aredis.Redis, name: str) -> None:
    """A key deleted behind the owner's back sets held.lost at the next extension."""
    held = await RedisLock(client, name, 0.6).acquire()
    await client.delete(held.key)
    async with asyncio.timeout(2):
        reason = await held.lost
    assert "taken over" in reason
    with pytest.raises(LockLostError):
        held.check()
    await held.release()


async def test_overwritten_key_sets_lost_and_release_spares_it(
    client: aredis.Redis, name: str
) -> None:
    """A key taken by someone else sets lost; release leaves the new owner's key alone."""
    held = await RedisLock(client, name, 0.6).acquire()
    await client.set(held.key, "intruder:999", px=10_000)
    async with asyncio.timeout(2):
        await held.lost
    with pytest.raises(LockLostError):
        await held.extend()
    await held.release()
    assert await client.get(held.key) == b"intruder:999"


async def test_extend_resets_the_ttl(client: aredis.Redis, name: str) -> None:
    """extend() puts the key's TTL back to the full ttl_s."""
    async with RedisLock(client, name, 5, auto_extend=False) as held:
        await client.pexpire(held.key, 1000)
        await held.extend()
        assert await client.pttl(held.key) > 4000
        assert held.remaining_s() > 4


async def test_unreachable_redis_raises_store_unavailable(name: str) -> None:
    """A connection error becomes StoreUnavailableError, chained to redis-py's error."""
    dead = aredis.Redis(port=free_port(), retry=Retry(NoBackoff(), 0))
    try:
        with pytest.raises(StoreUnavailableError) as caught:
            await RedisLock(dead, name).acquire(timeout_s=5)
        assert caught.value.__cause__ is not None
    finally:
        await dead.aclose()


@pytest.mark.parametrize("ttl_s", [0, -1, 0.001, math.nan, math.inf, "10"])
def test_bad_ttl_is_refused(client: aredis.Redis, ttl_s: object) -> None:
    """A TTL that is not a finite number of seconds >= 10 ms raises ValidationError."""
    with pytest.raises(ValidationError, match="ttl_s"):
        RedisLock(client, "x", ttl_s)  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", ["", "a{b", "a}b", "a\nb"])
def test_bad_name_is_refused(client: aredis.Redis, bad: str) -> None:
    """An empty name, or one with braces or control characters, raises ValidationError."""
    with pytest.raises(ValidationError, match="name"):
        RedisLock(client, bad)


async def test_negative_timeout_is_refused(client: aredis.Redis, name: str) -> None:
    """A negative timeout_s raises ValidationError before touching Redis."""
    with pytest.raises(ValidationError, match="timeout_s"):
        await RedisLock(client, name).acquire(timeout_s=-1)


async def test_reprs_tell_state(client: aredis.Redis, name: str) -> None:
    """The lock and its handle say whether it is held, with the token."""
    lock = RedisLock(client, name, 10)
    assert "not held" in repr(lock)
    async with lock as held:
        assert f"token={held.fencing_token} held" in repr(held)
        assert "held" in repr(lock)
    assert "released" in repr(held)
