"""The sub-transaction barrier on a real SQLite file and a real PostgreSQL server."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiosqlite
import asyncpg
import pytest

from keel.errors import ValidationError
from keel.saga import barrier
from keel.testing import PostgresServer


@dataclass
class Db:
    """One participant database: a connection opener and table names."""

    engine: str
    target: str
    table: str
    ledger: str

    async def connect(self) -> Any:
        if self.engine == "sqlite":
            return await aiosqlite.connect(self.target)
        return await asyncpg.connect(self.target)


@pytest.fixture(params=["sqlite", "postgres"])
async def db(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Db]:
    """A participant database with a barrier table and a ledger table."""
    suffix = uuid.uuid4().hex[:10]
    if request.param == "sqlite":
        target = str(tmp_path / "participant.db")
    else:
        server: PostgresServer = request.getfixturevalue("postgres_server")
        target = server.url
    found = Db(request.param, target, f"barrier_{suffix}", f"ledger_{suffix}")
    conn = await found.connect()
    try:
        await barrier.create_table(conn, table=found.table)
        await conn.execute(f"CREATE TABLE {found.ledger} (saga_id TEXT, step TEXT, op TEXT)")
        if found.engine == "sqlite":
            await conn.commit()
    finally:
        await conn.close()
    yield found


async def call(db: Db, conn: Any, saga_id: str, op: str, *, fail: bool = False) -> bool:
    """One participant call: the guard, then the business write when it must run."""
    async with barrier.guard(conn, saga_id, "reserve", op, table=db.table) as should_run:
        if should_run:
            if db.engine == "sqlite":
                await conn.execute(
                    f"INSERT INTO {db.ledger} VALUES (?, ?, ?)", (saga_id, "reserve", op)
                )
            else:
                await conn.execute(
                    f"INSERT INTO {db.ledger} VALUES ($1, $2, $3)", saga_id, "reserve", op
                )
            if fail:
                raise RuntimeError("business write failed")
    return should_run


async def ledger(db: Db, conn: Any) -> list[tuple[str, str]]:
    """The business writes applied, as (saga_id, op), sorted."""
    sql = f"SELECT saga_id, op FROM {db.ledger} ORDER BY saga_id, op"
    if db.engine == "sqlite":
        rows = await (await conn.execute(sql)).fetchall()
    else:
        rows = await conn.fetch(sql)
    return [(r[0], r[1]) for r in rows]


@pytest.fixture
async def conn(db: Db) -> AsyncIterator[Any]:
    """A connection to the participant database."""
    connection = await db.connect()
    try:
        yield connection
    finally:
        await connection.close()


async def test_duplicate_action_runs_once(db: Db, conn: Any) -> None:
    """The same action twice: the second is a duplicate and writes nothing."""
    async with asyncio.timeout(10):
        assert await call(db, conn, "s1", barrier.ACTION) is True
        assert await call(db, conn, "s1", barrier.ACTION) is False
        assert await ledger(db, conn) == [("s1", "action")]


async def test_duplicate_compensation_runs_once(db: Db, conn: Any) -> None:
    """Action, compensation, compensation again: the compensation is applied once."""
    async with asyncio.timeout(10):
        assert await call(db, conn, "s1", barrier.ACTION)
        assert await call(db, conn, "s1", barrier.COMPENSATE) is True
        assert await call(db, conn, "s1", barrier.COMPENSATE) is False
        assert await ledger(db, conn) == [("s1", "action"), ("s1", "compensate")]


async def test_null_compensation_then_hanging_action(db: Db, conn: Any) -> None:
    """A compensation before its action does nothing; the late action is refused."""
    async with asyncio.timeout(10):
        assert await call(db, conn, "s2", barrier.COMPENSATE) is False
        with pytest.raises(barrier.BarrierRefusedError, match="after its compensation"):
            await call(db, conn, "s2", barrier.ACTION)
        assert await call(db, conn, "s2", barrier.COMPENSATE) is False
        assert await ledger(db, conn) == []
        assert await barrier.check(conn, "s2", "reserve", "action", table=db.table) in (
            barrier.Outcome.HANGING,
        )


async def test_failed_write_keeps_no_barrier_row(db: Db, conn: Any) -> None:
    """A business write that raises rolls the barrier row back: the retry runs."""
    async with asyncio.timeout(10):
        with pytest.raises(RuntimeError):
            await call(db, conn, "s3", barrier.ACTION, fail=True)
        assert await ledger(db, conn) == []
        assert await call(db, conn, "s3", barrier.ACTION) is True
        assert await ledger(db, conn) == [("s3", "action")]


async def test_concurrent_duplicates_run_once(db: Db) -> None:
    """Two connections deliver the same action at once: exactly one runs."""
    conns = [await db.connect() for _ in range(2)]
    try:
        async with asyncio.timeout(20):
            results = await asyncio.gather(*(call(db, c, "s4", barrier.ACTION) for c in conns))
            assert sorted(results) == [False, True]
            assert await ledger(db, conns[0]) == [("s4", "action")]
    finally:
        for c in conns:
            await c.close()


_CRASH = """
import asyncio, os, sys
import aiosqlite, asyncpg
from keel.saga import barrier

