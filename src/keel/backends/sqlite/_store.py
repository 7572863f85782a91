"""``SqliteStore``: the store contract on one SQLite file shared by many processes.

The async shell over the synchronous pieces: :mod:`._txn` (a write as one
``BEGIN IMMEDIATE`` transaction), :mod:`._reads`, :mod:`._leases`,
:mod:`._gate` (fair writes across processes), :mod:`._poller` (the watch
fan-out), :mod:`._worker` (the threads) and :mod:`._writer` (group commit).
Each store has a writer thread (with the write gate) and a reader thread,
each with its own connection, so a write waiting for another process never
delays reads.

Durability: the database is in WAL mode with ``synchronous=FULL`` by default,
so an acknowledged write was fsynced to the WAL before the call returned and
survives ``kill -9`` of any process and power loss. ``synchronous=normal``
skips that fsync: still safe against process crashes (the OS holds the
data), but the last commits may be lost on power loss. Concurrent writes may
share one commit (see :mod:`._writer`); none is acknowledged before it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Final, TypeVar

from keel.backends.sqlite import _leases, _reads
from keel.backends.sqlite._gate import WriteGate
from keel.backends.sqlite._poller import Hub, Subscription, acquire_hub, release_hub
from keel.backends.sqlite._schema import connect, file_size, init_schema, read_meta
from keel.backends.sqlite._txn import WriteTxn
from keel.backends.sqlite._worker import Worker
from keel.backends.sqlite._writer import Writer
from keel.clock import SYSTEM_CLOCK, Clock
from keel.errors import (
    LeaseNotFoundError,
    StoreClosedError,
    StoreUnavailableError,
    ValidationError,
)
from keel.store import (
    Compare,
    Delete,
    KeyValue,
    Lease,
    LeaseInfo,
    Op,
    Put,
    Store,
    StoreStatus,
    TxnResult,
    Watch,
)
from keel.store._base import DEFAULT_MAX_VALUE_BYTES, DEFAULT_ROOT

__all__ = ["REAP_INTERVAL_S", "SqliteOptions", "SqliteStore"]

T = TypeVar("T")
REAP_INTERVAL_S: Final = 0.25
_log = logging.getLogger("keel.backends.sqlite")


@dataclass(frozen=True, slots=True, kw_only=True)
class SqliteOptions:
    """Tuning of a SQLite store (the URL's query options).

    Attributes:
        synchronous: ``full`` (fsync every commit: survives power loss) or
            ``normal`` (survives process crashes; may lose the last commits
            on power loss).
        retention: event-log entries kept for watch replay and past reads;
            older revisions are compacted automatically.
        busy_timeout_s: how long a write waits for the write lock before
            raising StoreUnavailableError.
    """

    synchronous: str = "full"
    retention: int = 100_000
    busy_timeout_s: float = 5.0

    def __post_init__(self) -> None:
        if self.synchronous not in ("full", "normal"):
            raise ValidationError(
                f"synchronous={self.synchronous!r}: use 'full' (default, survives power "
                f"loss) or 'normal' (faster, survives process crashes)"
            )
        if self.retention < 1:
            raise ValidationError(f"retention={self.retention}: keep at least 1 event")
        if not 0 < self.busy_timeout_s <= 3600:
            raise ValidationError(
                f"busy_timeout_s={self.busy_timeout_s}: give seconds between 0 and 3600"
            )

    @classmethod
    def from_query(cls, options: dict[str, str]) -> SqliteOptions:
        """Options from a parsed URL's query (strings), with clear errors."""
        try:
            return cls(
                synchronous=options.get("synchronous", "full").lower(),
                retention=int(options.get("retention", "100000")),
                busy_timeout_s=float(options.get("busy_timeout_s", "5")),
            )
        except ValueError as exc:
            if isinstance(exc, ValidationError):
                raise
            raise ValidationError(
                f"sqlite URL options {options}: retention is a whole number and "
                f"busy_timeout_s a number of seconds ({exc})"
            ) from exc


def _prepare_files(path: str) -> None:
    """Create the directories (0700) and the database file (0600) that are missing."""
    missing: list[str] = []
    directory = os.path.dirname(path)
    while not os.path.isdir(directory):
        missing.append(directory)
        directory = os.path.dirname(directory)
    for created in reversed(missing):
        try:
            os.mkdir(created, 0o700)
        except FileExistsError:  # another process made it first
            continue
        os.chmod(created, 0o700)  # whatever the umask
    # SQLite gives -wal and -shm the mode of the database file, so 0600 here covers them.
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        if os.fstat(fd).st_size == 0:
            os.fchmod(fd, 0o600)
    finally:
        os.close(fd)


class _SqliteWatch(Watch):
    def __init__(self, store: SqliteStore, key: str, prefix: bool, start: int | None) -> None:
        super().__init__(key, prefix=prefix, start_revision=start)
        self._store = store
        self.subscription: Subscription | None = None

    async def _open(self) -> None:
        await self._store._attach(self)

    async def _close(self) -> None:
        self._store._detach(self)


class SqliteStore(Store):
    """A store in one SQLite file, shared by every process on the host that opens it.

    Args:
        path: the database file (its directory is created with mode 0700).
        root: the root prefix stored in front of every key.
        max_value_bytes: the largest value accepted.
        options: durability, retention and lock-wait tuning.
        clock: drives lease deadlines and the reaper; keep the default for
            anything that spans processes (see :mod:`._leases`).
    """

    backend = "sqlite"

    def __init__(
        self,
        path: str,
        *,
        root: str = DEFAULT_ROOT,
        max_value_bytes: int = DEFAULT_MAX_VALUE_BYTES,
        options: SqliteOptions | None = None,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        super().__init__(root=root, max_value_bytes=max_value_bytes)
        if not path or "\x00" in path:
            raise ValidationError(
                f"sqlite path {path!r} is empty or holds a NUL byte: give a file path"
            )
        self.path = os.path.abspath(path)
        self.options = options or SqliteOptions()
        self._clock = clock
        self._hub: Hub | None = None
        self._writer: Writer | None = None
        self._reader: Worker | None = None
        self._reaper: asyncio.Task[None] | None = None
        self._watches: set[_SqliteWatch] = set()

    def _connect(self, read_only: bool) -> sqlite3.Connection:
        return connect(
            self.path,
            synchronous=self.options.synchronous,
            busy_timeout_s=self.options.busy_timeout_s,
            read_only=read_only,
        )

    async def start(self) -> SqliteStore:
        """Create the file if needed, start the threads, the poller and the reaper."""
        try:
            await asyncio.to_thread(_prepare_files, self.path)
            gate = await asyncio.to_thread(WriteGate, self.path + "-lock")
        except OSError as exc:
            raise StoreUnavailableError(
                f"cannot create the sqlite store at {self.path} ({exc}): create its "
                f"directory with write access, or choose another path"
            ) from exc
        self._writer = Writer(
            "keel-sqlite-writer",
            self.path,
            partial(self._connect, False),
            busy_timeout_s=self.options.busy_timeout_s,
            gate=gate,
            root=self.root,
            retention=self.options.retention,
            now=self._clock.monotonic,
            on_commit=self._notify_poller,
        )
        self._reader = Worker(
            "keel-sqlite-reader",
            self.path,
            partial(self._connect, True),
            busy_timeout_s=self.options.busy_timeout_s,
        )
        self._writer.start()
        self._reader.start()
        try:
            await self._writer.call(partial(init_schema, path=self.path), gated=True)
            self._hub = acquire_hub(self.path, partial(self._connect, True))
            boot_id = _leases.current_boot_id()
            await self._write(lambda txn: _leases.check_boot(txn, boot_id))
        except BaseException:
            await self._shutdown()
            raise
        self._reaper = asyncio.get_running_loop().create_task(
            self._reap_forever(), name=f"keel-sqlite-reaper {self.path}"
        )
        return self

    # -- plumbing -------------------------------------------------------------

    def _notify_poller(self) -> None:
        """Wake this process's poller after a commit (writer thread)."""
        hub = self._hub
        if hub is not None:
            hub.notify()

    def _write(self, fn: Callable[[WriteTxn], T], weight: int = 0) -> asyncio.Future[T]:
        """Run ``fn`` as one step of a write transaction (due leases are expired first).

        ``weight`` is the bytes ``fn`` writes, which bounds the group commits it
        joins. Returns the future to await (no coroutine layer on the hot path).
        """
        if self._writer is None:
            raise StoreClosedError(f"sqlite store {self.path} is closed: connect again")
        return self._writer.write(fn, weight=weight)

    async def _read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        assert self._reader is not None
        return await self._reader.read(fn)

    async def _reap_forever(self) -> None:
        """Expire due leases of every process (a read each tick; a write only when due)."""
        while True:
            await self._clock.sleep(REAP_INTERVAL_S)
            try:
                if await self._read(lambda c: _leases.any_due(c, self._clock.monotonic())):
                    await self._write(lambda txn: None)
            except StoreUnavailableError as exc:
                _log.warning("lease reaper on %s: %s", self.path, exc)

    # -- backend hooks ------------------------------------------------------------

    async def _do_put(self, key: str, value: bytes, lease: int) -> int:
        result = await self._write(lambda txn: txn.put_one(key, value, lease), len(value))
        if isinstance(result, LeaseNotFoundError):
            raise result
        return result

    async def _do_get(self, key: str) -> KeyValue | None:
        return await self._read(lambda c: _reads.get(c, self.root, key))

    async def _do_range(
        self, key: str, prefix: bool, limit: int | None, revision: int | None
    ) -> tuple[list[KeyValue], int]:
        if revision is None:
            return await self._read(lambda c: _reads.range_now(c, self.root, key, prefix, limit))
        return await self._read(
            lambda c: _reads.range_at(c, self.root, key, prefix, limit, revision)
        )

    async def _do_delete(self, key: str, prefix: bool) -> int:
        result = await self._do_txn((), (Delete(key, prefix),), ())
        count = result.results[0]
        assert isinstance(count, int)
        return count

    async def _do_txn(
        self, compare: tuple[Compare, ...], success: tuple[Op, ...], failure: tuple[Op, ...]
    ) -> TxnResult:
        def apply(txn: WriteTxn) -> TxnResult | LeaseNotFoundError:
            outcome = txn.run(compare, success, failure)
            if isinstance(outcome, LeaseNotFoundError):
                return outcome
            ok, results = outcome
            return TxnResult(ok, txn.revision, tuple(results))

        weight = sum(len(op.value) for op in (*success, *failure) if isinstance(op, Put))
        result = await self._write(apply, weight)
        if isinstance(result, LeaseNotFoundError):
            raise result
        return result

    async def _do_grant(self, ttl: int) -> Lease:
        return await self._write(lambda txn: _leases.grant(txn, ttl, self._clock.monotonic()))

    async def _do_keepalive(self, lease_id: int) -> int:
        return await self._write(
            lambda txn: _leases.keepalive(txn, lease_id, self._clock.monotonic())
        )

    async def _do_revoke(self, lease_id: int) -> None:
        if not await self._write(lambda txn: _leases.revoke(txn, lease_id)):
            raise LeaseNotFoundError(f"lease {lease_id} not found (expired or revoked)")

    async def _do_time_to_live(self, lease_id: int) -> LeaseInfo | None:
        return await self._read(
            lambda c: _leases.time_to_live(c, lease_id, self._clock.monotonic(), self.root)
        )

    async def _do_leases(self) -> list[int]:
        return await self._read(lambda c: _leases.live_leases(c, self._clock.monotonic()))

    def _make_watch(self, key: str, prefix: bool, start_revision: int | None) -> Watch:
        return _SqliteWatch(self, key, prefix, start_revision)

    async def _attach(self, watch: _SqliteWatch) -> None:
        """Give the watch a start revision if it has none, then hand it to the poller."""
        self._check_open()
        if watch.start_revision is None:
            current, _ = await self._read(_reads.revisions)
            watch.start_revision = current + 1
            self._check_open()
        assert self._hub is not None
        full = (self.root + watch.key).encode()
        watch.subscription = Subscription(watch, full, watch.prefix, len(self.root.encode()))
        self._watches.add(watch)
        self._hub.subscribe(watch.subscription)

    def _detach(self, watch: _SqliteWatch) -> None:
        self._watches.discard(watch)
        if self._hub is not None and watch.subscription is not None:
            self._hub.unsubscribe(watch.subscription)

    async def _do_compact(self, revision: int) -> None:
        await self._write(lambda txn: txn.compact(revision))

    async def _do_status(self) -> StoreStatus:
        def collect(conn: sqlite3.Connection) -> StoreStatus:
            meta = read_meta(conn)
            mode = conn.execute("PRAGMA journal_mode").fetchone()[0]
            return StoreStatus(
                backend="sqlite",
                endpoint=self.path,
                root=self.root,
                revision=int(meta["revision"]),
                compact_revision=int(meta["compact_revision"]),
                keys=_reads.count_keys(conn, self.root),
                leases=len(_leases.live_leases(conn, self._clock.monotonic())),
                size_bytes=file_size(self.path),
                details={
                    "journal_mode": str(mode),
                    "synchronous": self.options.synchronous,
                    "events_kept": str(meta["events"]),
                    "retention": str(self.options.retention),
                },
            )

        return await self._read(collect)

    async def _do_close(self) -> None:
        if self._reaper is not None:
            self._reaper.cancel()
            await asyncio.gather(self._reaper, return_exceptions=True)
        for watch in list(self._watches):
            self._detach(watch)
            watch._fail(StopAsyncIteration())
        await self._shutdown()

    async def _shutdown(self) -> None:
        for worker in (self._writer, self._reader):
            if worker is not None:
                with contextlib.suppress(StoreUnavailableError):
                    await worker.close()
        self._writer = self._reader = None
        if self._hub is not None:
            hub, self._hub = self._hub, None
            await release_hub(hub)

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return (
            f"<SqliteStore {self.path!r} root={self.root!r} sync={self.options.synchronous} "
            f"watches={len(self._watches)} {state}>"
        )
