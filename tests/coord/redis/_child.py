"""A contender in another OS process, driven by the Redis lock tests through stdin/stdout.

Run as ``python -m tests.coord.redis._child ROLE ...`` from the repository root.

Roles:
    counter URL NAME CYCLES TTL   print "ready", wait for "go", then CYCLES times:
                                  take the lock, read-modify-write the shared
                                  counter, append the fencing token; print "done".
    holder URL NAME TTL           take the lock, print "held TOKEN", then sit
                                  (auto-extending) until killed.
"""

from __future__ import annotations

import asyncio
import sys

import redis.asyncio as aredis

from keel.coord.redis import RedisLock


def say(*words: object) -> None:
    print(*words, flush=True)


async def counter(url: str, name: str, cycles: int, ttl_s: float) -> None:
    client = aredis.Redis.from_url(url)
    await client.ping()
    say("ready")
    await asyncio.wait_for(asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline), 30)
    for _ in range(cycles):
        async with RedisLock(client, name, ttl_s) as held:
            value = int(await client.get(f"test:{name}:counter") or 0)
            await asyncio.sleep(0)  # let everything else run between the read and the write
            await client.set(f"test:{name}:counter", value + 1)
            await client.rpush(f"test:{name}:tokens", held.fencing_token)
    say("done")
    await client.aclose()


async def holder(url: str, name: str, ttl_s: float) -> None:
    client = aredis.Redis.from_url(url)
    held = await RedisLock(client, name, ttl_s).acquire(timeout_s=30)
    say("held", held.fencing_token)
    await asyncio.sleep(60)  # the test kills us long before this


def main() -> None:
    role, url, name, *rest = sys.argv[1:]
    if role == "counter":
        asyncio.run(counter(url, name, int(rest[0]), float(rest[1])))
    elif role == "holder":
        asyncio.run(holder(url, name, float(rest[0])))
    else:
        raise SystemExit(f"unknown role {role!r}")


if __name__ == "__main__":
    main()
