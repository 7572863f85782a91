"""Live updates: one store watch per console process, fanned out to browsers over SSE.

:class:`Hub` runs a single watch on the whole root (``watch("", prefix=True)``)
and turns each change into a *topic*: the first segment of its key
(``services``, ``overrides``, ``config``, ``jobs``, ``locks``...), or for the
console's own keys ``audit`` and ``users`` (sessions are never announced).
Pages are server-rendered; a browser learns only "topic X changed at
revision R" and re-fetches the parts of its page that show X
(``static/console.js``), so the stream carries no data and no secret.

Memory does not grow with the change rate: each subscriber holds a *set* of
pending topics (at most one entry per topic, the newest revision), not a
queue of events, so a burst of 10,000 changes to services becomes one
notification. A subscriber is flushed at most every ``min_interval_s``. A
client that does not read for ``send_timeout_s`` is dropped (its browser's
EventSource reconnects by itself); so a stuck client never holds memory or
the watcher back.

The watch survives store trouble: on an outage it retries with backoff and
resumes from the last revision seen; after compaction it resumes from now
and announces every topic once (pages refresh).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from keel.console._metrics import ConsoleMetrics
from keel.errors import CompactedError, KeelError
from keel.store import Store

__all__ = ["ALL", "Hub", "Subscriber", "live_endpoint", "topic_of"]

log = logging.getLogger("keel.console")

ALL = "*"
"""The topic a subscriber gets after a gap (compaction): refresh everything."""

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


def topic_of(key: str) -> str | None:
    """The topic a change of ``key`` belongs to, or None for keys never announced."""
    head, _, rest = key.partition("/")
    if head != "console":
        return head or None
    sub = rest.partition("/")[0]
    return sub if sub in ("audit", "users") else None


class Subscriber:
    """One open stream: the topics it wants and the ones changed since its last flush."""

    def __init__(self, topics: frozenset[str] | None) -> None:
        self.topics = topics
        self.pending: dict[str, int] = {}
        self.wake = asyncio.Event()
        self.closed = False

    def notify(self, topic: str, revision: int) -> None:
        """Note a change (coalesced with earlier ones of the same topic)."""
        if topic != ALL and self.topics is not None and topic not in self.topics:
            return
        self.pending[topic] = revision
        self.wake.set()

    def take(self) -> dict[str, int]:
        """The pending changes, cleared."""
        pending, self.pending = self.pending, {}
        self.wake.clear()
        return pending

    def __repr__(self) -> str:
        return f"Subscriber(topics={sorted(self.topics or ['*'])}, pending={len(self.pending)})"


class Hub:
    """The console's one store watcher and its subscribers.

    Args:
        store: the store to watch.
        metrics: the console's series.
        min_interval_s: at most one flush per subscriber per this interval.
        send_timeout_s: a client not reading for this long is dropped.
        heartbeat_s: a comment line this often keeps proxies from closing idle streams.
    """

    def __init__(
        self,
        store: Store,
        *,
        metrics: ConsoleMetrics,
        min_interval_s: float = 0.1,
        send_timeout_s: float = 5.0,
        heartbeat_s: float = 15.0,
    ) -> None:
        self.store = store
        self.metrics = metrics
        self.min_interval_s = min_interval_s
        self.send_timeout_s = send_timeout_s
        self.heartbeat_s = heartbeat_s
        self.revision = 0
        self._resync = False
        self._subscribers: set[Subscriber] = set()
        self.running = asyncio.Event()

    def subscribe(self, topics: frozenset[str] | None = None) -> Subscriber:
        """A new subscriber for ``topics`` (None: every topic)."""
        subscriber = Subscriber(topics)
        self._subscribers.add(subscriber)
        self.metrics.live_clients.set(len(self._subscribers))
        return subscriber

    def unsubscribe(self, subscriber: Subscriber) -> None:
        """Forget ``subscriber``."""
        subscriber.closed = True
        subscriber.wake.set()
        self._subscribers.discard(subscriber)
        self.metrics.live_clients.set(len(self._subscribers))

    def publish(self, topic: str, revision: int) -> None:
        """Tell every interested subscriber that ``topic`` changed at ``revision``."""
        for subscriber in self._subscribers:
            subscriber.notify(topic, revision)

    async def run(self) -> None:
        """Watch the store until cancelled (the console's lifespan runs this)."""
        delay = 0.1
        while True:
            try:
                await self._watch()
            except CompactedError:
                self.revision = 0  # resume from now; pages refresh once it is read (below)
                self._resync = True
            except KeelError as exc:
                log.warning("console live watch interrupted (%s); retrying", exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
                continue
            except Exception:  # a bug must not end live updates for good: log, back off, resume
                log.exception("console live watch failed; retrying")
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
                continue
            delay = 0.1

    async def _watch(self) -> None:
        self.running.clear()
        if not self.revision:
            _, self.revision = await self.store.range("console/users/", limit=1)
        if self._resync:
            # changes between the compacted revision and now are lost: every page
            # re-reads, at a revision no older than the one the watch resumes after
            self._resync = False
            self.publish(ALL, self.revision)
        watch = self.store.watch("", prefix=True, start_revision=self.revision + 1)
        async with watch:
            self.running.set()
            async for event in watch:
                self.revision = event.revision
                self.metrics.live_changes.inc()
                topic = topic_of(event.kv.key)
                if topic is not None:
                    self.publish(topic, event.revision)

    def close(self) -> None:
        """End every open stream (on shutdown)."""
        for subscriber in list(self._subscribers):
            self.unsubscribe(subscriber)

    def __repr__(self) -> str:
        return f"Hub(revision={self.revision}, subscribers={len(self._subscribers)})"


def _topics(query: str) -> frozenset[str] | None:
    names = [t for t in query.replace(" ", ",").split(",") if t]
    if ALL in names:
        return None
    return frozenset(t[:64] for t in names[:32]) if names else None


async def live_endpoint(hub: Hub, scope: Scope, receive: Receive, send: Send) -> None:
    """The ``/live?topics=a,b`` server-sent event stream (``event: change``)."""
    from urllib.parse import parse_qs

    query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
    subscriber = hub.subscribe(_topics(",".join(query.get("topics", []))))
    headers = [
        (b"content-type", b"text/event-stream; charset=utf-8"),
        (b"cache-control", b"no-store"),
        (b"x-accel-buffering", b"no"),
    ]
    pump = asyncio.ensure_future(_pump(hub, subscriber, send, headers))
    gone = asyncio.ensure_future(_disconnected(receive))
    try:
        await asyncio.wait({pump, gone}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        hub.unsubscribe(subscriber)
        for task in (pump, gone):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task


async def _disconnected(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


async def _pump(hub: Hub, subscriber: Subscriber, send: Send, headers: list[Any]) -> None:
    async def emit(text: str) -> None:
        try:
            async with asyncio.timeout(hub.send_timeout_s):
                await send({"type": "http.response.body", "body": text.encode(), "more_body": True})
        except TimeoutError:
            hub.metrics.live_dropped.inc()
            raise

    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await emit(f"retry: 1000\nevent: hello\ndata: {json.dumps({'revision': hub.revision})}\n\n")
    while not subscriber.closed:
        try:
            async with asyncio.timeout(hub.heartbeat_s):
                await subscriber.wake.wait()
        except TimeoutError:
            await emit(": ping\n\n")
            continue
        if subscriber.closed:
            break
        changes = subscriber.take()
        body = "".join(
            f"event: change\ndata: {json.dumps({'topic': t, 'revision': r})}\n\n"
            for t, r in sorted(changes.items())
        )
        await emit(body)
        hub.metrics.live_sent.inc(len(changes))
        await asyncio.sleep(hub.min_interval_s)
    with contextlib.suppress(Exception):
        await send({"type": "http.response.body", "body": b"", "more_body": False})
