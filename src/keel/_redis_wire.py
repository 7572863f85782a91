"""A short path to one Redis server: pooled connections kept checked out between commands.

Why: per command, redis-py's asyncio client checks a connection out of its
pool (with a readiness poll of the socket), runs it under its retry helper,
reports it to its observability hooks, checks the connection back in, and,
when the client has a socket timeout (redis-py 8's default), wraps the write
in ``asyncio.wait_for``: a new task per command, and on Python 3.11 a
cancellation that lands as the write completes is lost. Measured: ~100 us of
client CPU per ``XADD`` through ``client.xadd`` against ~40 us on a
connection used directly; ~3,200 GET/s through ``client.get`` against
~5,100/s. Latency-bound callers (the Redis lock's scripts) and throughput-bound
ones (the events engine's XADD, XREADGROUP, XACK) both use it.

:class:`Wire` keeps up to ``max_idle`` connections of the client's own pool
checked out between commands, writes each command packed here (RESP arrays
of bulk strings; bytes pass through unchanged) and reads the reply with
redis-py's parser under the connection's socket timeout. Replies come back
raw (bytes, ints, lists, None; maps under RESP3), error replies as redis-py
raises them. A connection that fails is disconnected and handed back to the
pool; a reused idle connection that turns out closed by the server (it never
ran the command) is replaced once, so callers' commands must be safe to send
again in that case. The connections stay owned by the pool, so ``await
client.aclose()`` closes them. Only for a plain ``Redis`` client: a cluster
client keeps redis-py's path, which follows slot moves.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.connection import AbstractConnection, ConnectionPool
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

__all__ = ["Wire", "pack", "write_timeout"]


class Wire:
    """Runs commands on connections of ``pool`` kept checked out between calls.

    Args:
        pool: the client's connection pool.
        write_timeout_s: the longest a write may wait for the socket to drain.
        max_idle: connections kept checked out between commands.
    """

    __slots__ = ("__weakref__", "_idle", "_max_idle", "_pool", "_write_timeout_s")

    def __init__(
        self, pool: ConnectionPool, write_timeout_s: float | None, *, max_idle: int = 2
    ) -> None:
        self._pool = pool
        self._idle: list[AbstractConnection] = []
        self._write_timeout_s = write_timeout_s
        self._max_idle = max_idle

    async def execute(self, *args: str | int | bytes) -> Any:
        """Send one command and return its raw reply (errors as redis-py raises them)."""
        packed = pack(args)
        reused = bool(self._idle)
        conn = self._idle.pop() if reused else await self._checkout()
        try:
            reply = await self._send(conn, packed)
        except RedisConnectionError:
            if not reused:
                raise
            conn = await self._checkout()  # the idle one had been closed by the server
            reply = await self._send(conn, packed)
        await self._put_back(conn)
        return reply

    async def _checkout(self) -> AbstractConnection:
        # redis-py's deprecation decorator hides the method's annotations from mypy.
        conn: AbstractConnection = await self._pool.get_connection()  # type: ignore[no-untyped-call]
        return conn

    async def _send(self, conn: AbstractConnection, packed: bytes) -> Any:
        try:
            if not conn.is_connected:
                await conn.connect()  # type: ignore[no-untyped-call]  # redis-py leaves it bare
            writer = conn._writer
            if writer is None:  # pragma: no cover - a connection type without a stream
                raise RedisConnectionError("redis connection has no stream")
            try:
                writer.write(packed)
                if writer.transport.get_write_buffer_size():  # the socket did not take it all
                    async with asyncio.timeout(self._write_timeout_s):
                        await writer.drain()
            except TimeoutError as exc:
                raise RedisTimeoutError("timeout writing to redis") from exc
            except OSError as exc:
                raise RedisConnectionError(f"error while writing to redis: {exc}") from exc
            return await conn.read_response()
        except ResponseError:
            await self._put_back(conn)  # a complete error reply: the connection is fine
            raise
        except BaseException:
            with contextlib.suppress(Exception):
                await conn.disconnect()
                await self._pool.release(conn)
            raise

    async def _put_back(self, conn: AbstractConnection) -> None:
        if len(self._idle) < self._max_idle and conn.is_connected:
            self._idle.append(conn)
        else:
            await self._pool.release(conn)

    async def release_idle(self) -> None:
        """Hand every idle connection back to the pool (the caller closes; the client lives on)."""
        idle, self._idle = self._idle, []
        for conn in idle:
            await self._pool.release(conn)

    def __repr__(self) -> str:
        return f"<Wire idle={len(self._idle)} of {self._pool!r}>"


def pack(args: tuple[str | int | bytes, ...]) -> bytes:
    """One command in RESP: an array of bulk strings (bytes unchanged, the rest as text)."""
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        data = arg if isinstance(arg, bytes) else str(arg).encode()
        parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(parts)


def write_timeout(client: Redis) -> float:
    """The client's socket timeout (5 s when it has none), for :class:`Wire`'s writes."""
    timeout = client.connection_pool.connection_kwargs.get("socket_timeout")
    return float(timeout) if timeout else 5.0