async def main(engine, target, table, ledger):
    conn = await (aiosqlite.connect(target) if engine == "sqlite" else asyncpg.connect(target))
    async with barrier.guard(conn, "s5", "reserve", "action", table=table) as should_run:
        assert should_run
        row = ("s5", "reserve", "action")
        if engine == "sqlite":
            await conn.execute(f"INSERT INTO {ledger} VALUES (?, ?, ?)", row)
        else:
            await conn.execute(f"INSERT INTO {ledger} VALUES ($1, $2, $3)", *row)
    os._exit(9)  # committed, crashed before replying

asyncio.run(main(*sys.argv[1:]))
"""


async def test_crash_after_commit_before_reply(db: Db, conn: Any) -> None:
    """A participant killed after committing, before replying: the retry is a duplicate."""
    async with asyncio.timeout(30):
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            _CRASH,
            db.engine,
            db.target,
            db.table,
            db.ledger,
            stderr=subprocess.PIPE,
        )
        _, err = await proc.communicate()
        assert proc.returncode == 9, err.decode()
        assert await call(db, conn, "s5", barrier.ACTION) is False
        assert await ledger(db, conn) == [("s5", "action")]


async def test_guard_joins_an_open_transaction(db: Db, conn: Any) -> None:
    """Inside the caller's transaction the guard uses a savepoint; the outer rollback wins."""
    async with asyncio.timeout(10):
        if db.engine == "sqlite":
            await conn.execute("BEGIN")
            assert await call(db, conn, "s6", barrier.ACTION)
            await conn.rollback()
        else:
            tx = conn.transaction()
            await tx.start()
            assert await call(db, conn, "s6", barrier.ACTION)
            await tx.rollback()
        assert await call(db, conn, "s6", barrier.ACTION) is True


async def test_bad_arguments_are_refused(db: Db, conn: Any) -> None:
    """A bad op, an empty id, a bad table name or a foreign connection: ValidationError."""
    with pytest.raises(ValidationError, match="op must be"):
        await call(db, conn, "s7", "undo")
    with pytest.raises(ValidationError, match="saga_id"):
        await call(db, conn, "", barrier.ACTION)
    with pytest.raises(ValidationError, match="identifier"):
        await barrier.create_table(conn, table="x; drop table y")
    with pytest.raises(ValidationError, match="aiosqlite"):
        async with barrier.guard(object(), "s", "t", barrier.ACTION):
            pass


def test_saga_headers_from_scope_and_mapping() -> None:
    """keel-saga headers are read from an ASGI scope or a mapping; absent gives None."""
    scope = {
        "type": "http",
        "headers": [
            (b"keel-saga", b"id-1"),
            (b"Keel-Saga-Step", b"charge"),
            (b"keel-saga-op", b"compensate"),
        ],
    }
    assert barrier.saga_headers(scope) == barrier.SagaHeaders("id-1", "charge", "compensate")
    assert barrier.saga_headers({"keel-saga": "a", "keel-saga-step": "b", "keel-saga-op": "action"})
    assert barrier.saga_headers({"type": "http", "headers": []}) is None
    with pytest.raises(ValidationError, match="op"):
        barrier.saga_headers({"keel-saga": "a", "keel-saga-step": "b"})


@pytest.mark.parametrize("saga_id", ["o'brien", "a''b'; DROP TABLE x; --", "back\\slash'", "ü'∂"])
async def test_quotes_in_ids_are_data_not_sql(db: Db, saga_id: str) -> None:
    """Ids with quotes and backslashes go through the one-round-trip path as plain data."""
    conn = await db.connect()
    try:
        assert await call(db, conn, saga_id, barrier.ACTION)
        assert not await call(db, conn, saga_id, barrier.ACTION)  # duplicate
        with pytest.raises(barrier.BarrierRefusedError):
            await call(db, conn, saga_id + "-2", barrier.COMPENSATE)
            await call(db, conn, saga_id + "-2", barrier.ACTION)
        assert await ledger(db, conn) == [(saga_id, barrier.ACTION)]
    finally:
        await conn.close()


async def test_nul_in_an_id_is_refused(db: Db) -> None:
    """A NUL character cannot be stored as text on either engine: refused up front."""
    conn = await db.connect()
    try:
        with pytest.raises(ValidationError, match="without NUL"):
            await call(db, conn, "a\x00b", barrier.ACTION)
    finally:
        await conn.close()


async def test_postgres_without_conforming_strings_uses_parameters(
    postgres_server: PostgresServer,
) -> None:
    """With standard_conforming_strings off, the barrier falls back to bound parameters."""
    conn = await asyncpg.connect(postgres_server.url)
    table = f"barrier_{uuid.uuid4().hex[:10]}"
    try:
        await conn.execute("SET standard_conforming_strings = off")
        await barrier.create_table(conn, table=table)
        saga_id = "back\\slash'quote"
        async with barrier.guard(conn, saga_id, "s", barrier.ACTION, table=table) as run:
            assert run
        stored = await conn.fetchval(f"SELECT saga_id FROM {table}")
        assert stored == saga_id
    finally:
        await conn.close()
