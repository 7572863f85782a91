"""Barrier overhead per participant call, SQLite and PostgreSQL, against the bare write.

    python bench/saga_barrier.py
    python bench/saga_barrier.py --calls 2000 --runs 5

A participant call is one transaction with a business write: ``insert`` (one
insert of a ledger row: the worst case, the barrier's statement doubles it) or
``reserve`` (an update of a stock row and the ledger insert, closer to a real
participant). ``bare`` runs it as is; ``barrier`` runs it inside
``barrier.guard(conn, saga_id, step, "action")`` (one more insert-or-ignore
in the same transaction). Each call uses a new saga id, as real traffic does.
SQLite: a WAL file in a temporary directory through aiosqlite
(``synchronous=NORMAL``). PostgreSQL: a real server started by
:class:`keel.testing.PostgresServer` (``fsync=off``: the figure is the
round trips and the work, not the disk), through asyncpg.

Figures: median per-call time over ``runs`` runs (bare and barrier runs
alternate, so load from elsewhere hits both alike); the ratio barrier / bare.
Target: <= 1.5x. Prints a table and one JSON document. A measurement, not a test.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiosqlite
import asyncpg

from keel.saga import barrier
from keel.testing import PostgresServer

TARGET = 1.5
_STOCK = "CREATE TABLE stock (sku INTEGER PRIMARY KEY, reserved INTEGER NOT NULL)"


async def _sqlite_write(conn: Any, saga_id: str, reserve: bool) -> None:
    if reserve:
        await conn.execute("UPDATE stock SET reserved = reserved + 1 WHERE sku = 1")
    await conn.execute("INSERT INTO ledger VALUES (?, ?)", (saga_id, 1))


async def _sqlite_call(conn: Any, guarded: bool, reserve: bool) -> None:
    saga_id = uuid.uuid4().hex
    if guarded:
        async with barrier.guard(conn, saga_id, "reserve", barrier.ACTION) as should_run:
            if should_run:
                await _sqlite_write(conn, saga_id, reserve)
        return
    await conn.execute("BEGIN IMMEDIATE")
    await _sqlite_write(conn, saga_id, reserve)
    await conn.commit()


async def _pg_write(conn: Any, saga_id: str, reserve: bool) -> None:
    if reserve:
        await conn.execute("UPDATE stock SET reserved = reserved + 1 WHERE sku = 1")
    await conn.execute("INSERT INTO ledger VALUES ($1, $2)", saga_id, 1)


async def _pg_call(conn: Any, guarded: bool, reserve: bool) -> None:
    saga_id = uuid.uuid4().hex
    if guarded:
        async with barrier.guard(conn, saga_id, "reserve", barrier.ACTION) as should_run:
            if should_run:
                await _pg_write(conn, saga_id, reserve)
        return
    async with conn.transaction():
        await _pg_write(conn, saga_id, reserve)


async def _measure(
    call: Callable[[Any, bool, bool], Awaitable[None]], conn: Any, calls: int, runs: int
) -> dict[str, dict[str, float]]:
    return {
        "insert": await _measure_one(call, conn, calls, runs, reserve=False),
        "reserve": await _measure_one(call, conn, calls, runs, reserve=True),
    }


async def _measure_one(
    call: Callable[[Any, bool, bool], Awaitable[None]],
    conn: Any,
    calls: int,
    runs: int,
    *,
    reserve: bool,
) -> dict[str, float]:
    # Runs alternate bare / barrier so that load from elsewhere hits both alike.
    times: dict[bool, list[float]] = {False: [], True: []}
    for guarded in (False, True):
        for _ in range(calls // 10):  # warm-up
            await call(conn, guarded, reserve)
    for _ in range(runs):
        for guarded in (False, True):
            start = time.perf_counter()
            for _ in range(calls):
                await call(conn, guarded, reserve)
            times[guarded].append((time.perf_counter() - start) / calls * 1e6)
    out = {"bare_us": statistics.median(times[False]), "barrier_us": statistics.median(times[True])}
    out["ratio"] = out["barrier_us"] / out["bare_us"]
    return out


async def bench_sqlite(calls: int, runs: int) -> dict[str, dict[str, float]]:
    with tempfile.TemporaryDirectory() as tmp:
        conn = await aiosqlite.connect(Path(tmp) / "participant.db")
        try:
            await conn.execute("PRAGMA journal_mode=WAL")
            await conn.execute("PRAGMA synchronous=NORMAL")
            await conn.execute("CREATE TABLE ledger (saga_id TEXT, amount INTEGER)")
            await conn.execute(_STOCK)
            await conn.execute("INSERT INTO stock VALUES (1, 0)")
            await conn.commit()
            await barrier.create_table(conn)
            return await _measure(_sqlite_call, conn, calls, runs)
        finally:
            await conn.close()


async def bench_postgres(calls: int, runs: int) -> dict[str, dict[str, float]]:
    with PostgresServer() as server:
        conn = await asyncpg.connect(server.url)
        try:
            await conn.execute("CREATE TABLE ledger (saga_id TEXT, amount INTEGER)")
            await conn.execute(_STOCK)
            await conn.execute("INSERT INTO stock VALUES (1, 0)")
            await barrier.create_table(conn)
            return await _measure(_pg_call, conn, calls, runs)
        finally:
            await conn.close()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    results = {
        "sqlite": await bench_sqlite(args.calls, args.runs),
        "postgresql": await bench_postgres(args.calls, args.runs),
    }
    print(f"{'engine':<12}{'write':<9}{'bare us':>9}{'barrier us':>12}{'ratio':>8}  <= {TARGET}x")
    for engine, per in results.items():
        for write, r in per.items():
            mark = "ok" if r["ratio"] <= TARGET else "OVER"
            print(
                f"{engine:<12}{write:<9}{r['bare_us']:>9.0f}{r['barrier_us']:>12.0f}"
                f"{r['ratio']:>7.2f}x  {mark}"
            )
    print(json.dumps({"calls": args.calls, "runs": args.runs, "target": TARGET, **results}))


if __name__ == "__main__":
    asyncio.run(main())
