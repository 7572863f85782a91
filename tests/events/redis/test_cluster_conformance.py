"""The engine conformance suite once more, on the real 3-master Redis Cluster."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from keel.events.redis import RedisEngine
from keel.testing import RedisCluster
from tests.events.conformance.test_engine import *  # noqa: F403  # the same tests, collected here
from tests.events.redis._util import prefix


@pytest.fixture
async def engine(redis_cluster: RedisCluster) -> AsyncIterator[RedisEngine]:
    """Overrides the engine of the suite: a RedisEngine on the cluster."""
    opened = await RedisEngine.connect(f"{redis_cluster.url}?prefix={prefix()}")
    try:
        yield opened
    finally:
        await opened.aclose()
