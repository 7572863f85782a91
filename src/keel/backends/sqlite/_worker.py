"""One thread and one connection: where the blocking sqlite3 calls of a store run.

Each :class:`Worker` owns a single-thread executor and the connection used
only by that thread, so the event loop never blocks on SQLite. A job is a
whole transaction (``BEGIN`` ... ``COMMIT`` or ``ROLLBACK``) run to its end in
the thread: cancelling the awaiting caller abandons the result, never the
transaction, so the connection is never left half-way through one.

sqlite3 errors are translated here, once, into keel errors naming the cause
and the fix; a connection that saw an I/O, full-disk or corruption error is
reopened for the next job, so the store recovers when the disk does.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Final, TypeVar

from keel.backends.sqlite._gate import GateTimeoutError, WriteGate
from keel.errors import StoreUnavailableError

__all__ = ["Worker", "translate"]

T = TypeVar("T")

_BUSY: Final = frozenset({5, 6})  # SQLITE_BUSY, SQLITE_LOCKED
_FULL: Final = 13
_IOERR: Final = 10
_BROKEN: Final = frozenset({10, 11, 13, 14, 26})  # IOERR, CORRUPT, FULL, CANTOPEN, NOTADB


def translate(exc: BaseException, path: str, busy_timeout_s: float) -> StoreUnavailableError:
    """A StoreUnavailableError for a sqlite3 or OS error, naming the cause and the fix."""
    code = getattr(exc, "sqlite_errorcode", 0) & 0xFF
    where = f"sqlite store {path}"
    if isinstance(exc, GateTimeoutError) or code in _BUSY:
        return StoreUnavailableError(
            f"{where} is locked: another process held the write lock for more than "
            f"{busy_timeout_s:g}s; look for a stuck or stopped keel process, or raise "
            f"busy_timeout_s in the URL"
        )
    if code == _FULL:
        return StoreUnavailableError(
            f"{where}: the disk is full, so the write was not stored; free space on the "
            f"filesystem holding the database (or move it elsewhere) and retry"
        )
    if code == _IOERR:
        return StoreUnavailableError(
            f"{where}: I/O error ({exc}), the operation was not done; check the disk and "
            f"filesystem (dmesg, df) and retry"
        )
    if code in (11, 26):
        return StoreUnavailableError(
            f"{where} is not a valid keel database or is corrupt ({exc}): restore it from a "
            f"backup or point the URL at another file"
        )
    if code == 8 or code == 3:
        return StoreUnavailableError(
            f"{where} is read-only ({exc}): give the process write access to the file and "
            f"its directory"
        )
    if code == 14 or isinstance(exc, OSError):
        return StoreUnavailableError(
            f"{where} cannot be opened ({exc}): check that the directory exists and is "
            f"writable, or choose another path"
        )
    return StoreUnavailableError(f"{where} failed: {exc}")


def _rollback_quietly(conn: sqlite3.Connection) -> None:
    """End a failed transaction; SQLite may already have rolled it back itself."""
    if conn.in_transaction:
        with contextlib.suppress(sqlite3.Error):
            conn.execute("ROLLBACK")


class Worker:
    """A thread with its own connection, running whole transactions.

    Args:
        name: thread name (for debuggers and ``ps -L``).
        path: the database file.
        opener: opens the connection, in the worker thread, on first use.
        gate: the fair write gate; only the writer has one.
        busy_timeout_s: how long a write waits for the gate.
        on_commit: called in the thread after each successful write commit.
    """

    def __init__(
        self,
        name: str,
        path: str,
        opener: Callable[[], sqlite3.Connection],
        *,
        busy_timeout_s: float,
        gate: WriteGate | None = None,
        on_commit: Callable[[], None] | None = None,
    ) -> None:
        self.name = name
        self._path = path
        self._opener = opener
        self._busy_timeout_s = busy_timeout_s
        self._gate = gate
        self._on_commit = on_commit
        self._executor = ThreadPoolExecutor(1, thread_name_prefix=name)
        self._conn: sqlite3.Connection | None = None
        self.jobs = 0

    async def read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn`` in one read transaction (one consistent snapshot)."""
        return await self._submit(self._read, fn)

    async def write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn`` in one ``BEGIN IMMEDIATE`` transaction, holding the write gate."""
        return await self._submit(self._write, fn)

    async def call(self, fn: Callable[[sqlite3.Connection], T], *, gated: bool = False) -> T:
        """Run ``fn`` outside any transaction (setup, pragmas); ``gated``: hold the write gate."""
        return await self._submit(self._gated if gated else self._plain, fn)

    async def _submit(
        self,
        runner: Callable[[Callable[[sqlite3.Connection], T]], T],
        fn: Callable[[sqlite3.Connection], T],
    ) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, runner, fn)

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            self._conn = self._opener()
        return self._conn

    def _guard(self, job: Callable[[sqlite3.Connection], T]) -> T:
        self.jobs += 1
        try:
            return job(self._connection())
        except (sqlite3.Error, OSError, GateTimeoutError) as exc:
            self._recover(exc)
            raise translate(exc, self._path, self._busy_timeout_s) from exc

    def _recover(self, exc: BaseException) -> None:
        conn = self._conn
        if conn is None:
            return
        _rollback_quietly(conn)
        if getattr(exc, "sqlite_errorcode", 0) & 0xFF in _BROKEN:
            self._conn = None
            conn.close()

    def _plain(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        return self._guard(fn)

    def _gated(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        assert self._gate is not None, "only the writer worker holds the gate"
        gate = self._gate

        def job(conn: sqlite3.Connection) -> T:
            gate.acquire(self._busy_timeout_s)
            try:
                return fn(conn)
            finally:
                gate.release()

        return self._guard(job)

    def _read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        def job(conn: sqlite3.Connection) -> T:
            conn.execute("BEGIN")
            try:
                return fn(conn)
            finally:
                _rollback_quietly(conn)

        return self._guard(job)

    def _write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        assert self._gate is not None, "only the writer worker writes"
        gate = self._gate

        def job(conn: sqlite3.Connection) -> T:
            gate.acquire(self._busy_timeout_s)
            try:
                conn.execute("BEGIN IMMEDIATE")
                result = fn(conn)
                conn.execute("COMMIT")
            except BaseException:
                _rollback_quietly(conn)
                raise
            finally:
                gate.release()
            if self._on_commit is not None:
                self._on_commit()
            return result

        return self._guard(job)

    async def close(self) -> None:
        """Close the connection in its thread and stop the thread."""
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._executor, self._close_in_thread)
        self._executor.shutdown(wait=True)

    def _close_in_thread(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        if self._gate is not None:
            self._gate.close()

    def __repr__(self) -> str:
        state = "connected" if self._conn is not None else "idle"
        return f"<Worker {self.name} {state} jobs={self.jobs}>"
