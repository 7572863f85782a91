"""The bus: publish, subscribe, handlers, and the way in from a URL.

::

    bus = await keel.events.connect("redis://localhost:6379")     # or Bus(store)
    event_id = await bus.publish("orders.created", {"id": 1}, key="order-1")

    @bus.handler("orders.created", group="billing")
    async def bill(event: Event) -> None: ...      # return = ack, raise = retry
    await bus.run()
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from types import TracebackType
from typing import Any, Literal, Self

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import Span
from prometheus_client import Counter

from keel.clock import SYSTEM_CLOCK, Clock
from keel.errors import ValidationError
from keel.events import _admin
from keel.events._engine import Engine, Entry
from keel.events._event import Event
from keel.events._metrics import EventsMetrics, events_metrics
from keel.events._model import (
    DEFAULT_MAX_EVENT_BYTES,
    EventRecord,
    check_partitions,
    check_topic,
    encode_record,
    event_id,
    partition_for,
)
from keel.events._outbox import outbox_put
from keel.events._settings import Retention, SubscribeSettings
from keel.events._spans import create_span, process_span, producing, published
from keel.events._store_engine import StoreEngine
from keel.events._subscribe import Subscription
from keel.observe.spans import end_span, tracing_on
from keel.observe.tracing import inject
from keel.resilience import RetrySettings
from keel.store import Put, Store

__all__ = ["Bus", "Handler", "Message"]

log = logging.getLogger("keel.events")

Handler = Callable[[Event], Awaitable[None]]
"""A handler: returning acks the event, raising retries it."""

DEFAULT_PARTITIONS = 4
_MAX_BATCH = 100


@dataclass(frozen=True, slots=True)
class Message:
    """One event to publish with :meth:`Bus.publish_many`."""

    payload: Any
    key: str | None = None
    headers: Mapping[str, str] | None = None


class Bus:
    """Publish and consume events on one engine.

    Args:
        engine_or_store: an :class:`~keel.events.Engine`, or a keel ``Store``
            (the store engine; the bus does not close the store).
        partitions: partitions of topics this bus creates (fixed per topic).
        max_event_bytes: limit on one encoded event.
        retention: how much of each partition to keep.
        metrics: where to count (default: the process-wide series).
        clock: time source.
    """

    def __init__(
        self,
        engine_or_store: Engine | Store,
        *,
        partitions: int = DEFAULT_PARTITIONS,
        max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES,
        retention: Retention | None = None,
        metrics: EventsMetrics | None = None,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        check_partitions(partitions)
        if not 1 <= max_event_bytes <= 64 * 1024 * 1024:
            raise ValidationError(f"max_event_bytes must be 1..64 MiB, got {max_event_bytes!r}")
        self.store: Store | None = engine_or_store if isinstance(engine_or_store, Store) else None
        self.engine: Engine = (
            StoreEngine(engine_or_store, clock=clock)
            if isinstance(engine_or_store, Store)
            else engine_or_store
        )
        self.partitions = partitions
        self.max_event_bytes = max_event_bytes
        self.retention = retention or Retention()
        self.metrics = metrics or events_metrics()
        self.clock = clock
        self._owns_engine = isinstance(engine_or_store, Store)
        self._owned_store: Store | None = None
        self._known: dict[str, int] = {}
        self._round_robin = itertools.count()
        self._published_by_topic: dict[str, Counter] = {}
        self._last_trim: dict[tuple[str, int], float] = {}
        self._handlers: list[tuple[Subscription, Handler]] = []

    # topics

    async def ensure_topic(self, topic: str, partitions: int | None = None) -> int:
        """Create ``topic`` if missing; return its partition count."""
        check_topic(topic)
        known = self._known.get(topic)
        if known is None:
            known = await self.engine.partitions(topic)
            if known is None:
                known = await self.engine.create_topic(topic, partitions or self.partitions)
            self._known[topic] = known
        return known

    async def topics(self) -> list[str]:
        """Every topic's name, sorted."""
        return await self.engine.topics()

    # publishing

    def _encode(self, topic: str, message: Message, span: Span | None = None) -> bytes:
        headers = dict(message.headers or {})
        if "traceparent" not in headers:  # the publish span's context, else the caller's
            inject(headers, None if span is None else trace.set_span_in_context(span))
        return encode_record(
            topic,
            message.payload,
            key=message.key,
            headers=headers,
            published_at=self.clock.time(),
            max_bytes=self.max_event_bytes,
        )

    def _partition(self, message: Message, partitions: int) -> int:
        if message.key is not None:
            return partition_for(message.key, partitions)
        return next(self._round_robin) % partitions

    async def publish(
        self,
        topic: str,
        payload: Any,
        *,
        key: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> str:
        """Publish one event; return its id (``<partition>:<engine id>``).

        Args:
            payload: JSON-serializable data, or ``bytes``.
            key: events with the same key go to one partition and are handled
                in order within each group.
            headers: string headers (the current trace context is added).

        Raises:
            ValidationError: bad topic, key, headers or payload; nothing published.
            ValueTooLargeError: the encoded event is over ``max_event_bytes``.
        """
        message = Message(payload, key, headers)
        if not tracing_on():
            return await self._publish_one(topic, message, None)
        with producing(topic, 1) as span:
            return await self._publish_one(topic, message, span)

    async def _publish_one(self, topic: str, message: Message, span: Span | None) -> str:
        data = self._encode(topic, message, span)
        partitions = self._known.get(topic) or await self.ensure_topic(topic)
        partition = self._partition(message, partitions)
        (entry_id,) = await self.engine.append(topic, partition, [data])
        published(span, [event_id(partition, entry_id)])
        await self._after_append(topic, partition)
        self._published(topic).inc()
        return event_id(partition, entry_id)

    async def publish_many(self, topic: str, messages: Iterable[Message]) -> list[str]:
        """Publish several events; return their ids in order (each partition's batch is atomic)."""
        messages = list(messages)
        if not tracing_on():
            return await self._publish_many(topic, messages, None)
        with producing(topic, len(messages)) as span:
            ids = await self._publish_many(topic, messages, span)
            published(span, ids)
        return ids

    async def _publish_many(
        self, topic: str, messages: list[Message], span: Span | None
    ) -> list[str]:
        encoded = [(message, self._encode(topic, message, span)) for message in messages]
        partitions = await self.ensure_topic(topic)  # after validation: bad input creates nothing
        batches: dict[int, list[tuple[int, bytes]]] = {}
        for i, (message, data) in enumerate(encoded):
            batches.setdefault(self._partition(message, partitions), []).append((i, data))
        ids: dict[int, str] = {}
        for partition, batch in batches.items():
            for start in range(0, len(batch), _MAX_BATCH):
                chunk = batch[start : start + _MAX_BATCH]
                got = await self.engine.append(topic, partition, [d for _, d in chunk])
                for (i, _), entry_id in zip(chunk, got, strict=True):
                    ids[i] = event_id(partition, entry_id)
            await self._after_append(topic, partition)
        self._published(topic).inc(len(ids))
        return [ids[i] for i in range(len(ids))]

    def _published(self, topic: str) -> Counter:
        child = self._published_by_topic.get(topic)
        if child is None:
            child = self._published_by_topic[topic] = self.metrics.published.labels(topic)
        return child

    async def _after_append(self, topic: str, partition: int) -> None:
        """Enforce retention every ``retention.every_s`` per partition, also without consumers."""
        slot = (topic, partition)
        now = self.clock.monotonic()
        last = self._last_trim.setdefault(slot, now)
        if now - last >= self.retention.every_s:
            self._last_trim[slot] = now
            with contextlib.suppress(Exception):  # retention is best effort; the owner trims too
                await _admin.trim_partition(self, topic, partition)

    # dead letters

    def dead_letter_for(
        self, topic: str, group: str
    ) -> Callable[[int, Entry, EventRecord | None, str, int], Awaitable[None]]:
        """The function a subscription uses to move a failed event to ``<topic>.dead``."""

        async def dead_letter(
            partition: int, entry: Entry, record: EventRecord | None, error: str, attempts: int
        ) -> None:
            headers = {
                "keel-dead-error": error,
                "keel-dead-attempts": str(attempts),
                "keel-dead-from": event_id(partition, entry.id),
                "keel-dead-group": group,
            }
            if record is None:
                message = Message(entry.data[: self.max_event_bytes // 2], None, headers)
            else:
                value = record.value()
                message = Message(value, record.key, {**record.headers, **headers})
            await self.publish_many(f"{topic}.dead", [message])

        return dead_letter

    # consuming

    def subscribe(
        self,
        topic: str,
        *,
        group: str,
        concurrency: int = 16,
        max_attempts: int = 5,
        retry: RetrySettings | None = None,
        start: Literal["new", "earliest"] = "new",
        name: str | None = None,
        **options: Any,
    ) -> Subscription:
        """A consumer of ``topic`` in ``group``: use with ``async with`` (:class:`Subscription`).

        Args:
            concurrency: events handed out and not yet acked, at most.
            max_attempts: attempts before an event goes to ``<topic>.dead``.
            retry: backoff between attempts (default 0.1 s doubling to 30 s, full jitter).
            start: where a new group starts: ``"new"`` or ``"earliest"``.
            name: this consumer's name (default: unique per process and call).
            options: more :class:`SubscribeSettings` fields (``member_ttl_s``,
                ``block_s``, ``batch``, ``linger_s``).
        """
        settings = SubscribeSettings(
            concurrency=concurrency,
            max_attempts=max_attempts,
            start=start,
            **options,
        )
        if retry is not None:
            settings = replace(settings, retry=retry)
        return Subscription(self, topic, group, settings, name=name)

    def handler(self, topic: str, *, group: str, **options: Any) -> Callable[[Handler], Handler]:
        """Register a handler for :meth:`run`: return acks, raise retries (options as subscribe)."""
        sub = self.subscribe(topic, group=group, **options)

        def register(fn: Handler) -> Handler:
            self._handlers.append((sub, fn))
            return fn

        return register

    async def run(self) -> None:
        """Run every registered handler until cancelled."""
        if not self._handlers:
            raise ValidationError("no handlers registered: decorate one with @bus.handler(...)")
        async with contextlib.AsyncExitStack() as stack:
            subs = [(await stack.enter_async_context(sub), fn) for sub, fn in self._handlers]
            async with asyncio.TaskGroup() as tasks:
                for sub, fn in subs:
                    for _ in range(sub.settings.concurrency):
                        tasks.create_task(_handle_forever(sub, fn))

    # operations (see keel.events._admin)

    async def replay(
        self, topic: str, group: str, *, from_id: str | None = None, from_time: float | None = None
    ) -> None:
        """Move ``group`` to re-deliver from an event id or a Unix time (see ``docs/events.md``)."""
        await _admin.replay(self, topic, group, from_id=from_id, from_time=from_time)

    async def lag(self, topic: str, group: str | None = None) -> list[_admin.GroupStats]:
        """Pending and undelivered counts per group of ``topic``."""
        return await _admin.lag(self, topic, group)

    async def read(self, topic: str, *, limit: int = 100) -> list[_admin.StoredEvent]:
        """The newest ``limit`` retained events of ``topic``, oldest first (no group state)."""
        return await _admin.read(self, topic, limit=limit)

    async def trim(self, topic: str) -> int:
        """Apply retention to every partition of ``topic`` now; return how many events went."""
        partitions = await self.ensure_topic(topic)
        return sum([await _admin.trim_partition(self, topic, p) for p in range(partitions)])

    def outbox_put(
        self,
        topic: str,
        payload: Any,
        *,
        key: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Put:
        """A ``Put`` that writes the event to the outbox in the caller's own store txn."""
        carried = dict(headers or {})
        if "traceparent" not in carried:  # the record's creation context, through the relay
            span = create_span(topic)
            inject(carried, None if span is None else trace.set_span_in_context(span))
            end_span(span)
        return outbox_put(
            topic,
            payload,
            key=key,
            headers=carried,
            max_bytes=self.max_event_bytes,
            now=self.clock.time(),
        )

    # lifetime

    async def aclose(self) -> None:
        """Close the engine if the bus made it (and the store if ``connect`` opened it)."""
        if self._owns_engine:
            await self.engine.aclose()
        if self._owned_store is not None:
            store, self._owned_store = self._owned_store, None
            await store.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        return f"Bus({self.engine!r}, partitions={self.partitions})"


async def _handle_forever(sub: Subscription, fn: Handler) -> None:
    while True:
        event = await sub.next()
        span = process_span(event, sub.group)
        # tracing off here: the handler's calls still carry the publisher's context on
        token = otel_context.attach(
            event.trace_context() if span is None else trace.set_span_in_context(span)
        )
        outcome: BaseException | None = None
        try:
            await fn(event)
        except Exception as exc:  # raise = retry: the handler's failure is the event's
            outcome = exc
        except BaseException as exc:
            end_span(span, exc)
            raise
        finally:
            otel_context.detach(token)
        end_span(span, outcome)
        try:
            await (event.ack() if outcome is None else event.nack(outcome))
        except Exception as exc:  # the event stays pending; a handler loop never dies of it
            log.warning("events %s: settling %s failed: %s", event.topic, event.id, exc)
