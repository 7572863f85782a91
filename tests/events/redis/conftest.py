"""Fixtures of the Redis Streams engine tests: engines on the shared server and cluster."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from keel.events.redis import RedisEngine
from keel.testing import RedisCluster, RedisServer
from tests.events.redis._util import prefix


@pytest.fixture
async def engine(redis_server: RedisServer) -> AsyncIterator[RedisEngine]:
    """A RedisEngine on the session's redis-server, under a prefix of its own."""
    opened = await RedisEngine.connect(f"{redis_server.url}?prefix={prefix()}")
    try:
        yield opened
    finally:
        await opened.aclose()


@pytest.fixture
async def cluster_engine(redis_cluster: RedisCluster) -> AsyncIterator[RedisEngine]:
    """A RedisEngine on the session's 3-master Redis Cluster, under a prefix of its own."""
    opened = await RedisEngine.connect(f"{redis_cluster.url}?prefix={prefix()}")
    try:
        yield opened
    finally:
        await opened.aclose()
