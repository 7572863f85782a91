"""Per-key serial dispatch of one subscription: ready queue, retries, acks, dead letters.

Events read from the owned partitions wait in one queue per key; only the
head of a key's queue is ever handed out, so events of one key are handled
one after another and in order. ``concurrency`` bounds the events handed out
and not yet settled; a failing event keeps its key blocked while it waits for
its retry (other keys go on). Events without a key have a queue each.

Acks are deferred and batched per partition (``_acks.py``): ``ack()`` costs
no I/O. The partition readers read only once a fair share of the buffer is
free (:meth:`Dispatcher.wait_room`), so a busy subscription reads in batches
rather than one entry per call. Waiters are woken only when someone waits and
only for what they wait for: the hot path (feed, next, ack) allocates the
event and little else.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
import random
from collections import deque
from collections.abc import Awaitable, Callable, Sequence

from keel._records import Rejected, decode, report
from keel.clock import Clock
from keel.events._acks import Acks
from keel.events._engine import Engine, Entry
from keel.events._event import Event
from keel.events._metrics import EventsMetrics
from keel.events._model import EventRecord, decode_record
from keel.events._settings import SubscribeSettings
from keel.resilience import backoff_delay

__all__ = ["DeadLetter", "Dispatcher"]

log = logging.getLogger("keel.events")

DeadLetter = Callable[[int, Entry, EventRecord | None, str, int], Awaitable[None]]
"""``(partition, entry, record or None if malformed, error, attempts)``: publish a dead letter."""


def _decode(data: bytes) -> tuple[EventRecord, object]:
    record = decode_record(data)
    return record, record.value()


class Dispatcher:
    """The queues of one subscription (one topic, one group, one consumer)."""

    def __init__(
        self,
        engine: Engine,
        topic: str,
        group: str,
        settings: SubscribeSettings,
        *,
        dead_letter: DeadLetter,
        metrics: EventsMetrics,
        clock: Clock,
    ) -> None:
        self._engine = engine
        self._topic = topic
        self._group = group
        self._settings = settings
        self._dead_letter = dead_letter
        self._metrics = metrics
        self._clock = clock
        self._rng = random.Random()
        self._queues: dict[tuple[int, str], deque[Event]] = {}
        self._known: dict[int, set[str]] = {}  # entry ids held, per partition
        self._ready: deque[Event] = deque()
        self._timers: list[tuple[float, int, Event]] = []
        self._out: dict[int, int] = {}
        self._out_total = 0
        self._limit = settings.concurrency
        self._hand = asyncio.Condition()  # next() waiters: an event is ready and may go out
        self._hand_waiters = 0
        self._room = asyncio.Event()  # readers: room reached the low-water mark
        self.acks = Acks(engine, topic, group, clock)
        self._seq = 0
        self._max_buffer = max(2 * settings.batch, 4 * settings.concurrency)
        self._low_water = max(1, settings.batch // 2)
        labels = (topic, group)
        self._delivered = metrics.delivered.labels(*labels)
        self._acked = metrics.acked.labels(*labels)
        self._retried = metrics.retried.labels(*labels)
        self._dead = metrics.dead_lettered.labels(*labels)
        self._handler_seconds = metrics.handler_seconds.labels(*labels)

    # intake

    def room(self) -> int:
        """How many more events may be read now."""
        return self._max_buffer - sum(len(ids) for ids in self._known.values())

    def _may_read(self) -> bool:
        room = self.room()
        return room > 0 and (room >= self._low_water or not self._ready)

    async def wait_room(self, timeout_s: float) -> bool:
        """Wait up to ``timeout_s`` until a read is worth it; return whether it is.

        A read is worth it once :meth:`room` reaches the low-water mark (half
        a batch), or when there is some room and nothing is ready to hand out.
        """
        try:
            async with asyncio.timeout(timeout_s):
                while True:
                    self._room.clear()
                    if self._may_read():
                        return True
                    await self._room.wait()
        except TimeoutError:
            return self._may_read()

    def _room_changed(self) -> None:
        if self._may_read():
            self._room.set()

    def held(self, partition: int) -> int:
        """How many events of ``partition`` this consumer holds (queued, out or waiting)."""
        return len(self._known.get(partition, ()))

    def adopt(self, partition: int) -> None:
        """Start holding events of ``partition`` (it is owned now)."""
        self._known.setdefault(partition, set())

    async def feed(self, partition: int, entries: Sequence[Entry]) -> None:
        """Queue new entries of an owned partition; dead-letter malformed ones."""
        known = self._known.get(partition)
        if known is None:
            return
        for entry in entries:
            if entry.id in known:
                continue  # re-claimed while still held here
            got = decode("events", f"{self._topic}/{partition}/{entry.id}", entry.data, _decode)
            if isinstance(got, Rejected):
                report(got)
                await self._dead_letter(partition, entry, None, got.reason, entry.deliveries)
                self.acks.add(partition, entry.id)
                continue
            record, payload = got
            if entry.deliveries > self._settings.max_attempts:  # its consumers kept dying on it
                reason = f"delivered {entry.deliveries} times without an ack or a nack"
                await self._dead_letter(partition, entry, record, reason, entry.deliveries)
                self.acks.add(partition, entry.id)
                self._dead.inc()
                continue
            event = Event(
                partition=partition,
                entry_id=entry.id,
                topic=self._topic,
                key=record.key,
                payload=payload,
                headers=dict(record.headers),
                published_at=record.published_at,
                attempt=entry.deliveries,
                settle=self.settle,
            )
            event.record = record
            known.add(entry.id)
            queue = self._queues.setdefault(_qkey(event), deque())
            queue.append(event)
            if len(queue) == 1:
                self._make_ready(event)
        await self._wake()

    def _make_ready(self, event: Event) -> None:
        event.state = "ready"
        self._ready.append(event)

    # hand-out

    def _can_hand(self) -> bool:
        return bool(self._ready) and self._out_total < self._limit

    async def next(self) -> Event:
        """Wait for the next event a consumer may handle."""
        if not self._can_hand():
            async with self._hand:
                self._hand_waiters += 1
                try:
                    await self._hand.wait_for(self._can_hand)
                except asyncio.CancelledError:
                    if self._can_hand():  # a wake-up this waiter took goes to another
                        self._hand.notify(1)
                    raise
                finally:
                    self._hand_waiters -= 1
        event = self._ready.popleft()
        event.state = "out"
        event.handed_at = self._clock.monotonic()
        self._out[event.partition] = self._out.get(event.partition, 0) + 1
        self._out_total += 1
        self._delivered.inc()
        if self._ready and self._hand_waiters:  # pass the turn on (also after a lost wake-up)
            await self._wake()
        return event

    async def _wake(self) -> None:
        """Tell waiting consumers and readers that the queues changed."""
        if self._hand_waiters and self._can_hand():
            async with self._hand:
                self._hand.notify(min(len(self._ready), self._limit - self._out_total))
        self._room_changed()

    # outcome

    async def settle(self, event: Event, error: BaseException | str | None) -> None:
        """Ack, schedule a retry, or dead-letter ``event`` (``Event.ack``/``nack`` call this)."""
        if event.settled or event.state != "out":
            return
        self._out[event.partition] -= 1
        self._out_total -= 1
        self._handler_seconds.observe(self._clock.monotonic() - event.handed_at)
        if error is None:
            event.settled = True
            self.acks.add(event.partition, event.entry_id)
            self._acked.inc()
        elif event.entry_id not in self._known.get(event.partition, ()):
            event.settled = True  # its partition moved on: the new owner re-delivers it
        elif event.attempt < self._settings.max_attempts:
            self._retried.inc()
            delay = backoff_delay(self._settings.retry, event.attempt - 1, 0.0, self._rng)
            event.attempt += 1
            self._wait(event, delay)
        else:
            entry = Entry(event.entry_id, b"", event.attempt)
            try:
                reason = _describe(error)
                await self._dead_letter(event.partition, entry, event.record, reason, event.attempt)
            except Exception as exc:  # try the event again later rather than lose it
                log.warning("events %s: dead-lettering %s failed: %s", self._topic, event.id, exc)
                self._wait(event, self._settings.retry.max_delay_s)
            else:
                event.settled = True
                self.acks.add(event.partition, event.entry_id)
                self._dead.inc()
        if event.settled:
            self._advance(event)
        await self._wake()

    def _wait(self, event: Event, delay_s: float) -> None:
        event.state = "waiting"
        self._seq += 1
        heapq.heappush(self._timers, (self._clock.monotonic() + delay_s, self._seq, event))

    def _advance(self, event: Event) -> None:
        known = self._known.get(event.partition)
        if known is None or event.entry_id not in known:
            return
        known.discard(event.entry_id)
        queue = self._queues.get(_qkey(event))
        if queue and queue[0] is event:
            queue.popleft()
            if queue:
                self._make_ready(queue[0])
            else:
                del self._queues[_qkey(event)]

    async def run_timers(self) -> None:
        """Move events whose retry delay has passed back to the ready queue (runs forever)."""
        while True:
            now = self._clock.monotonic()
            while self._timers and self._timers[0][0] <= now:
                _, _, event = heapq.heappop(self._timers)
                if event.state == "waiting" and event.entry_id in self._known.get(
                    event.partition, ()
                ):
                    self._make_ready(event)
                    await self._wake()
            wait = self._timers[0][0] - now if self._timers else 0.05
            await self._clock.sleep(min(0.05, max(0.0, wait)))

    # partitions leaving

    async def drop(self, partition: int, *, timeout_s: float) -> None:
        """Forget the queued events of ``partition``, then wait for its handed-out ones."""
        known = self._known.pop(partition, set())
        for qkey in [k for k in self._queues if k[0] == partition]:
            queue = self._queues.pop(qkey)
            for event in queue:
                if event.state != "out":
                    event.settled = True
        self._ready = deque(e for e in self._ready if e.partition != partition)
        known.clear()
        await self._wake()
        if timeout_s <= 0:
            return
        try:
            async with asyncio.timeout(timeout_s):
                while self._out.get(partition, 0) > 0:  # settles are not signalled
                    await self._clock.sleep(0.01)
        except TimeoutError:
            log.warning(
                "events %s/%s: partition %d handed over with %d events still being handled",
                self._topic,
                self._group,
                partition,
                self._out.get(partition, 0),
            )

    def statistics(self) -> dict[str, int]:
        """Held, ready, handed-out and retry-waiting counts."""
        return {
            "held": sum(len(ids) for ids in self._known.values()),
            "ready": len(self._ready),
            "out": self._out_total,
            "waiting": len(self._timers),
        }


def _qkey(event: Event) -> tuple[int, str]:
    return (
        (event.partition, event.key)
        if event.key is not None
        else (event.partition, "\0" + event.entry_id)
    )


def _describe(error: BaseException | str) -> str:
    text = error if isinstance(error, str) else f"{type(error).__name__}: {error}"
    return text[:2000]
