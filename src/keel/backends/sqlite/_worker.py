"""One thread and one connection: where the blocking sqlite3 calls of a store run.

Each :class:`Worker` is a daemon thread fed by a :class:`queue.SimpleQueue`,
with a connection only that thread uses, so the event loop never blocks on
SQLite. Results go back with ``loop.call_soon_threadsafe``. Why not
``loop.run_in_executor``: its hand-off (a ``concurrent.futures`` future, a
work item, the executor's bookkeeping and a chained asyncio future) measured
about 108 us per round trip against 53 us for this queue-and-callback pair,
which was a sixth of a whole durable put.

A job is a whole transaction (``BEGIN`` ... ``COMMIT`` or ``ROLLBACK``) run to
its end in the thread: cancelling the awaiting caller abandons the result,
never the transaction, so the connection is never left half-way through one.

sqlite3 errors are translated here, once, into keel errors naming the cause
and the fix; a connection that saw an I/O, full-disk or corruption error is
reopened for the next job, so the store recovers when the disk does.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import threading
from collections.abc import Callable, Sequence
from enum import Enum
from queue import SimpleQueue
from typing import Any, Final, TypeVar

from keel.backends.sqlite._gate import GateTimeoutError
from keel.errors import StoreClosedError, StoreUnavailableError

__all__ = ["STORAGE_ERRORS", "Job", "JobKind", "Outcome", "Worker", "rollback_quietly", "translate"]

T = TypeVar("T")

_BUSY: Final = frozenset({5, 6})  # SQLITE_BUSY, SQLITE_LOCKED
_FULL: Final = 13
_IOERR: Final = 10
_BROKEN: Final = frozenset({10, 11, 13, 14, 26})  # IOERR, CORRUPT, FULL, CANTOPEN, NOTADB
# Failures of the storage (not of a write's own logic): translated by ``translate``,
# and they end the whole transaction.
STORAGE_ERRORS: Final = (sqlite3.Error, OSError, GateTimeoutError)


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


def rollback_quietly(conn: sqlite3.Connection) -> None:
    """End a failed transaction; SQLite may already have rolled it back itself."""
    if conn.in_transaction:
        with contextlib.suppress(sqlite3.Error):
            conn.execute("ROLLBACK")


class JobKind(Enum):
    """What a job needs around its function."""

    READ = "read"  # one read transaction
    WRITE = "write"  # one write transaction (the writer may share it with other writes)
    PLAIN = "plain"  # no transaction (setup, pragmas)
    GATED = "gated"  # no transaction, holding the write gate
    CLOSE = "close"  # close the connection and end the thread


class Job:
    """One call waiting for the thread: its function, and where its result goes."""

    __slots__ = ("fn", "future", "kind", "loop", "weight")

    def __init__(
        self,
        kind: JobKind,
        fn: Callable[[Any], Any],
        loop: asyncio.AbstractEventLoop,
        future: asyncio.Future[Any],
        weight: int,
    ) -> None:
        self.kind = kind
        self.fn = fn
        self.loop = loop
        self.future = future
        self.weight = weight


# A job's result: (job, value, error); error None means success.
Outcome = tuple[Job, Any, BaseException | None]


def _settle(outcomes: Sequence[Outcome]) -> None:
    """Hand results to their futures (event loop thread); abandoned futures are skipped."""
    for job, value, error in outcomes:
        if job.future.done():  # the caller was cancelled: it wants no result
            continue
        if error is None:
            job.future.set_result(value)
        else:
            job.future.set_exception(error)


class Worker:
    """A thread with its own connection, running whole transactions.

    Args:
        name: thread name (for debuggers and ``ps -L``).
        path: the database file.
        opener: opens the connection, in the worker thread, on first use.
        busy_timeout_s: how long a write waits for the lock (for error messages).
    """

    def __init__(
        self,
        name: str,
        path: str,
        opener: Callable[[], sqlite3.Connection],
        *,
        busy_timeout_s: float,
    ) -> None:
        self.name = name
        self.path = path
        self._opener = opener
        self.busy_timeout_s = busy_timeout_s
        self._queue: SimpleQueue[Job] = SimpleQueue()
        self._thread = threading.Thread(target=self._serve, name=name, daemon=True)
        self._conn: sqlite3.Connection | None = None
        self._closing = False
        self.jobs = 0

    # -- the event loop side ------------------------------------------------------

    def start(self) -> None:
        """Start the thread."""
        self._thread.start()

    async def read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn`` in one read transaction (one consistent snapshot)."""
        result: T = await self.submit(JobKind.READ, fn)
        return result

    async def call(self, fn: Callable[[sqlite3.Connection], T], *, gated: bool = False) -> T:
        """Run ``fn`` outside any transaction (setup, pragmas); ``gated``: hold the write gate."""
        result: T = await self.submit(JobKind.GATED if gated else JobKind.PLAIN, fn)
        return result

    def submit(
        self, kind: JobKind, fn: Callable[[Any], Any], weight: int = 0
    ) -> asyncio.Future[Any]:
        """Queue a job; the returned future gets its result (await it)."""
        if self._closing:
            raise StoreClosedError(f"{self.name} is closed: connect again")
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._queue.put(Job(kind, fn, loop, future, weight))
        return future

    async def close(self) -> None:
        """Finish the queued jobs, close the connection and end the thread."""
        if self._closing:
            return
        future = self.submit(JobKind.CLOSE, lambda _: None)
        self._closing = True
        # Never started: nobody will run the close job. (Not ``is_alive()``: a
        # started thread may already have run the close job and ended, and
        # closing twice would close a file descriptor reused by someone else.)
        if self._thread.ident is None:
            self._close_connection()
            return
        await future

    # -- the thread -----------------------------------------------------------------

    def _serve(self) -> None:
        pending: Job | None = None
        while True:
            job = pending if pending is not None else self._queue.get()
            if job.kind is JobKind.CLOSE:
                self._close_connection()
                self.post([(job, None, None), *self._refuse_queued()])
                return
            pending = self._handle(job)

    def _handle(self, job: Job) -> Job | None:
        """Run one job and post its outcome; return a job taken early from the queue, if any."""
        runner = self._runner(job.kind)
        try:
            value = self.guard(lambda: runner(job.fn))
        except BaseException as exc:
            self.post([(job, None, exc)])
        else:
            self.post([(job, value, None)])
        return None

    def _runner(self, kind: JobKind) -> Callable[[Callable[[Any], Any]], Any]:
        if kind is JobKind.READ:
            return self._read
        if kind is JobKind.PLAIN:
            return lambda fn: fn(self.connection())
        raise AssertionError(f"{self.name} cannot run {kind.value} jobs")

    def post(self, outcomes: Sequence[Outcome]) -> None:
        """Send outcomes to their event loops, one wake-up per loop."""
        if len(outcomes) == 1:
            with contextlib.suppress(RuntimeError):  # that loop is closed: nobody is waiting
                outcomes[0][0].loop.call_soon_threadsafe(_settle, outcomes)
            return
        by_loop: dict[asyncio.AbstractEventLoop, list[Outcome]] = {}
        for outcome in outcomes:
            by_loop.setdefault(outcome[0].loop, []).append(outcome)
        for loop, batch in by_loop.items():
            with contextlib.suppress(RuntimeError):  # that loop is closed: nobody is waiting
                loop.call_soon_threadsafe(_settle, batch)

    def connection(self) -> sqlite3.Connection:
        """The thread's connection, opened on first use (thread only)."""
        if self._conn is None:
            self._conn = self._opener()
        return self._conn

    def guard(self, call: Callable[[], T]) -> T:
        """Run a job, translating storage errors and reopening a broken connection."""
        self.jobs += 1
        try:
            return call()
        except STORAGE_ERRORS as exc:
            self.recover(exc)
            raise translate(exc, self.path, self.busy_timeout_s) from exc

    def recover(self, exc: BaseException) -> None:
        """After a failed job: end its transaction; drop a connection that cannot go on."""
        conn = self._conn
        if conn is None:
            return
        rollback_quietly(conn)
        if getattr(exc, "sqlite_errorcode", 0) & 0xFF in _BROKEN:
            self._conn = None
            conn.close()

    def _read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        conn = self.connection()
        conn.execute("BEGIN")
        try:
            return fn(conn)
        finally:
            rollback_quietly(conn)

    def _refuse_queued(self) -> list[Outcome]:
        """Fail the jobs that raced past ``close()`` (another loop or thread)."""
        refused: list[Outcome] = []
        while not self._queue.empty():
            job = self._queue.get_nowait()
            refused.append((job, None, StoreClosedError(f"{self.name} is closed: connect again")))
        return refused

    def _close_connection(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def __repr__(self) -> str:
        state = "closed" if self._closing else "connected" if self._conn is not None else "idle"
        return f"<{type(self).__name__} {self.name} {state} jobs={self.jobs}>"
