"""The event a consumer receives: data plus ``ack()`` / ``nack(error)``."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from opentelemetry.context import Context

from keel.events._model import EventRecord
from keel.observe.tracing import extract

__all__ = ["Event"]

_TRACE_HEADERS = ("traceparent", "tracestate", "baggage")


class Event:
    """One delivered event.

    Attributes:
        id: the event id (``<partition>:<engine id>``), as ``publish`` returned it.
        topic: the topic it was published to.
        key: the ordering key, or None.
        payload: the payload as published (JSON-like data, or ``bytes``).
        headers: string headers (trace context included).
        published_at: Unix time of the publish.
        attempt: 1 on the first delivery; +1 per retry or re-delivery.
        partition: the topic partition it lives in.
    """

    __slots__ = (
        "_settle",
        "attempt",
        "entry_id",
        "handed_at",
        "headers",
        "id",
        "key",
        "partition",
        "payload",
        "published_at",
        "record",
        "settled",
        "state",
        "topic",
    )

    def __init__(
        self,
        *,
        partition: int,
        entry_id: str,
        topic: str,
        key: str | None,
        payload: Any,
        headers: dict[str, str],
        published_at: float,
        attempt: int,
        settle: Callable[[Event, BaseException | str | None], Awaitable[None]],
    ) -> None:
        self.id = f"{partition}:{entry_id}"
        self.partition = partition
        self.entry_id = entry_id
        self.topic = topic
        self.key = key
        self.payload = payload
        self.headers = headers
        self.published_at = published_at
        self.attempt = attempt
        self._settle = settle
        self.settled = False
        self.state = "queued"  # queued | ready | out | waiting (for a retry)
        self.handed_at = 0.0
        self.record: EventRecord | None = None

    async def ack(self) -> None:
        """Mark the event handled: the group will not see it again (a second call does nothing).

        Cheap: the ack is queued and sent with others of its partition within
        about a millisecond, at the partition's next read, or when the
        subscription closes. If the process dies before that, the event is
        delivered again (at least once).
        """
        await self._settle(self, None)

    async def nack(self, error: BaseException | str | None = None) -> None:
        """Mark this attempt failed: retry after a backoff, or dead-letter after the last attempt.

        Args:
            error: the failure, recorded in the dead letter's headers.
        """
        await self._settle(self, error if error is not None else "nacked")

    def trace_context(self) -> Context:
        """The OpenTelemetry context the publisher carried in the headers."""
        carried = ((k, v) for k, v in self.headers.items() if k in _TRACE_HEADERS)
        return extract((k.encode(), v.encode()) for k, v in carried)

    def __repr__(self) -> str:
        return (
            f"Event(id={self.id!r}, topic={self.topic!r}, key={self.key!r}, "
            f"attempt={self.attempt}, {self.state})"
        )
