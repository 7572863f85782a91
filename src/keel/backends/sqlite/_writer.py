"""The writer thread: each write in a transaction, concurrent writes in one (group commit).

A durable commit costs one ``fsync`` whatever it holds, so when callers
write concurrently the writer takes every write already queued (up to
:data:`MAX_BATCH_JOBS` jobs or :data:`MAX_BATCH_BYTES` of values) into one
``BEGIN IMMEDIATE`` ... ``COMMIT``. Each write is still its own step: it
takes its own revision, in queue order, and gets its own result. No caller
hears of success before the ``COMMIT`` that holds its write returned, so an
acknowledged write is as durable as alone (``synchronous`` decides how), and
a crash before that ``COMMIT`` loses the whole group, none of it
acknowledged. This is the group commit of database logs (Gawlick and Kinkade,
"Varieties of concurrency control in IMS/VS Fast Path", 1985).

Isolation inside a group: each write runs under a ``SAVEPOINT``. One that
raises (a missing lease, a compaction in the past) is rolled back to its
savepoint and fails alone; the others commit. A storage error (full disk,
I/O error) rolls the whole group back, and the writes are then run again one
transaction each, so each gets the outcome it would have had alone. A wait
for the lock that times out fails the whole group at once (each write would
wait as long again).

The writer caches the counters (:class:`keel.backends.sqlite._txn.Meta`)
between its commits and checks ``PRAGMA data_version`` at the start of each
transaction: it changes exactly when another connection (another process or
store) committed, and then the counters are read again. So a process writing
alone reads no meta row per write, and expires leases only once the cached
earliest deadline has passed.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from time import perf_counter
from typing import Any, Final, TypeVar

from keel.backends.sqlite import _leases
from keel.backends.sqlite._gate import GateTimeoutError, WriteGate
from keel.backends.sqlite._txn import Meta, WriteTxn, read_state
from keel.backends.sqlite._worker import (
    STORAGE_ERRORS,
    Job,
    JobKind,
    Outcome,
    Worker,
    rollback_quietly,
    translate,
)
from keel.observe._store_metrics import store_metrics

__all__ = ["MAX_BATCH_BYTES", "MAX_BATCH_JOBS", "Writer"]

T = TypeVar("T")

MAX_BATCH_JOBS: Final = 64
MAX_BATCH_BYTES: Final = 4 * 1024 * 1024
_BUSY: Final = frozenset({5, 6})  # SQLITE_BUSY, SQLITE_LOCKED


def _waited_too_long(exc: BaseException) -> bool:
    """Whether a failure was a wait for the lock (retrying each write would wait again)."""
    cause = exc.__cause__ if exc.__cause__ is not None else exc
    if isinstance(cause, GateTimeoutError):
        return True
    return getattr(cause, "sqlite_errorcode", 0) & 0xFF in _BUSY


class Writer(Worker):
    """The writer thread of one store: gated, group-committing write transactions.

    Args:
        name: thread name.
        path: the database file.
        opener: opens the write connection (in the thread).
        busy_timeout_s: how long a transaction waits for the write gate.
        gate: the fair write gate shared with the other processes.
        root: the store's root prefix.
        retention: event-log rows to keep.
        now: the lease clock's current reading.
        on_commit: called in the thread after each commit.
    """

    def __init__(
        self,
        name: str,
        path: str,
        opener: Callable[[], sqlite3.Connection],
        *,
        busy_timeout_s: float,
        gate: WriteGate,
        root: str,
        retention: int,
        now: Callable[[], float],
        on_commit: Callable[[], None],
    ) -> None:
        super().__init__(name, path, opener, busy_timeout_s=busy_timeout_s)
        self._gate = gate
        self._root = root
        self._retention = retention
        self._now = now
        self._on_commit = on_commit
        self._cache: tuple[int, Meta] | None = None  # (data_version, counters) of this connection
        self.commits = 0

    def write(self, fn: Callable[[WriteTxn], T], *, weight: int = 0) -> asyncio.Future[T]:
        """Queue ``fn`` as one step of a write transaction; await the returned future.

        ``weight``: the bytes ``fn`` writes (bounds the group it joins).
        """
        return self.submit(JobKind.WRITE, fn, weight)

    # -- the thread -------------------------------------------------------------------

    def _runner(self, kind: JobKind) -> Callable[[Callable[[Any], Any]], Any]:
        self._cache = None  # setup and pragmas may change anything
        if kind is JobKind.GATED:
            return self._gated
        return super()._runner(kind)

    def _gated(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        self._gate.acquire(self.busy_timeout_s)
        try:
            return fn(self.connection())
        finally:
            self._gate.release()

    def _handle(self, job: Job) -> Job | None:
        if job.kind is not JobKind.WRITE:
            return super()._handle(job)
        batch, pending = self._gather(job)
        try:
            self._commit(batch)
        except BaseException as exc:  # a bug: never leave a caller waiting forever
            self.post([(j, None, exc) for j in batch])
        return pending

    def _gather(self, first: Job) -> tuple[list[Job], Job | None]:
        """The first write and the writes queued behind it; a non-write job is returned apart."""
        batch = [first]
        weight = first.weight
        queue = self._queue  # this thread is its only consumer: empty() then get() is safe
        while not queue.empty() and len(batch) < MAX_BATCH_JOBS and weight < MAX_BATCH_BYTES:
            job = queue.get_nowait()
            if job.kind is not JobKind.WRITE:
                return batch, job
            batch.append(job)
            weight += job.weight
        return batch, None

    def _commit(self, batch: list[Job]) -> None:
        """Run a group in one gated transaction and post every outcome."""
        try:
            self._gate.acquire(self.busy_timeout_s)
        except STORAGE_ERRORS as exc:
            self.post([(job, None, self._error(exc)) for job in batch])
            return
        started = perf_counter()
        try:
            outcomes = self.guard(lambda: self._transaction(batch))
        except Exception as exc:
            failure: Exception | None = exc
        else:
            failure = None
        finally:
            self._gate.release()
        if failure is None:
            self.commits += 1
            store_metrics().committed("sqlite", len(batch), perf_counter() - started)
            self._on_commit()
            self.post(outcomes)
        elif len(batch) == 1 or _waited_too_long(failure):
            self.post([(batch[0], None, failure)])
            self.post([(job, None, self._error(failure.__cause__)) for job in batch[1:]])
        else:
            for job in batch:  # each alone, for its own outcome
                self._commit([job])

    def _error(self, exc: BaseException | None) -> BaseException:
        """A fresh translated error per caller (one exception object per raise)."""
        if exc is None:
            return RuntimeError("sqlite write failed")
        error = translate(exc, self.path, self.busy_timeout_s)
        error.__cause__ = exc
        return error

    def _transaction(self, batch: list[Job]) -> list[Outcome]:
        conn = self.connection()
        conn.execute("BEGIN IMMEDIATE")
        try:
            version, meta = self._counters(conn)
            txn = WriteTxn(conn, self._root, self._retention, meta)
            _leases.expire_due(txn, self._now())
            if len(batch) == 1:
                outcomes = [self._alone(txn, batch[0])]
                if outcomes[0][2] is not None:
                    conn.execute("ROLLBACK")
                    return outcomes
            else:
                outcomes = [self._step(txn, job) for job in batch]
            txn.finish()
            conn.execute("COMMIT")
        except BaseException:
            self._cache = None
            rollback_quietly(conn)
            raise
        self._cache = (version, txn.meta)
        return outcomes

    def _counters(self, conn: sqlite3.Connection) -> tuple[int, Meta]:
        """The counters: cached unless another connection committed since our last commit."""
        (version,) = conn.execute("PRAGMA data_version").fetchone()
        cached = self._cache
        if cached is not None and cached[0] == version:
            return cached
        self._cache = (version, read_state(conn))
        return self._cache

    @staticmethod
    def _alone(txn: WriteTxn, job: Job) -> Outcome:
        try:
            return job, job.fn(txn), None
        except STORAGE_ERRORS:
            raise
        except Exception as exc:
            return job, None, exc

    @staticmethod
    def _step(txn: WriteTxn, job: Job) -> Outcome:
        mark = txn.mark()
        txn.conn.execute("SAVEPOINT step")
        try:
            value = job.fn(txn)
        except STORAGE_ERRORS:
            raise
        except Exception as exc:
            txn.conn.execute("ROLLBACK TO step")
            txn.conn.execute("RELEASE step")
            txn.restore(mark)
            return job, None, exc
        txn.conn.execute("RELEASE step")
        return job, value, None

    def _close_connection(self) -> None:
        super()._close_connection()
        self._gate.close()
