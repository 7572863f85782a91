"""Fixtures of the Redis lock tests: a client of the shared redis-server, and names."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aredis

from keel.testing import RedisServer


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
