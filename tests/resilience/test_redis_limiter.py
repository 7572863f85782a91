"""Redis-backed limiters on a real redis-server: global rate, fallback and recovery."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from keel.errors import RateLimitedError
from keel.resilience import RedisGCRA, RedisSlidingWindow
from keel.testing import FakeClock, RedisServer

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def own_redis() -> Iterator[RedisServer]:
    """A redis-server this test alone may stop, kill and restart."""
    with RedisServer() as server:
        yield server


def key() -> str:
    """A Redis key no other test uses."""
    return f"test:{uuid.uuid4().hex}"


async def test_gcra_admits_burst_then_refuses(redis_server: RedisServer) -> None:
    """A fresh Redis GCRA admits its burst, then refuses with a retry-after."""
    async with (
        asyncio.timeout(10),
        RedisGCRA(redis_server.url, key(), rate=1.0, burst=3) as limiter,
    ):
        results = [await limiter.try_acquire() for _ in range(4)]
        assert results == [True, True, True, False]
        assert 0.5 < limiter.last_retry_after_s <= 1.0
        with pytest.raises(RateLimitedError):
            await limiter.run(asyncio.sleep, 0)
        stats = limiter.statistics()
        assert (stats.mode, stats.redis_decisions, stats.local_decisions) == ("redis", 5, 0)


async def test_sliding_window_counts_across_clients(redis_server: RedisServer) -> None:
    """Two clients on one key share one sliding-window count."""
    shared = key()
    async with (
        asyncio.timeout(10),
        RedisSlidingWindow(redis_server.url, shared, limit=5, window_s=60) as a,
        RedisSlidingWindow(redis_server.url, shared, limit=5, window_s=60) as b,
    ):
        admitted = [await a.try_acquire() for _ in range(3)]
        admitted += [await b.try_acquire() for _ in range(3)]
        assert admitted == [True] * 5 + [False]
        assert b.last_retry_after_s > 0


@pytest.mark.slow
def test_four_processes_share_the_global_rate(redis_server: RedisServer) -> None:
    """4 OS processes on one key never admit more than burst + rate * t (+1 for rounding)."""
    rate, burst, duration = 200.0, 20.0, 1.5
    shared, start_at = key(), time.time() + 2.0
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.resilience._redis_worker",
                redis_server.url,
                shared,
                str(rate),
                str(burst),
                str(start_at),
                str(duration),
            ],
            cwd=ROOT,
            stdout=subprocess.PIPE,
        )
        for _ in range(4)
    ]
    results = []
    for proc in procs:
        out, _ = proc.communicate(timeout=60)
        assert proc.returncode == 0
        results.append(json.loads(out))
    admitted = sum(r["admitted"] for r in results)
    window = max(r["end"] for r in results) - min(r["start"] for r in results)
    assert admitted <= burst + rate * window + 1
    assert admitted >= 0.8 * rate * duration  # and the limit was actually used
    assert all(r["admitted"] > 0 for r in results)


async def test_falls_back_when_redis_stops_and_recovers(own_redis: RedisServer) -> None:
    """SIGSTOP -> local decisions within the timeout; SIGCONT -> distributed again."""
    clock = FakeClock()
    limiter = RedisGCRA(
        own_redis.url, key(), rate=100, burst=10, timeout_s=0.2, retry_interval_s=1.0, clock=clock
    )
    async with limiter, asyncio.timeout(10):
        assert await limiter.try_acquire()
        assert limiter.mode == "redis"
        own_redis.pause()
        try:
            assert await limiter.try_acquire()  # decided locally after the timeout
            assert limiter.mode == "local"
            assert await limiter.try_acquire()  # no Redis round trip until the retry interval
            assert limiter.statistics().local_decisions == 2
        finally:
            own_redis.resume()
        clock.advance(1.0)
        assert await limiter.try_acquire()
        assert limiter.mode == "redis"
        stats = limiter.statistics()
        assert (stats.outages, stats.local_decisions) == (1, 2)


async def test_falls_back_when_redis_is_killed_and_restarted(own_redis: RedisServer) -> None:
    """kill -9 -> local fallback; a new server on the same port -> distributed again."""
    clock = FakeClock()
    limiter = RedisGCRA(
        own_redis.url, key(), rate=100, burst=10, timeout_s=0.5, retry_interval_s=1.0, clock=clock
    )
    async with limiter, asyncio.timeout(20):
        assert await limiter.try_acquire()
        own_redis.kill()
        assert await limiter.try_acquire()
        assert limiter.mode == "local"
        own_redis.start()
        clock.advance(1.0)
        assert await limiter.try_acquire()
        assert limiter.mode == "redis"
