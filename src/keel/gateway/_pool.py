"""Keep-alive connections to upstream instances: a bounded pool per (scheme, host, port).

An idle connection is reused newest first (LIFO: the warmest socket, and the
oldest ones age out); one idle for longer than ``idle_timeout_s`` is closed
rather than reused, since servers close idle keep-alive connections on their
own (uvicorn after 5 s) and a request written into a socket the server is
closing fails in a way a POST cannot safely retry. Past ``max_per_instance``
open connections, callers wait for one to be given back.
"""

from __future__ import annotations

import asyncio
import collections
import ssl as _ssl
import time
from dataclasses import dataclass

from keel.gateway._h1 import Connection

__all__ = ["ConnectFailedError", "Pool", "PoolStatistics"]

Key = tuple[str, str, int]


class ConnectFailedError(ConnectionError):
    """No connection to the upstream could be opened: the request was never sent."""


@dataclass(frozen=True, slots=True)
class PoolStatistics:
    """A snapshot of a :class:`Pool`.

    Attributes:
        instances: upstream addresses with a connection (open or idle).
        open: connections open now (busy and idle).
        idle: idle connections kept for reuse.
        opened: connections opened so far.
        reused: exchanges that reused an idle connection.
    """

    instances: int
    open: int
    idle: int
    opened: int
    reused: int


class Pool:
    """Idle connections per upstream address, and a bound on open ones.

    Args:
        max_per_instance: open connections per upstream address at most.
        max_idle_per_instance: idle connections kept per address.
        idle_timeout_s: idle connections older than this are closed, not reused.
        connect_timeout_s: TCP (and TLS) connect timeout.
    """

    def __init__(
        self,
        *,
        max_per_instance: int,
        max_idle_per_instance: int,
        idle_timeout_s: float,
        connect_timeout_s: float,
    ) -> None:
        self._max = max_per_instance
        self._max_idle = max_idle_per_instance
        self._idle_timeout_s = idle_timeout_s
        self._connect_timeout_s = connect_timeout_s
        self._idle: dict[Key, list[Connection]] = {}
        self._open: dict[Key, int] = {}
        self._waiters: dict[Key, collections.deque[asyncio.Future[None]]] = {}
        self._ssl: _ssl.SSLContext | None = None
        self._opened = 0
        self._reused = 0

    async def acquire(self, key: Key) -> Connection:
        """A connection to ``key`` for one exchange (reused or new).

        Raises:
            ConnectFailedError: connecting failed (refused, unreachable, timed out).
        """
        conn = self.try_acquire(key)
        if conn is not None:
            return conn
        while self._open.get(key, 0) >= self._max:
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.setdefault(key, collections.deque()).append(waiter)
            await waiter
            idle = self._idle.get(key)
            if idle:
                return await self.acquire(key)
        self._open[key] = self._open.get(key, 0) + 1
        try:
            conn = await self._connect(key)
        except BaseException:
            self._open[key] -= 1
            if self._open[key] <= 0:
                del self._open[key]
            self._wake(key)
            raise
        self._opened += 1
        conn.begin()
        return conn

    def try_acquire(self, key: Key) -> Connection | None:
        """An idle connection to ``key`` for one exchange, or None (without waiting)."""
        idle = self._idle.get(key)
        if idle:
            now = time.monotonic()
            while idle:
                conn = idle.pop()
                conn.on_lost = None
                if not conn.closed and now - conn.idle_since < self._idle_timeout_s:
                    self._reused += 1
                    conn.begin()
                    return conn
                self._discard(conn)
        return None

    async def _connect(self, key: Key) -> Connection:
        scheme, host, port = key
        loop = asyncio.get_running_loop()
        context = None
        if scheme == "https":
            if self._ssl is None:
                self._ssl = _ssl.create_default_context()
            context = self._ssl
        try:
            async with asyncio.timeout(self._connect_timeout_s):
                _, conn = await loop.create_connection(
                    lambda: Connection(key, loop), host, port, ssl=context
                )
        except (OSError, TimeoutError) as exc:
            raise ConnectFailedError(f"cannot connect to upstream {host}:{port}: {exc}") from exc
        return conn

    def release(self, conn: Connection) -> None:
        """Give back a connection after its exchange: kept if reusable, else closed."""
        key = conn.key
        if conn.reusable:
            idle = self._idle.get(key)
            if idle is None:
                idle = self._idle[key] = []
            if len(idle) < self._max_idle:
                conn.idle_since = time.monotonic()
                conn.on_lost = self._lost_idle
                idle.append(conn)
                if self._waiters.get(key):
                    self._wake(key)
                return
        self._discard(conn)

    def _lost_idle(self, conn: Connection) -> None:
        """An idle connection was closed by its upstream: forget it now, not at next use."""
        conn.on_lost = None
        idle = self._idle.get(conn.key)
        if idle is not None and conn in idle:
            idle.remove(conn)
            self._discard(conn)

    def _discard(self, conn: Connection) -> None:
        conn.close()
        key = conn.key
        left = self._open.get(key, 1) - 1
        if left > 0:
            self._open[key] = left
        else:
            self._open.pop(key, None)
            idle = self._idle.get(key)
            if idle is not None and not idle:
                del self._idle[key]
        self._wake(key)

    def _wake(self, key: Key) -> None:
        waiters = self._waiters.get(key)
        while waiters:
            waiter = waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    def close(self) -> None:
        """Close every idle connection (busy ones close when their exchange ends)."""
        for idle in list(self._idle.values()):
            while idle:
                conn = idle.pop()
                conn.on_lost = None
                self._discard(conn)
        self._idle.clear()

    def statistics(self) -> PoolStatistics:
        """Addresses, open and idle connections, opened and reused counts."""
        return PoolStatistics(
            len(self._open),
            sum(self._open.values()),
            sum(len(v) for v in self._idle.values()),
            self._opened,
            self._reused,
        )

    def __repr__(self) -> str:
        s = self.statistics()
        return f"<Pool open={s.open} idle={s.idle} opened={s.opened} reused={s.reused}>"
