"""Watch fan-out: one poller thread per process per database file.

Every process tails the event log itself: that is how a write made by one
process reaches the watches of another, with no server in between. One
:class:`Hub` per (process, file) owns a thread with its own read connection;
every :class:`keel.backends.sqlite.SqliteStore` of the process opened on that
file shares it, so ten stores on one file still poll once.

The thread checks ``PRAGMA data_version`` while some watch is open (a read of
the WAL index in shared memory: microseconds, no transaction, no disk I/O):
every 2 ms while keys are changing, backing off to every 10 ms after a
quarter of a second without a new revision (each wake-up takes the GIL from
the process's event loop; at 500 a second that showed in a busy gateway's
throughput). A lease kept alive changes the file but no key: it does not
hurry the thread (with a few processes renewing leases, it used to keep a
gateway's poller at 2 ms a third of the time: 8-20% of its CPU per
request). A commit by a store of this process wakes it at once. When the
version moved it reads the new events in one read transaction and posts them
to each matching watch's event loop with ``call_soon_threadsafe``.

No loss, no duplicate: the thread alone moves ``position`` (the last revision
posted to live watches). A new watch is queued as *joining*; on its next pass
the thread first advances the live watches to the snapshot's revision, then
replays the joining watch's history from ``start_revision`` up to
``position`` out of the same snapshot, and only then makes it live, so the
replay ends exactly where the live tail begins. If the log was compacted past
a watch's next revision (a slow process, a small ``retention``), the watch
ends with CompactedError instead of silently skipping events.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from typing import Final

from keel.backends.sqlite._reads import revisions
from keel.backends.sqlite._schema import EVENT_COLUMNS, EventRow, key_span, row_to_event
from keel.errors import CompactedError
from keel.store import Event, Watch

__all__ = ["Hub", "Subscription", "acquire_hub", "release_hub"]

_log = logging.getLogger("keel.backends.sqlite")

POLL_INTERVAL_S: Final = 0.002
QUIET_POLL_INTERVAL_S: Final = 0.010
_QUIET_AFTER_S: Final = 0.25
_IDLE_WAIT_S: Final = 1.0
_CHUNK_REVISIONS: Final = 512
_ERROR_BACKOFF_S: Final = 0.05


class Subscription:
    """One watch as the poller thread sees it: where it posts, what it matches."""

    def __init__(self, watch: Watch, full_key: bytes, prefix: bool, root_len: int) -> None:
        assert watch.start_revision is not None
        self.watch = watch
        self.loop = asyncio.get_running_loop()
        self.low, self.high = key_span(full_key, prefix)
        self.root_len = root_len
        self.next_rev = watch.start_revision
        self.active = True

    def matches(self, full_key: bytes) -> bool:
        """Whether a stored key is in the watched span."""
        if self.high is None:
            return full_key == self.low
        return self.low <= full_key < self.high

    def _call(self, fn: Callable[..., object], *args: object) -> None:
        try:
            self.loop.call_soon_threadsafe(fn, *args)
        except RuntimeError:  # the watch's event loop is closed: nobody is listening
            self.active = False

    def post(self, rows: Sequence[EventRow], head: int) -> None:
        """Post the matching rows at or after ``next_rev`` to the watch (poller thread).

        ``head`` is the newest revision of the snapshot the rows were read from.
        """
        events = [
            row_to_event(r, self.root_len)
            for r in rows
            if r[0] >= self.next_rev and self.matches(bytes(r[2]))
        ]
        if rows:
            self.next_rev = max(self.next_rev, rows[-1][0] + 1)
        if events:
            self._call(self._deliver_all, events, max(0, head - events[-1].kv.mod_revision))

    def _deliver_all(self, events: list[Event], behind: int) -> None:
        for event in events:
            self.watch._deliver(event)
        self.watch._behind(behind)

    def fail(self, exc: BaseException) -> None:
        """End the watch with ``exc`` (from any thread)."""
        self.active = False
        self._call(self.watch._fail, exc)


class Hub:
    """The poller of one database file in this process.

    Args:
        path: the database file.
        opener: opens the poller's read connection (called in its thread).
    """

    def __init__(self, path: str, opener: Callable[[], sqlite3.Connection]) -> None:
        self.path = path
        self.refs = 0
        self.position: int | None = None
        self._opener = opener
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stopping = False
        self._joining: list[Subscription] = []
        self._live: list[Subscription] = []
        self._data_version = -1
        self._changed_at = 0.0  # monotonic time the poller last saw the file change
        self._thread = threading.Thread(target=self._run, name="keel-sqlite-poller", daemon=True)

    def start(self) -> None:
        """Start the poller thread."""
        self._thread.start()

    def notify(self) -> None:
        """A store of this process committed: look now (any thread).

        With no watch open there is nothing to deliver, so the poller is left
        asleep: waking it on every commit made it compete with the writer
        (a read transaction and the GIL per commit). A watch that opens later
        is caught up from its own start revision.
        """
        if self._live or self._joining:
            self._wake.set()

    def subscribe(self, sub: Subscription) -> None:
        """Queue a watch; it is replayed and then made live by the poller thread."""
        with self._lock:
            self._joining.append(sub)
        self._wake.set()

    def unsubscribe(self, sub: Subscription) -> None:
        """Stop posting to a watch (any thread)."""
        with self._lock:
            sub.active = False
            if sub in self._joining:
                self._joining.remove(sub)
            if sub in self._live:
                self._live.remove(sub)

    async def stop(self) -> None:
        """Stop the thread and wait for it."""
        self._stopping = True
        self._wake.set()
        await asyncio.get_running_loop().run_in_executor(None, self._thread.join)

    # -- the poller thread ------------------------------------------------------

    def _run(self) -> None:
        conn: sqlite3.Connection | None = None
        failing = False
        while not self._stopping:
            try:
                conn = conn or self._opener()
                self._step(conn)
                failing = False
            except (sqlite3.Error, OSError) as exc:
                if not failing:
                    _log.warning("sqlite watch poller on %s failed, retrying: %s", self.path, exc)
                failing = True
                if conn is not None:
                    conn.close()
                conn = None
                self._wake.wait(_ERROR_BACKOFF_S)
                continue
            self._wake.wait(self._interval())
            self._wake.clear()
        if conn is not None:
            conn.close()

    def _interval(self) -> float:
        """How long to sleep before the next look (a commit here wakes it sooner)."""
        if not (self._live or self._joining):
            return _IDLE_WAIT_S
        quiet = time.monotonic() - self._changed_at > _QUIET_AFTER_S
        return QUIET_POLL_INTERVAL_S if quiet else POLL_INTERVAL_S

    def _step(self, conn: sqlite3.Connection) -> None:
        version = conn.execute("PRAGMA data_version").fetchone()[0]
        with self._lock:
            joining, self._joining = self._joining, []
        if version == self._data_version and not joining and self.position is not None:
            return
        try:
            conn.execute("BEGIN")
            current, compact = revisions(conn)
            if self.position is None:
                self.position = current
            elif current > self.position:  # keys changed (a lease kept alive moves no revision)
                self._changed_at = time.monotonic()
            self._advance(conn, current, compact)
            while joining:
                self._catch_up(conn, joining[0], compact)
                joining.pop(0)
            self._data_version = version
        finally:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            if joining:  # an error cut the pass short: retry them (next_rev marks progress)
                with self._lock:
                    self._joining[:0] = [s for s in joining if s.active]

    def _advance(self, conn: sqlite3.Connection, current: int, compact: int) -> None:
        assert self.position is not None
        with self._lock:
            self._live = [s for s in self._live if s.active]
            live = tuple(self._live)  # a copy: unsubscribe() edits self._live from other threads
        if not live or current <= self.position:
            self.position = max(self.position, current)
            return
        if self.position + 1 < compact:
            for sub in live:
                sub.fail(CompactedError(compact))
            self.position = current
            return
        while self.position < current:
            upper = min(current, self.position + _CHUNK_REVISIONS)
            rows = self._events(conn, self.position + 1, upper)
            for sub in live:
                sub.post(rows, current)
            self.position = upper

    @staticmethod
    def _events(
        conn: sqlite3.Connection, first: int, last: int, sub: Subscription | None = None
    ) -> list[EventRow]:
        sql = f"SELECT {EVENT_COLUMNS} FROM events WHERE rev >= ? AND rev <= ?"
        args: tuple[object, ...] = (first, last)
        if sub is not None:
            sql += " AND key = ?" if sub.high is None else " AND key >= ? AND key < ?"
            args += (sub.low,) if sub.high is None else (sub.low, sub.high)
        return conn.execute(sql + " ORDER BY rev, idx", args).fetchall()

    def _catch_up(self, conn: sqlite3.Connection, sub: Subscription, compact: int) -> None:
        assert self.position is not None
        if sub.next_rev < compact:
            sub.fail(CompactedError(compact))
            return
        while sub.next_rev <= self.position:
            upper = min(self.position, sub.next_rev + _CHUNK_REVISIONS - 1)
            sub.post(self._events(conn, sub.next_rev, upper, sub), self.position)
            sub.next_rev = max(sub.next_rev, upper + 1)
        with self._lock:
            if sub.active:
                self._live.append(sub)

    def __repr__(self) -> str:
        return (
            f"<Hub {self.path!r} position={self.position} live={len(self._live)} "
            f"joining={len(self._joining)} refs={self.refs}>"
        )


_HUBS: dict[str, Hub] = {}
_HUBS_LOCK = threading.Lock()


def acquire_hub(path: str, opener: Callable[[], sqlite3.Connection]) -> Hub:
    """The hub of ``path`` in this process (started if new), with one more reference."""
    with _HUBS_LOCK:
        hub = _HUBS.get(path)
        if hub is None:
            hub = _HUBS[path] = Hub(path, opener)
            hub.start()
        hub.refs += 1
        return hub


async def release_hub(hub: Hub) -> None:
    """Drop a reference; the last one stops the hub's thread."""
    with _HUBS_LOCK:
        hub.refs -= 1
        last = hub.refs == 0
        if last and _HUBS.get(hub.path) is hub:
            del _HUBS[hub.path]
    if last:
        await hub.stop()
