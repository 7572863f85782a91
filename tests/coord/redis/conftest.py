"""Fixtures of the Redis lock tests: a client of the shared redis-server, names, children."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aredis

from keel.testing import RedisServer
from tests.coord.redis._procs import Children


@pytest.fixture
async def client(redis_server: RedisServer) -> AsyncIterator[aredis.Redis]:
    """A pooled asyncio client of the session's redis-server, closed at teardown."""
    opened = aredis.Redis.from_url(redis_server.url)
    try:
        yield opened
    finally:
        await opened.aclose()


@pytest.fixture
def name() -> str:
    """A lock name no other test uses."""
    return f"t-{uuid.uuid4().hex[:10]}"


@pytest.fixture
async def children() -> AsyncIterator[Children]:
    """Child processes of one test, killed at teardown."""
    spawned = Children()
    try:
        yield spawned
    finally:
        await spawned.close()
