"""One OS process hammering a shared Redis limiter (run by test_redis_limiter).

Usage: ``python -m tests.resilience._redis_worker URL KEY RATE BURST START_AT DURATION``;
prints ``{"admitted": n, "decisions": d, "start": t0, "end": t1}`` (wall-clock seconds).
"""

from __future__ import annotations

import asyncio
import json
import sys
import time

from keel.resilience import RedisGCRA


async def main(
    url: str, key: str, rate: float, burst: float, start_at: float, duration: float
) -> None:
    async with RedisGCRA(url, key, rate=rate, burst=burst, timeout_s=1.0) as limiter:
        await limiter.redis.ping()
        await asyncio.sleep(max(0.0, start_at - time.time()))  # all processes start together
        start = time.time()
        admitted = decisions = 0
        while time.time() - start < duration:
            decisions += 1
            admitted += await limiter.try_acquire()
        end = time.time()
        assert limiter.mode == "redis"
    print(json.dumps({"admitted": admitted, "decisions": decisions, "start": start, "end": end}))


if __name__ == "__main__":
    url, key, rate, burst, start_at, duration = sys.argv[1:7]
    asyncio.run(main(url, key, float(rate), float(burst), float(start_at), float(duration)))
