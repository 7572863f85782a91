"""Redis lock benchmark: keel's RedisLock beside the Redis lock libraries people use, in one run.

    python bench/locks_redis.py                  # defaults: 5 x 0.5 s solo, 3 x 2 s contended
    python bench/locks_redis.py --repeats 7 --seconds 1

Measures acquire + release pairs per second on one fresh redis-server, for:

- keel ``RedisLock`` (asyncio) and keel ``Redlock`` with one server (asyncio);
- python-redis-lock ``Lock`` (sync; blocking acquire by BLPOP);
- pottery ``Redlock`` with one master (sync);
- redis-py's own ``Lock``, asyncio and sync (blocking acquire by polling every 0.1 s).

*uncontended*: one caller in this process, a new lock object per pair, the
implementations interleaved round by round; *contended*: 8 OS processes
(not tasks), each looping on the same lock name for ``--seconds``, started
together; the rate is all their pairs over the longest run. Every figure is
the median of ``--repeats`` rounds. On a shared machine wall-clock rates
swing from run to run, so the uncontended rounds also report the client's
CPU time per pair, which load from other processes barely moves. Targets (issue 3): keel >= 1.0x
python-redis-lock and >= 1.0x pottery, both columns; redis-py's Lock is the
one to beat too.

Prints a table and one JSON document. A measurement, not a test.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

IMPLS = (
    "keel-redislock",
    "keel-redlock-1",
    "python-redis-lock",
    "pottery-redlock-1",
    "redis-py-lock-async",
    "redis-py-lock-sync",
)
KEEL = "keel-redislock"
PEERS = ("python-redis-lock", "pottery-redlock-1", "redis-py-lock-async", "redis-py-lock-sync")
CONTENDERS = 8
TTL_S = 10


def sync_pair(impl: str, url: str) -> Callable[[str], None]:
    """One acquire + release of a sync implementation, as a function of the lock name."""
    import redis
    import redis_lock
    from pottery import Redlock as PotteryRedlock

    logging.getLogger("pottery").setLevel(logging.ERROR)
    client = redis.Redis.from_url(url)

    def prl(name: str) -> None:
        lock = redis_lock.Lock(client, name, expire=TTL_S)
        lock.acquire()
        lock.release()

    def pottery(name: str) -> None:
        lock = PotteryRedlock(key=name, masters={client}, auto_release_time=TTL_S)
        lock.acquire()
        lock.release()

    def redis_py(name: str) -> None:
        lock = client.lock(name, timeout=TTL_S)
        lock.acquire()
        lock.release()

    pairs = {"python-redis-lock": prl, "pottery-redlock-1": pottery}
    pairs["redis-py-lock-sync"] = redis_py
    return pairs[impl]


def async_pair(impl: str, url: str) -> Callable[[str], Awaitable[None]]:
    """One acquire + release of an asyncio implementation."""
    import redis.asyncio as aredis

    from keel.coord.redis import RedisLock, Redlock

    client = aredis.Redis.from_url(url)

    async def keel_lock(name: str) -> None:
        async with RedisLock(client, name, TTL_S):
            pass

    async def keel_redlock(name: str) -> None:
        async with Redlock([client], name, TTL_S):
            pass

    async def redis_py(name: str) -> None:
        async with client.lock(name, timeout=TTL_S):
            pass

    pairs = {"keel-redislock": keel_lock, "keel-redlock-1": keel_redlock}
    pairs["redis-py-lock-async"] = redis_py
    return pairs[impl]


def is_async(impl: str) -> bool:
    return impl.startswith("keel") or impl == "redis-py-lock-async"


async def run_for(impl: str, pair: Any, name: str, seconds: float) -> tuple[int, float]:
    """Loop pairs for ``seconds``; return (pairs, elapsed)."""
    count = 0
    start = time.perf_counter()
    deadline = start + seconds
    if is_async(impl):
        while time.perf_counter() < deadline:
            await pair(name)
            count += 1
    else:
        while time.perf_counter() < deadline:
            pair(name)
            count += 1
    return count, time.perf_counter() - start


async def uncontended(
    url: str, repeats: int, seconds: float
) -> tuple[dict[str, float], dict[str, float]]:
    """Median pairs/s and median client CPU microseconds per pair, per implementation."""
    pairs = {i: async_pair(i, url) if is_async(i) else sync_pair(i, url) for i in IMPLS}
    samples: dict[str, list[float]] = {i: [] for i in IMPLS}
    cpu: dict[str, list[float]] = {i: [] for i in IMPLS}
    for impl in IMPLS:  # warm-up: connections, script loads
        await run_for(impl, pairs[impl], f"warm-{impl}", 0.1)
    for _ in range(repeats):
        for impl in IMPLS:
            cpu_start = time.process_time()
            count, elapsed = await run_for(impl, pairs[impl], f"solo-{impl}", seconds)
            samples[impl].append(count / elapsed)
            cpu[impl].append((time.process_time() - cpu_start) / count * 1e6)
    return (
        {i: statistics.median(s) for i, s in samples.items()},
        {i: statistics.median(s) for i, s in cpu.items()},
    )


def contended(url: str, repeats: int, seconds: float) -> dict[str, float]:
    results: dict[str, float] = {}
    for impl in IMPLS:
        name = f"busy-{impl}-{uuid.uuid4().hex[:6]}"
        argv = [sys.executable, __file__, "--worker", impl, url, name, str(seconds), str(repeats)]
        procs = [
            subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
            for _ in range(CONTENDERS)
        ]
        try:
            for proc in procs:
                assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
            rates = []
            for _ in range(repeats):
                for proc in procs:
                    assert proc.stdin is not None
                    proc.stdin.write("go\n")
                    proc.stdin.flush()
                rows = [json.loads(p.stdout.readline()) for p in procs if p.stdout is not None]
                rates.append(sum(r[0] for r in rows) / max(r[1] for r in rows))
            results[impl] = statistics.median(rates)
        finally:
            for proc in procs:
                proc.kill()
                proc.wait(timeout=10)
    return results


async def worker(impl: str, url: str, name: str, seconds: float, repeats: int) -> None:
    pair = async_pair(impl, url) if is_async(impl) else sync_pair(impl, url)
    await run_for(impl, pair, f"warm-{name}-{uuid.uuid4().hex[:6]}", 0.05)
    print("ready", flush=True)
    loop = asyncio.get_running_loop()
    for _ in range(repeats):
        await loop.run_in_executor(None, sys.stdin.readline)
        print(json.dumps(await run_for(impl, pair, name, seconds)), flush=True)


def ratio(a: float, b: float) -> float:
    return round(a / b, 2) if b else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=5, help="rounds (median reported)")
    parser.add_argument("--seconds", type=float, default=0.5, help="length of a solo round")
    parser.add_argument("--contended-repeats", type=int, default=3)
    parser.add_argument("--contended-seconds", type=float, default=2.0)
    parser.add_argument("--worker", nargs=5, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        impl, url, name, seconds, repeats = args.worker
        asyncio.run(worker(impl, url, name, float(seconds), int(repeats)))
        return

    from keel.testing import RedisServer

    with RedisServer() as server:
        solo, cpu = asyncio.run(uncontended(server.url, args.repeats, args.seconds))
        busy = contended(server.url, args.contended_repeats, args.contended_seconds)
    print(f"{'pairs/s':<22}{'uncontended':>12}{'8 processes':>13}{'CPU us/pair':>13}   keel / this")
    for impl in IMPLS:
        ratios = f"{ratio(solo[KEEL], solo[impl]):.2f}x / {ratio(busy[KEEL], busy[impl]):.2f}x"
        row = f"{solo[impl]:>12,.0f}{busy[impl]:>13,.0f}{cpu[impl]:>13,.0f}"
        print(f"{impl:<22}{row}   {ratios}")
    doc = {
        "bench": "locks_redis",
        "unit": "acquire+release pairs/s (median)",
        "contenders": f"{CONTENDERS} OS processes",
        "repeats": {"uncontended": args.repeats, "contended": args.contended_repeats},
        "uncontended": {i: round(v) for i, v in solo.items()},
        "contended": {i: round(v) for i, v in busy.items()},
        "uncontended_client_cpu_us_per_pair": {i: round(v) for i, v in cpu.items()},
        "keel_ratio": {
            p: {"uncontended": ratio(solo[KEEL], solo[p]), "contended": ratio(busy[KEEL], busy[p])}
            for p in PEERS
        },
    }
    print(json.dumps(doc))


if __name__ == "__main__":
    main()
