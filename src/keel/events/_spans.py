"""Spans of the bus, named and tagged as OpenTelemetry's messaging conventions say.

- ``publish <topic>`` (PRODUCER): one per :meth:`Bus.publish` or
  ``publish_many`` call, under the caller's span; its context goes into each
  event's headers, so it is the events' creation context.
- ``create <topic>`` (PRODUCER): one per outbox record, when the caller's
  transaction is built; the record carries its context through the relay.
- ``publish <topic>`` by the outbox relay: one per batch appended, its own
  trace, linked to the creation context of every record in the batch.
- ``process <topic>`` (CONSUMER): one per handler call, a child of the
  event's creation context and linked to it (the conventions ask for the
  link; the parent keeps the trace whole in viewers that ignore links).

``messaging.system`` is ``keel`` on either engine. Free when tracing is off:
each helper returns None after one :func:`keel.observe.spans.tracing_on`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator, Mapping

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import Link, Span, SpanKind
from opentelemetry.util.types import AttributeValue

from keel.events._event import Event
from keel.observe.spans import span_scope, start_span, tracing_on
from keel.observe.tracing import extract

__all__ = ["create_span", "process_span", "producing", "published", "relay_span"]

SYSTEM = "keel"


def _attributes(topic: str, operation: str) -> dict[str, AttributeValue]:
    return {
        "messaging.system": SYSTEM,
        "messaging.destination.name": topic,
        "messaging.operation.type": operation,
        "messaging.operation.name": operation,
    }


@contextlib.contextmanager
def producing(topic: str, count: int) -> Iterator[Span | None]:
    """Run a publish of ``count`` events in its PRODUCER span (None when off); failures mark it.

    Hot paths check :func:`tracing_on` first and skip this context manager when off.
    """
    if not tracing_on():
        yield None
        return
    attributes = _attributes(topic, "publish")
    if count != 1:
        attributes["messaging.batch.message_count"] = count
    with span_scope(f"publish {topic}", attributes, kind=SpanKind.PRODUCER) as span:
        yield span


def published(span: Span | None, ids: list[str]) -> None:
    """Tag a publish span with the id and partition of the event it published (one only)."""
    if span is None or len(ids) != 1:
        return
    span.set_attribute("messaging.message.id", ids[0])
    span.set_attribute("messaging.destination.partition.id", ids[0].split(":", 1)[0])


def create_span(topic: str) -> Span | None:
    """Start the PRODUCER span of one outbox record's creation, or None when off."""
    if not tracing_on():
        return None
    attributes = _attributes(topic, "create")
    attributes["keel.events.outbox"] = True
    return start_span(f"create {topic}", attributes, kind=SpanKind.PRODUCER)


def relay_span(topic: str, partition: int, headers: Iterable[Mapping[str, str]]) -> Span | None:
    """Start the relay's PRODUCER span of one batch (a new trace, linked to each record's)."""
    if not tracing_on():
        return None
    links: list[Link] = []
    for carried in headers:
        found = _creation(carried)
        if found is not None:
            links.append(Link(found))
    attributes = _attributes(topic, "publish")
    attributes["messaging.batch.message_count"] = len(links) or 1
    attributes["messaging.destination.partition.id"] = str(partition)
    attributes["keel.events.outbox"] = True
    return start_span(
        f"publish {topic}", attributes, kind=SpanKind.PRODUCER, root=True, links=tuple(links)
    )


def process_span(event: Event, group: str) -> Span | None:
    """Start the CONSUMER span of one handler call, under and linked to the event's creation."""
    if not tracing_on():
        return None
    parent = event.trace_context()
    creation = trace.get_current_span(parent).get_span_context()
    attributes = _attributes(event.topic, "process")
    attributes["messaging.consumer.group.name"] = group
    attributes["messaging.message.id"] = event.id
    attributes["messaging.destination.partition.id"] = str(event.partition)
    attributes["keel.events.attempt"] = event.attempt
    links = (Link(creation),) if creation.is_valid else ()
    token = otel_context.attach(parent)
    try:
        return start_span(f"process {event.topic}", attributes, kind=SpanKind.CONSUMER, links=links)
    finally:
        otel_context.detach(token)


def _creation(headers: Mapping[str, str]) -> trace.SpanContext | None:
    """The span context a record's headers carry, if valid."""
    value = headers.get("traceparent")
    if value is None:
        return None
    carried = extract([(b"traceparent", value.encode("latin-1"))])
    found = trace.get_current_span(carried).get_span_context()
    return found if found.is_valid else None
