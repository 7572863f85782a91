"""A child process of the partition test; it runs in its own network namespace.

    python -m tests.faults.partition_child discover URL SERVICE PREFIX
    python -m tests.faults.partition_child write URL SERVICE PREFIX
    python -m tests.faults.partition_child lock URL NAME TTL

Every line it prints is one event, flushed at once:

- discover: ``READY``, ``SEEN <id,id,...>`` on each change of the service's
  instances (through Discovery), ``EV <key> <revision>`` for each event of a
  raw watch on PREFIX;
- write: ``READY``, ``ACK <key> <revision>`` for each acknowledged put on
  PREFIX (one every 100 ms), ``REGISTERED <id>`` after ``register <id>`` on stdin;
- lock: ``ACQUIRED <time.time()> <token>`` and ``LOST <time.time()> <reason>``,
  again and again (a new session after each loss).

A child never handles the store's errors beyond what keel itself does, except
the writer skipping a put that failed: the test checks that each process
survives a partition, so an exception escaping here is a failure it sees.
"""

from __future__ import annotations

import asyncio
import sys
import time

import keel
from keel.coord import Lock, Session
from keel.errors import KeelError
from keel.registry import Discovery, Instance, Registry
from keel.store import Store


def say(*parts: object) -> None:
    print(*parts, flush=True)


async def discover(store: Store, service: str, prefix: str) -> None:
    """Follow the service through Discovery and the prefix through a raw watch."""
    async with (
        Discovery(store) as discovery,
        store.watch(prefix, prefix=True, start_revision=1) as events,
    ):
        say("READY")
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(_raw(events))
            async for snapshot in discovery.subscribe(service):
                say("SEEN", ",".join(sorted(i.id for i in snapshot)) or "-")


async def _raw(events: object) -> None:
    async for event in events:  # type: ignore[attr-defined]
        say("EV", event.kv.key, event.kv.mod_revision)


async def write(store: Store, service: str, prefix: str) -> None:
    """Put a key every 100 ms; register instances asked for on stdin."""
    async with Registry(store, ttl_s=5) as registry, asyncio.TaskGroup() as tasks:
        tasks.create_task(_commands(registry, service))
        say("READY")
        for n in range(100_000):
            key = f"{prefix}{n:06d}"
            try:
                revision = await store.put(key, b"x")
            except KeelError as exc:
                say("NACK", key, type(exc).__name__)
            else:
                say("ACK", key, revision)
            await asyncio.sleep(0.1)


async def _commands(registry: Registry, service: str) -> None:
    held = []
    while line := (await asyncio.to_thread(sys.stdin.readline)).split():
        if line[0] == "register":
            me = Instance(id=line[1], service=service, address="10.200.0.99", port=8000)
            held.append(await registry.register(me))
            say("REGISTERED", line[1])


async def lock(store: Store, name: str, ttl: int) -> None:
    """Take the lock, hold it until it is lost, report both, start over."""
    say("READY")
    while True:
        try:
            async with Session(store, ttl_s=ttl) as session:
                held = await Lock(session, name).acquire()
                say("ACQUIRED", repr(time.time()), held.fencing_token)
                reason = await held.lost
                say("LOST", repr(time.time()), reason.replace("\n", " "))
        except KeelError as exc:  # e.g. no member answered the grant: try again
            say("RETRY", type(exc).__name__)
            await asyncio.sleep(0.2)


async def main(mode: str, url: str, *args: str) -> None:
    async with keel.connect(url) as store:
        if mode == "discover":
            await discover(store, args[0], args[1])
        elif mode == "write":
            await write(store, args[0], args[1])
        else:
            await lock(store, args[0], int(args[1]))


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:]))
