"""Resilience benchmarks: keel's policies beside pybreaker, aiobreaker, purgatory, tenacity, limits.

Per-call overhead is measured in microseconds *above a bare await* (or a bare
call for synchronous peers), in one process run, interleaved: every repeat
times each contender once; the report gives medians over repeats, and each
ratio is the median of the per-repeat ratios (robust to a shared machine's
load drifting between repeats).
The Redis section counts limiter decisions per second with 8 concurrent
clients against one real redis-server (started here) for keel and ``limits``.

Run: ``make bench-resilience`` or ``.venv/bin/python bench/resilience.py [--quick]``.
Prints a JSON document, then a table with the ratios against the targets of
issue 6. Nothing here is a test: numbers depend on the machine and its load.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import aiobreaker
import purgatory
import pybreaker
import tenacity
from limits import RateLimitItemPerSecond
from limits.aio.storage import RedisStorage as AsyncRedisStorage
from limits.aio.strategies import FixedWindowRateLimiter as AsyncFixedWindow
from limits.aio.strategies import SlidingWindowCounterRateLimiter as AsyncSlidingCounter
from limits.storage import MemoryStorage
from limits.strategies import FixedWindowRateLimiter

from keel.resilience import (
    Bulkhead,
    CircuitBreaker,
    Pipeline,
    RedisGCRA,
    RedisSlidingWindow,
    Retry,
    Timeout,
    TokenBucket,
)
from keel.testing import RedisServer

# asyncio.timeout's overhead on this machine when issue 6 set the targets.
ASYNCIO_TIMEOUT_REFERENCE_US = 6.6


async def ok() -> int:
    return 1


def ok_sync() -> int:
    return 1


async def per_call(fn: Callable[[], Awaitable[Any]], n: int) -> float:
    start = time.perf_counter()
    for _ in range(n):
        await fn()
    return (time.perf_counter() - start) / n * 1e6


def per_call_sync(fn: Callable[[], Any], n: int) -> float:
    start = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - start) / n * 1e6


async def overheads(n: int, repeats: int) -> dict[str, list[float]]:
    """Per-call overhead of each contender in every repeat, in microseconds."""
    keel_breaker = CircuitBreaker()
    py_breaker = pybreaker.CircuitBreaker()
    aio_breaker = aiobreaker.CircuitBreaker()
    purgatory_factory = purgatory.AsyncCircuitBreakerFactory()
    purgatory_ok = purgatory_factory("bench")(ok)
    keel_retry = Retry()
    tenacity_retry = tenacity.AsyncRetrying(
        stop=tenacity.stop_after_attempt(3), wait=tenacity.wait_random_exponential(0.05, max=2)
    )
    keel_timeout = Timeout(5.0)
    bucket = TokenBucket(1e12, 1e12)
    fixed = FixedWindowRateLimiter(MemoryStorage())
    item = RateLimitItemPerSecond(10**12)
    pipeline = Pipeline(
        Timeout(5.0), Retry(), CircuitBreaker(), TokenBucket(1e12, 1e12), Bulkhead(100)
    )

    async def asyncio_timeout() -> int:
        async with asyncio.timeout(5.0):
            return await ok()

    async_cases: dict[str, Callable[[], Awaitable[Any]]] = {
        "keel.breaker.call": lambda: keel_breaker.call(ok),
        "aiobreaker.call_async": lambda: aio_breaker.call_async(ok),
        "purgatory.decorator": purgatory_ok,
        "keel.retry.run": lambda: keel_retry.run(ok),
        "tenacity.AsyncRetrying": lambda: tenacity_retry(ok),
        "keel.timeout.run": lambda: keel_timeout.run(ok),
        "asyncio.timeout": asyncio_timeout,
        "keel.pipeline.run": lambda: pipeline.run(ok),
    }
    sync_cases: dict[str, Callable[[], Any]] = {
        "pybreaker.call": lambda: py_breaker.call(ok_sync),
        "keel.token_bucket.try_acquire": bucket.try_acquire,
        "limits.fixed_window.hit": lambda: fixed.hit(item, "bench"),
    }
    samples: dict[str, list[float]] = {name: [] for name in (*async_cases, *sync_cases)}
    for _ in range(repeats):
        # Every contender once per repeat, close in time, so that the ratios
        # taken per repeat cancel most of the drift of a shared machine's load.
        bare = await per_call(lambda: ok(), n)
        for name, fn in async_cases.items():
            samples[name].append(await per_call(fn, n) - bare)
        bare_sync = per_call_sync(lambda: ok_sync(), n)
        for name, sfn in sync_cases.items():
            # Sync peers: overhead above the bare call (limiters: the whole decision).
            base = bare_sync if name == "pybreaker.call" else 0.0
            samples[name].append(per_call_sync(sfn, n) - base)
    return samples


async def decisions_per_second(
    decide: Callable[[], Awaitable[Any]], clients: int, seconds: float
) -> float:
    """Decisions per second of ``clients`` concurrent tasks looping on ``decide``."""
    count = 0
    stop = time.perf_counter() + seconds

    async def client() -> None:
        nonlocal count
        while time.perf_counter() < stop:
            await decide()
            count += 1

    start = time.perf_counter()
    async with asyncio.TaskGroup() as tg:
        for _ in range(clients):
            tg.create_task(client())
    return count / (time.perf_counter() - start)


async def redis_throughput(seconds: float, repeats: int) -> dict[str, float]:
    """Median decisions/s with 8 clients, keel vs limits, on one redis-server."""
    with RedisServer() as server:
        url = server.url
        gcra = RedisGCRA(url, f"bench:{uuid.uuid4().hex}", rate=1e6, burst=1e6)
        sliding = RedisSlidingWindow(url, f"bench:{uuid.uuid4().hex}", limit=10**9, window_s=60)
        storage = AsyncRedisStorage(f"async+{url}", implementation="redispy")
        fixed = AsyncFixedWindow(storage)
        counter = AsyncSlidingCounter(storage)
        item = RateLimitItemPerSecond(10**9)
        cases: dict[str, Callable[[], Awaitable[Any]]] = {
            "keel.redis_gcra": gcra.try_acquire,
            "keel.redis_sliding_window": sliding.try_acquire,
            "limits.redis.fixed_window": lambda: fixed.hit(item, "bench-fixed"),
            "limits.redis.sliding_window_counter": lambda: counter.hit(item, "bench-sliding"),
        }
        samples: dict[str, list[float]] = {name: [] for name in cases}
        for decide in cases.values():
            await decide()  # connect and load scripts before timing
        for _ in range(repeats):
            for name, decide in cases.items():
                samples[name].append(await decisions_per_second(decide, 8, seconds))
        await gcra.aclose()
        await sliding.aclose()
    return {name: statistics.median(values) for name, values in samples.items()}


def report(
    samples: dict[str, list[float]], redis: dict[str, float]
) -> list[tuple[str, str, str, str]]:
    """Rows: what, keel, peer(s), ratio vs target (the median of per-repeat ratios)."""
    over = {name: statistics.median(values) for name, values in samples.items()}

    def median_ratio(a: str, b: str) -> float:
        return statistics.median(x / y for x, y in zip(samples[a], samples[b], strict=True))

    def ratio(a: str, b: str, target: float) -> str:
        r = median_ratio(a, b)
        return f"{r:.2f}x (target <= {target}x) {'ok' if r <= target else 'MISSED'}"

    rows = [
        (
            "breaker call vs pybreaker",
            f"{over['keel.breaker.call']:.2f} us",
            f"{over['pybreaker.call']:.2f} us",
            ratio("keel.breaker.call", "pybreaker.call", 0.5),
        ),
        (
            "breaker call vs aiobreaker",
            f"{over['keel.breaker.call']:.2f} us",
            f"{over['aiobreaker.call_async']:.2f} us",
            ratio("keel.breaker.call", "aiobreaker.call_async", 1.0),
        ),
        (
            "breaker call vs purgatory",
            f"{over['keel.breaker.call']:.2f} us",
            f"{over['purgatory.decorator']:.2f} us",
            f"{median_ratio('keel.breaker.call', 'purgatory.decorator'):.2f}x (no target)",
        ),
        (
            "retry success vs tenacity",
            f"{over['keel.retry.run']:.2f} us",
            f"{over['tenacity.AsyncRetrying']:.2f} us",
            ratio("keel.retry.run", "tenacity.AsyncRetrying", 0.5),
        ),
        (
            "token bucket vs limits hit()",
            f"{over['keel.token_bucket.try_acquire']:.2f} us",
            f"{over['limits.fixed_window.hit']:.2f} us",
            ratio("keel.token_bucket.try_acquire", "limits.fixed_window.hit", 0.5)
            + f"; abs {'ok' if over['keel.token_bucket.try_acquire'] <= 1.0 else 'MISSED'}"
            " (<= 1 us)",
        ),
        (
            "timeout vs asyncio.timeout",
            f"{over['keel.timeout.run']:.2f} us",
            f"{over['asyncio.timeout']:.2f} us",
            f"{median_ratio('keel.timeout.run', 'asyncio.timeout'):.2f}x (no target)",
        ),
        (
            "full pipeline (5 policies)",
            f"{over['keel.pipeline.run']:.2f} us",
            "-",
            f"target <= 10 us {'ok' if over['keel.pipeline.run'] <= 10 else 'MISSED'}",
        ),
    ]
    # The absolute targets were set when asyncio.timeout cost 6.6 us on
    # this machine; on a shared machine under load everything is slower, so the
    # absolute figures are also shown scaled by that factor.
    factor = over["asyncio.timeout"] / ASYNCIO_TIMEOUT_REFERENCE_US
    for what, key, target in (
        ("  same, load-normalized", "keel.token_bucket.try_acquire", 1.0),
        ("  same, load-normalized", "keel.pipeline.run", 10.0),
    ):
        scaled = ASYNCIO_TIMEOUT_REFERENCE_US * median_ratio(key, "asyncio.timeout")
        rows.append(
            (
                f"{what} ({key.split('.')[1]})",
                f"{scaled:.2f} us",
                f"factor {factor:.2f}",
                f"target <= {target:g} us {'ok' if scaled <= target else 'MISSED'}",
            )
        )
    keel_best = max(redis["keel.redis_gcra"], redis["keel.redis_sliding_window"])
    limits_best = max(
        redis["limits.redis.fixed_window"], redis["limits.redis.sliding_window_counter"]
    )
    rows.append(
        (
            "redis decisions/s, 8 clients",
            f"gcra {redis['keel.redis_gcra']:.0f}, "
            f"sliding {redis['keel.redis_sliding_window']:.0f}",
            f"fixed {redis['limits.redis.fixed_window']:.0f}, "
            f"sliding {redis['limits.redis.sliding_window_counter']:.0f}",
            f"{keel_best / limits_best:.2f}x of limits' best (higher is better)",
        )
    )
    return rows


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer iterations (smoke run)")
    args = parser.parse_args()
    n, repeats, seconds = (2_000, 3, 0.3) if args.quick else (5_000, 31, 2.0)
    samples = await overheads(n, repeats)
    redis = await redis_throughput(seconds, 3 if not args.quick else 1)
    medians = {name: statistics.median(values) for name, values in samples.items()}
    print(
        json.dumps(
            {"overhead_us_median": medians, "repeats": repeats, "redis_decisions_per_s": redis},
            indent=2,
        )
    )
    rows = report(samples, redis)
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)))


if __name__ == "__main__":
    asyncio.run(main())
