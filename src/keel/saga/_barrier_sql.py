"""The SQL dialects of the barrier: SQLite through aiosqlite, PostgreSQL through asyncpg.

Each dialect knows how to open a transaction (or a savepoint, when the caller
is already inside one) on the caller's connection together with the first
barrier row, insert a barrier row while ignoring a duplicate (reporting
whether a row was inserted), and read the ``reason`` of an existing row.
Drivers are recognised by their class's module, so neither driver is
imported unless the caller uses it.

Opening a top-level transaction sends ``BEGIN`` and the first insert as one
script: one round trip (PostgreSQL) or one thread hop (aiosqlite) instead of
two, which is most of the barrier's cost on the happy path. A script cannot
carry bound parameters, so the key is written as SQL string literals: the
only escape either engine needs is doubling single quotes (PostgreSQL with
``standard_conforming_strings``, on by default since 9.1; the parameterised
path is used when it is off), and keys with NUL characters are refused
before they get here.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import AsyncIterator
from typing import Any, Protocol

from keel.errors import ValidationError

__all__ = ["Dialect", "dialect_of", "table_ddl"]

_TABLE_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")


def check_table(table: str) -> str:
    """``table`` if it is a plain SQL identifier, else ValidationError."""
    if not isinstance(table, str) or not _TABLE_RE.fullmatch(table):
        raise ValidationError(
            f"barrier table name {table!r} is not a plain SQL identifier: use letters, "
            "digits and '_' (at most 63), starting with a letter"
        )
    return table


def table_ddl(table: str, *, without_rowid: bool = False) -> str:
    """``CREATE TABLE IF NOT EXISTS`` of the barrier table.

    ``without_rowid`` (SQLite): the primary key is the table, so a barrier row
    is one b-tree insert instead of two.
    """
    return (
        f"CREATE TABLE IF NOT EXISTS {check_table(table)} ("
        "saga_id TEXT NOT NULL, step TEXT NOT NULL, op TEXT NOT NULL, "
        "reason TEXT NOT NULL, created_at TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP, "
        "PRIMARY KEY (saga_id, step, op))" + (" WITHOUT ROWID" if without_rowid else "")
    )


def _literal(text: str) -> str:
    """``text`` as an SQL string literal (NUL-free text; see the module docstring)."""
    return "'" + text.replace("'", "''") + "'"


def _values(key: tuple[str, str, str], reason: str) -> str:
    return f"({', '.join(_literal(v) for v in (*key, reason))})"


class Dialect(Protocol):
    """What the barrier needs from a database driver."""

    def transaction(self) -> contextlib.AbstractAsyncContextManager[None]:
        """Commit on normal exit, roll back on an exception."""
        ...

    def transaction_with(
        self, table: str, key: tuple[str, str, str], reason: str
    ) -> contextlib.AbstractAsyncContextManager[bool]:
        """:meth:`transaction` opened with :meth:`insert_ignore` of one row; yields its result."""
        ...

    def create_table(self, table: str) -> str:
        """The DDL of the barrier table on this engine."""
        ...

    async def execute(self, sql: str) -> None:
        """Run one statement without parameters."""
        ...

    async def insert_ignore(self, table: str, key: tuple[str, str, str], reason: str) -> bool:
        """Insert a barrier row; False when the row already existed."""
        ...

    async def reason(self, table: str, key: tuple[str, str, str]) -> str | None:
        """The ``reason`` of an existing row, or None."""
        ...


class _Sqlite:
    """aiosqlite: ``BEGIN IMMEDIATE`` (writers queue up front), or a savepoint."""

    def __init__(self, conn: Any) -> None:
        self.conn = conn

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[None]:
        conn = self.conn
        if conn.in_transaction:
            await conn.execute("SAVEPOINT keel_barrier")
            try:
                yield
            except BaseException:
                await conn.execute("ROLLBACK TO SAVEPOINT keel_barrier")
                await conn.execute("RELEASE SAVEPOINT keel_barrier")
                raise
            await conn.execute("RELEASE SAVEPOINT keel_barrier")
            return
        await conn.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            await conn.rollback()
            raise
        await conn.commit()

    @contextlib.asynccontextmanager
    async def transaction_with(
        self, table: str, key: tuple[str, str, str], reason: str
    ) -> AsyncIterator[bool]:
        conn = self.conn
        if conn.in_transaction:
            async with self.transaction():
                yield await self.insert_ignore(table, key, reason)
            return
        before = conn.total_changes
        await conn.executescript(
            f"BEGIN IMMEDIATE; INSERT OR IGNORE INTO {table} "
            f"(saga_id, step, op, reason) VALUES {_values(key, reason)}"
        )
        try:
            yield conn.total_changes > before
        except BaseException:
            await conn.rollback()
            raise
        await conn.commit()

    def create_table(self, table: str) -> str:
        return table_ddl(table, without_rowid=True)

    async def execute(self, sql: str) -> None:
        await self.conn.execute(sql)

    async def insert_ignore(self, table: str, key: tuple[str, str, str], reason: str) -> bool:
        cursor = await self.conn.execute(
            f"INSERT OR IGNORE INTO {table} (saga_id, step, op, reason) VALUES (?, ?, ?, ?)",
            (*key, reason),
        )
        return bool(cursor.rowcount == 1)

    async def reason(self, table: str, key: tuple[str, str, str]) -> str | None:
        cursor = await self.conn.execute(
            f"SELECT reason FROM {table} WHERE saga_id = ? AND step = ? AND op = ?", key
        )
        row = await cursor.fetchone()
        return None if row is None else str(row[0])


class _Postgres:
    """asyncpg: ``conn.transaction()`` (a savepoint when nested)."""

    def __init__(self, conn: Any) -> None:
        self.conn = conn

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[None]:
        async with self.conn.transaction():
            yield

    @contextlib.asynccontextmanager
    async def transaction_with(
        self, table: str, key: tuple[str, str, str], reason: str
    ) -> AsyncIterator[bool]:
        conn = self.conn
        if conn.is_in_transaction() or not _conforming(conn):
            async with self.transaction():
                yield await self.insert_ignore(table, key, reason)
            return
        status = await conn.execute(
            f"BEGIN; INSERT INTO {table} (saga_id, step, op, reason) "
            f"VALUES {_values(key, reason)} ON CONFLICT DO NOTHING"
        )
        try:
            yield status == "INSERT 0 1"
        except BaseException:
            await conn.execute("ROLLBACK")
            raise
        await conn.execute("COMMIT")

    def create_table(self, table: str) -> str:
        return table_ddl(table)

    async def execute(self, sql: str) -> None:
        await self.conn.execute(sql)

    async def insert_ignore(self, table: str, key: tuple[str, str, str], reason: str) -> bool:
        # A concurrent insert of the same key waits for the other transaction,
        # then does nothing: the unique index is the barrier's lock (as DTM's).
        status = await self.conn.execute(
            f"INSERT INTO {table} (saga_id, step, op, reason) VALUES ($1, $2, $3, $4) "
            "ON CONFLICT DO NOTHING",
            *key,
            reason,
        )
        return bool(status == "INSERT 0 1")

    async def reason(self, table: str, key: tuple[str, str, str]) -> str | None:
        value = await self.conn.fetchval(
            f"SELECT reason FROM {table} WHERE saga_id = $1 AND step = $2 AND op = $3", *key
        )
        return None if value is None else str(value)


def _conforming(conn: Any) -> bool:
    """Whether backslashes in ``'...'`` literals are plain characters on ``conn``."""
    return bool(conn.get_settings().standard_conforming_strings == "on")


def dialect_of(conn: object) -> Dialect:
    """The dialect of ``conn`` (an aiosqlite or asyncpg connection).

    Raises:
        ValidationError: any other object.
    """
    module = type(conn).__module__
    if module.startswith("aiosqlite"):
        return _Sqlite(conn)
    if module.startswith("asyncpg"):
        return _Postgres(conn)
    raise ValidationError(
        f"the barrier cannot use a {type(conn).__module__}.{type(conn).__name__}: pass an "
        "aiosqlite.Connection (SQLite) or an asyncpg Connection (PostgreSQL)"
    )
