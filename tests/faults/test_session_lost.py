"""A session learns it is lost when its store stops answering past the TTL."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import pytest

import keel
from keel.coord import Session
from keel.testing import EtcdCluster


@pytest.fixture
def private_etcd() -> Iterator[EtcdCluster]:
    """An etcd member of this test's own, since the test freezes it."""
    with EtcdCluster(1) as cluster:
        yield cluster


@pytest.mark.slow
async def test_sigstopped_etcd_makes_the_session_lost(private_etcd: EtcdCluster) -> None:
    """etcd SIGSTOPped past the TTL: `lost` fires within TTL + 2 s, never before the TTL."""
    async with (
        keel.connect(f"{private_etcd.url}?timeout_s=1") as store,
        Session(store, ttl_s=2) as session,
    ):
        await asyncio.sleep(1.0)
        assert not session.lost.is_set()
        private_etcd.pause(0)
        stopped = time.monotonic()
        try:
            async with asyncio.timeout(2 + 2 + 1):
                reason = await session.lost
            waited = time.monotonic() - stopped
        finally:
            private_etcd.resume(0)
        assert "not renewed within" in reason
        assert waited >= 1.0  # the last renewal was at most ttl/3 before the stop
