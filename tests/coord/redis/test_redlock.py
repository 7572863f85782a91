"""Redlock over three real redis-server processes, with one and two of them stopped."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator

import pytest
import redis.asyncio as aredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from keel.coord.redis import Redlock
from keel.errors import StoreUnavailableError, ValidationError
from keel.testing import RedisServer

KEY = "keel:redlock:{%s}"


@pytest.fixture(scope="module")
def servers() -> Iterator[list[RedisServer]]:
    """Three independent redis-servers for this module."""
    with contextlib.ExitStack() as stack:
        yield [stack.enter_context(RedisServer()) for _ in range(3)]


@pytest.fixture
async def clients(servers: list[RedisServer]) -> AsyncIterator[list[aredis.Redis]]:
    """One client per server (no redis-py retries); every server resumed at teardown."""
    opened = [aredis.Redis.from_url(s.url, retry=Retry(NoBackoff(), 0)) for s in servers]
    try:
        yield opened
    finally:
        for server in servers:
            server.resume()
        for client in opened:
            await client.aclose()


async def values(clients: list[aredis.Redis], name: str) -> list[bytes | None]:
    """The lock key's value on each server."""
    return [await c.get(KEY % name) for c in clients]


async def test_acquire_holds_on_every_server(clients: list[aredis.Redis], name: str) -> None:
    """With all servers up the lock is set on all three; release deletes it everywhere."""
    async with Redlock(clients, name, 5) as held:
        stored = await values(clients, name)
        assert all(v is not None for v in stored)
        assert len({v.rsplit(b":", 1)[0] for v in stored if v}) == 1
        assert held.fencing_token == max(t for t in held.tokens if t is not None)
        assert 0 < held.validity_s < 5
    assert await values(clients, name) == [None, None, None]
    assert held.lost.reason == "released"


async def test_a_second_contender_is_refused(clients: list[aredis.Redis], name: str) -> None:
    """While held, another Redlock's try_acquire is refused and leaves none of its keys."""
    held = await Redlock(clients, name, 5).acquire()
    before = await values(clients, name)
    assert await Redlock(clients, name, 5).try_acquire() is None
    assert await values(clients, name) == before
    await held.release()


async def test_a_minority_grant_is_released_everywhere(
    clients: list[aredis.Redis], name: str
) -> None:
    """Winning one server of three is no lock: that server's key is deleted again."""
    for foreign in clients[:2]:
        await foreign.set(KEY % name, "other:1", px=5000)
    assert await Redlock(clients, name, 5).try_acquire() is None
    assert await values(clients, name) == [b"other:1", b"other:1", None]


async def test_one_stopped_server_is_tolerated(
    servers: list[RedisServer], clients: list[aredis.Redis], name: str
) -> None:
    """With one server SIGSTOPped the lock is still taken, on the other two."""
    servers[0].pause()
    lock = Redlock(clients, name, 5, server_timeout_s=0.2)
    held = await lock.acquire(timeout_s=5)
    assert held.tokens[0] is None and None not in held.tokens[1:]
    assert held.validity_s < 5 - 0.2
    await held.extend()
    assert await Redlock(clients, name, 5, server_timeout_s=0.2).try_acquire() is None
    await held.release()


async def test_two_stopped_servers_refuse_the_lock(
    servers: list[RedisServer], clients: list[aredis.Redis], name: str
) -> None:
    """With two of three servers stopped, acquiring raises StoreUnavailableError."""
    servers[0].pause()
    servers[1].pause()
    lock = Redlock(clients, name, 5, server_timeout_s=0.2)
    with pytest.raises(StoreUnavailableError, match="majority"):
        await lock.try_acquire()
    with pytest.raises(StoreUnavailableError, match="majority"):
        await lock.acquire(timeout_s=5)
    assert await clients[2].get(KEY % name) is None


async def test_contending_tasks_take_turns(clients: list[aredis.Redis], name: str) -> None:
    """Four tasks with their own Redlock never overlap (tokens are best effort: not checked)."""
    inside = 0
    tokens: list[int] = []

    async def worker() -> None:
        nonlocal inside
        for _ in range(5):
            async with Redlock(clients, name, 5, retry_delay_s=0.02) as held:
                inside += 1
                assert inside == 1
                await asyncio.sleep(0.001)
                tokens.append(held.fencing_token)
                inside -= 1

    async with asyncio.timeout(30), asyncio.TaskGroup() as group:
        for _ in range(4):
            group.create_task(worker())
    assert len(tokens) == 20


def test_no_clients_is_refused() -> None:
    """A Redlock over no servers raises ValidationError."""
    with pytest.raises(ValidationError, match="at least one"):
        Redlock([], "x")


async def test_repr_tells_quorum_and_state(clients: list[aredis.Redis], name: str) -> None:
    """The repr names the server count, the quorum and whether it is held."""
    lock = Redlock(clients, name, 5)
    assert "3 servers (quorum 2)" in repr(lock) and "not held" in repr(lock)
    async with lock as held:
        assert "held" in repr(held)
