"""The counter app and the batcher that lets concurrent requests share Redis round trips."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator
from typing import Any

import redis.asyncio as aioredis
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route, Router

__all__ = ["Batcher", "make_app"]

REDIS_URL_ENV = "COUNTER_REDIS_URL"


class Batcher:
    """Commands issued concurrently go to Redis together, as one pipeline per loop turn.

    ``await batcher.execute("INCR", "counter")`` queues the command; the first
    command queued in a turn of the event loop schedules a flush after that
    turn, so every request the loop handled in the meantime joins the same
    pipeline: one write, one read, one connection from the pool, instead of
    one round trip and one connection per request. It is the automatic
    pipelining of ioredis and the multiplexed connection of redis-rs and
    StackExchange.Redis, done at the application's edge. Not a transaction:
    each command gets its own reply or its own error.
    """

    def __init__(self, client: aioredis.Redis) -> None:
        self.client = client
        self._queued: list[tuple[tuple[Any, ...], asyncio.Future[Any]]] = []
        self._flushes: set[asyncio.Task[None]] = set()

    async def execute(self, *command: Any) -> Any:
        """Run one command in the next pipeline; its reply, or raise its error."""
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._queued.append((command, future))
        if len(self._queued) == 1:
            flush = asyncio.ensure_future(self._flush())
            self._flushes.add(flush)
            flush.add_done_callback(self._flushes.discard)
        return await future

    async def _flush(self) -> None:
        await asyncio.sleep(0)  # let the rest of this loop turn's requests join
        batch, self._queued = self._queued, []
        pipe = self.client.pipeline(transaction=False)
        for command, _ in batch:
            pipe.execute_command(*command)
        try:
            replies = await pipe.execute(raise_on_error=False)
        except Exception as exc:  # the connection failed: every command in it failed
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        for (_, future), reply in zip(batch, replies, strict=True):
            if future.done():  # its request was cancelled
                continue
            if isinstance(reply, Exception):
                future.set_exception(reply)
            else:
                future.set_result(reply)

    async def aclose(self) -> None:
        """Wait for the pipelines in flight."""
        if self._flushes:
            await asyncio.wait(self._flushes)

    def __repr__(self) -> str:
        return f"<Batcher queued={len(self._queued)} in_flight={len(self._flushes)}>"


def make_app(*, batched: bool = True, redis_url: str | None = None) -> Router:
    """The counter app; ``redis_url`` defaults to ``$COUNTER_REDIS_URL`` or localhost.

    A Starlette ``Router`` rather than a ``Starlette`` application: the
    latter's error and exception middleware cost ~10% of a request here and
    add nothing a one-route service needs (uvicorn answers 500 on its own).
    """
    url = redis_url or os.environ.get(REDIS_URL_ENV, "redis://127.0.0.1:6379")
    state: dict[str, Any] = {}

    @contextlib.asynccontextmanager
    async def lifespan(app: object) -> AsyncIterator[None]:
        client = aioredis.from_url(url, max_connections=128)
        state["redis"], state["batcher"] = client, Batcher(client)
        try:
            yield
        finally:
            await state["batcher"].aclose()
            await client.aclose()

    async def incr(request: Request) -> PlainTextResponse:
        if batched:
            value = await state["batcher"].execute("INCR", "counter")
        else:
            value = await state["redis"].incr("counter")
        return PlainTextResponse(str(value))

    return Router(routes=[Route("/incr", incr)], lifespan=lifespan)
