"""A child process for the coordination fault tests; talks to the test over stdout/stdin.

    python -m tests.faults.coord_child counter URL NAME CYCLES TTL
    python -m tests.faults.coord_child hold URL NAME TTL
    python -m tests.faults.coord_child campaign URL NAME VALUE TTL

Every line it prints is one event: ``HELD <token>``, ``LEADER <token>``,
``LOST <reason>``, ``GUARD ok|rejected``, ``CYCLE <token> <counter>``, ``DONE``.
"""

from __future__ import annotations

import asyncio
import sys

import keel
from keel.coord import Election, Lock, Session
from keel.store import Put, Store


def say(*parts: object) -> None:
    print(*parts, flush=True)


async def stdin_line() -> str:
    return (await asyncio.to_thread(sys.stdin.readline)).strip()


async def counter(store: Store, name: str, cycles: int, ttl: int) -> None:
    """Guarded read-modify-write cycles on the `counter` key."""
    async with Session(store, ttl_s=ttl) as session:
        say("READY")
        for _ in range(cycles):
            async with Lock(session, name) as held:
                kv = await store.get("counter")
                value = int(kv.value) + 1 if kv else 1
                result = await store.txn([held.guard()], [Put("counter", str(value).encode())])
                say("CYCLE", held.fencing_token, value if result.succeeded else -1)
    say("DONE")


async def hold(store: Store, name: str, ttl: int) -> None:
    """Take the lock, report it, and wait until it is lost; then try a guarded write."""
    async with Session(store, ttl_s=ttl) as session:
        say("WAITING")
        held = await Lock(session, name).acquire()
        say("HELD", held.fencing_token)
        reason = await held.lost
        say("LOST", reason.replace("\n", " "))
        result = await store.txn([held.guard()], [Put("resource", b"stale-owner")])
        say("GUARD", "ok" if result.succeeded else "rejected")
        await stdin_line()


async def campaign(store: Store, name: str, value: str, ttl: int) -> None:
    """Campaign; report leadership; `resign` on stdin resigns; loss is reported."""
    async with Session(store, ttl_s=ttl) as session:
        say("CANDIDATE")
        leadership = await Election(session, name).campaign(value)
        say("LEADER", leadership.fencing_token)
        command = asyncio.ensure_future(stdin_line())
        lost = asyncio.ensure_future(leadership.lost.wait())
        await asyncio.wait([command, lost], return_when=asyncio.FIRST_COMPLETED)
        if lost.done():
            say("LOST", lost.result())
            result = await store.txn([leadership.guard()], [Put("resource", b"stale-leader")])
            say("GUARD", "ok" if result.succeeded else "rejected")
            await command
        else:
            lost.cancel()
            await leadership.resign()
            say("RESIGNED")


async def main(argv: list[str]) -> None:
    mode, url = argv[0], argv[1]
    async with keel.connect(url) as store:
        if mode == "counter":
            await counter(store, argv[2], int(argv[3]), int(argv[4]))
        elif mode == "hold":
            await hold(store, argv[2], int(argv[3]))
        else:
            await campaign(store, argv[2], argv[3], int(argv[4]))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1:]))
