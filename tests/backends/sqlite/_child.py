"""A child process for the multi-process SQLite tests (run as a module, not collected).

Usage: ``python -m tests.backends.sqlite._child ROLE URL ARGS...`` from the
repository root. It talks to the parent through
stdout lines (flushed at once) and reads ``GO`` lines from stdin where a role
must start in step with others:

- ``writer URL PREFIX COUNT``: put PREFIX/0..COUNT-1 (COUNT 0: forever), print
  ``ACK key revision`` after each acknowledged put.
- ``burst URL PREFIX TASKS``: TASKS concurrent loops putting PREFIX/t/0, 1 ...
  forever (so the writer group-commits them), each printing ``ACK key revision``
  once its put is acknowledged.
- ``timed URL NAME SECONDS``: print ``READY``, wait for ``GO``, put in a loop
  for SECONDS, print ``DONE count``.
- ``watcher URL PREFIX N``: watch PREFIX from the next revision, print
  ``READY``, then ``EV revision type key`` per event until N events.
- ``lease URL KEY TTL``: grant a lease, put KEY on it, keep it alive, print
  ``READY lease_id revision``, and run until killed.
"""

from __future__ import annotations

import asyncio
import sys
import time

import keel


def say(*parts: object) -> None:
    """Write one line to the parent."""
    sys.stdout.write(" ".join(str(p) for p in parts) + "\n")
    sys.stdout.flush()


async def writer(url: str, prefix: str, count: int) -> None:
    async with keel.connect(url) as store:
        i = 0
        while count == 0 or i < count:
            key = f"{prefix}/{i}"
            rev = await store.put(key, str(i).encode())
            say("ACK", key, rev)
            i += 1


async def burst(url: str, prefix: str, tasks: int) -> None:
    async with keel.connect(url) as store:

        async def loop(t: int) -> None:
            i = 0
            while True:
                key = f"{prefix}/{t}/{i}"
                rev = await store.put(key, str(i).encode())
                say("ACK", key, rev)
                i += 1

        async with asyncio.TaskGroup() as group:
            for t in range(tasks):
                group.create_task(loop(t))


async def timed(url: str, name: str, seconds: float) -> None:
    async with keel.connect(url) as store:
        say("READY")
        await asyncio.to_thread(sys.stdin.readline)
        deadline = time.monotonic() + seconds
        done = 0
        while time.monotonic() < deadline:
            await store.put(f"fair/{name}/{done % 50}", b"x")
            done += 1
        say("DONE", done)


async def watcher(url: str, prefix: str, n: int) -> None:
    async with keel.connect(url) as store, store.watch(prefix, prefix=True) as events:
        say("READY", events.start_revision)
        seen = 0
        async for event in events:
            say("EV", event.revision, event.type.value, event.kv.key)
            seen += 1
            if seen >= n:
                break


async def lease(url: str, key: str, ttl: int) -> None:
    async with keel.connect(url) as store:
        granted = await store.grant(ttl)
        rev = await store.put(key, b"alive", lease=granted.id)
        say("READY", granted.id, rev)
        while True:
            await asyncio.sleep(ttl / 3)
            await store.keepalive(granted.id)


def main(argv: list[str]) -> None:
    role, url, *args = argv
    if role == "writer":
        asyncio.run(writer(url, args[0], int(args[1])))
    elif role == "burst":
        asyncio.run(burst(url, args[0], int(args[1])))
    elif role == "timed":
        asyncio.run(timed(url, args[0], float(args[1])))
    elif role == "watcher":
        asyncio.run(watcher(url, args[0], int(args[1])))
    elif role == "lease":
        asyncio.run(lease(url, args[0], int(args[1])))
    else:
        raise SystemExit(f"unknown role {role!r}")


if __name__ == "__main__":
    main(sys.argv[1:])
