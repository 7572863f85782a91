"""A subscription: one consumer of a group, as an async context manager and iterator.

::

    async with bus.subscribe("orders.created", group="billing", concurrency=16) as sub:
        async for event in sub:
            ...
            await event.ack()          # or: await event.nack(error)

Every event handed out must be acked or nacked: at most ``concurrency`` are
out at once, and the next event of a key waits for the previous one.
``ack()`` queues the ack: it reaches the engine within about a millisecond,
at the partition's next read, or when the subscription closes (a crash before
that means the event is delivered again: still at least once).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import uuid
from types import TracebackType
from typing import TYPE_CHECKING, Self

from keel.errors import ValidationError
from keel.events._dispatch import Dispatcher
from keel.events._engine import END, START
from keel.events._event import Event
from keel.events._member import Member
from keel.events._model import check_group, check_topic
from keel.events._settings import SubscribeSettings

if TYPE_CHECKING:
    from keel.events._bus import Bus

__all__ = ["Subscription"]


class Subscription:
    """One consumer in ``group`` on ``topic`` (see the module docstring).

    Args:
        bus: the bus.
        topic: the topic (created with the bus's partition count if missing).
        group: the consumer group; every group gets every event.
        settings: concurrency, retries, start position, member TTL.
        name: this consumer's name in the group (default: host, pid and a random part).
    """

    def __init__(
        self,
        bus: Bus,
        topic: str,
        group: str,
        settings: SubscribeSettings,
        *,
        name: str | None = None,
    ) -> None:
        self._bus = bus
        self.topic = check_topic(topic)
        self.group = check_group(group)
        self.settings = settings
        self.name = check_group(
            name or f"{os.uname().nodename[:40]}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        )
        self._dispatcher: Dispatcher | None = None
        self._member: Member | None = None
        self._tasks: list[asyncio.Task[None]] = []

    async def __aenter__(self) -> Self:
        bus = self._bus
        partitions = await bus.ensure_topic(self.topic)
        start = END if self.settings.start == "new" else START
        await bus.engine.create_group(self.topic, self.group, start)
        self._dispatcher = Dispatcher(
            bus.engine,
            self.topic,
            self.group,
            self.settings,
            dead_letter=bus.dead_letter_for(self.topic, self.group),
            metrics=bus.metrics,
            clock=bus.clock,
        )
        self._member = Member(
            bus.engine,
            self.topic,
            self.group,
            self.name,
            partitions,
            self.settings,
            self._dispatcher,
            retention=bus.retention,
            metrics=bus.metrics,
            clock=bus.clock,
        )
        self._tasks = [
            asyncio.create_task(self._member.run(), name=f"keel-events-member-{self.name}"),
            asyncio.create_task(self._dispatcher.run_timers(), name="keel-events-timers"),
            asyncio.create_task(self._dispatcher.acks.run(), name="keel-events-acks"),
        ]
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Stop consuming: release the partitions and leave the group (idempotent)."""
        tasks, self._tasks = self._tasks, []
        # The member first (it sends each partition's acks before releasing it),
        # then the acks of events settled meanwhile, then the ack sender.
        for task in tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
            if task is tasks[0] and self._dispatcher is not None:
                with contextlib.suppress(Exception):  # unsent: delivered again (at least once)
                    await self._dispatcher.acks.flush_all()

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> Event:
        return await self.next()

    async def next(self) -> Event:
        """Wait for the next event to handle.

        Raises:
            ValidationError: the subscription is not open (use ``async with``).
        """
        if self._dispatcher is None or not self._tasks:
            raise ValidationError(
                "the subscription is not open: use 'async with bus.subscribe(...)'"
            )
        return await self._dispatcher.next()

    @property
    def owned(self) -> list[int]:
        """The partitions this consumer reads now."""
        return [] if self._member is None else self._member.owned

    def statistics(self) -> dict[str, int]:
        """Held, ready, handed-out and retry-waiting event counts."""
        return {} if self._dispatcher is None else self._dispatcher.statistics()

    def __repr__(self) -> str:
        state = "open" if self._tasks else "closed"
        return (
            f"Subscription({self.topic!r}, group={self.group!r}, name={self.name!r}, "
            f"{state}, owns={self.owned})"
        )
