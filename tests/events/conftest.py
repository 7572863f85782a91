"""Fixtures of the keel.events tests: an engine of every kind (store backends and Redis)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

import keel
from keel.events import Bus, Engine, EventsMetrics
from keel.events._store_engine import StoreEngine
from tests.conftest import make_url

ENGINES = (
    "memory",
    "sqlite",
    pytest.param("etcd", marks=pytest.mark.etcd),
    "redis",
)


def engine_url(name: str, request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A URL for ``keel.events.connect`` that only this test uses (not for memory)."""
    if name == "redis":
        pytest.importorskip("keel.events.redis", reason="the Redis engine is not built yet")
        server = request.getfixturevalue("redis_server")
        return f"{server.url}?prefix=t-{uuid.uuid4().hex[:10]}:"
    return make_url(name, request, tmp_path)


@pytest.fixture(params=ENGINES)
def engine_name(request: pytest.FixtureRequest) -> str:
    """The name of the engine under test."""
    name: str = request.param
    return name


@pytest.fixture
async def engine(
    engine_name: str, request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[Engine]:
    """An open engine of each kind, empty."""
    url = engine_url(engine_name, request, tmp_path)
    if engine_name == "redis":
        from keel.events.redis import RedisEngine

        opened: Engine = await RedisEngine.connect(url)
        try:
            yield opened
        finally:
            await opened.aclose()
        return
    async with keel.connect(url) as store:
        opened = StoreEngine(store)
        try:
            yield opened
        finally:
            await opened.aclose()


@pytest.fixture
async def bus(engine: Engine) -> AsyncIterator[Bus]:
    """A bus on each engine, counting into a private metrics registry."""
    opened = Bus(engine, partitions=4, metrics=EventsMetrics())
    try:
        yield opened
    finally:
        await opened.aclose()
