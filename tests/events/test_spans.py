"""Event spans: publish under the caller, process under (and linked to) the publish, outbox kept."""

from __future__ import annotations

import asyncio
from typing import Any

from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from keel.events import Bus, Event, Message, Relay
from keel.store import Store
from tests.events._helpers import FAST


def _attrs(span: ReadableSpan) -> dict[str, Any]:
    return dict(span.attributes or {})


def _named(exporter: InMemorySpanExporter, name: str) -> list[ReadableSpan]:
    return [s for s in exporter.get_finished_spans() if s.name == name]


async def _handle(bus: Bus, topic: str, count: int, *, fail_first: bool = False) -> None:
    """Run one handler in group ``billing`` until it has acked ``count`` events."""
    done = asyncio.Event()
    acked: list[str] = []
    failed: set[str] = set()

    @bus.handler(topic, group="billing", start="earliest", **FAST)
    async def handle(event: Event) -> None:
        if fail_first and event.id not in failed:
            failed.add(event.id)
            raise RuntimeError("card service down")
        acked.append(event.id)
        if len(acked) == count:
            done.set()

    runner = asyncio.create_task(bus.run())
    try:
        async with asyncio.timeout(30):
            await done.wait()
    finally:
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)


async def test_an_event_is_processed_under_its_publish(
    bus: Bus, traced: tuple[TracerProvider, InMemorySpanExporter]
) -> None:
    """publish is the request span's child; process is publish's child and links to it."""
    provider, exporter = traced
    with provider.get_tracer("test").start_as_current_span("checkout") as request:
        event_id = await bus.publish("orders", {"id": 1}, key="order-1")
    await _handle(bus, "orders", 1)
    (publish,) = _named(exporter, "publish orders")
    (process,) = _named(exporter, "process orders")
    assert publish.kind.name == "PRODUCER" and process.kind.name == "CONSUMER"
    assert publish.parent is not None
    assert publish.parent.span_id == request.get_span_context().span_id
    assert process.parent is not None and process.parent.span_id == publish.context.span_id
    assert process.context.trace_id == request.get_span_context().trace_id
    assert [link.context.span_id for link in process.links] == [publish.context.span_id]
    partition = event_id.split(":", 1)[0]
    assert _attrs(publish) == {
        "messaging.system": "keel",
        "messaging.destination.name": "orders",
        "messaging.operation.type": "publish",
        "messaging.operation.name": "publish",
        "messaging.message.id": event_id,
        "messaging.destination.partition.id": partition,
    }
    assert _attrs(process) == {
        "messaging.system": "keel",
        "messaging.destination.name": "orders",
        "messaging.operation.type": "process",
        "messaging.operation.name": "process",
        "messaging.consumer.group.name": "billing",
        "messaging.message.id": event_id,
        "messaging.destination.partition.id": partition,
        "keel.events.attempt": 1,
    }


async def test_a_failed_handler_marks_its_process_span(
    bus: Bus, traced: tuple[TracerProvider, InMemorySpanExporter]
) -> None:
    """A handler that raises gives an error span; the retry is a second process span."""
    _, exporter = traced
    await bus.publish("orders", {"id": 2})
    await _handle(bus, "orders", 1, fail_first=True)
    spans = sorted(_named(exporter, "process orders"), key=lambda s: s.start_time or 0)
    assert [_attrs(s)["keel.events.attempt"] for s in spans] == [1, 2]
    first, second = spans
    assert first.status.status_code is StatusCode.ERROR
    assert _attrs(first)["error.type"] == "RuntimeError"
    assert second.status.status_code is StatusCode.UNSET
    assert "error.type" not in _attrs(second)


async def test_publish_many_is_one_span_for_the_batch(
    bus: Bus, traced: tuple[TracerProvider, InMemorySpanExporter]
) -> None:
    """A batch is one publish span with its count; every event's process span is its child."""
    _, exporter = traced
    await bus.publish_many("orders", [Message({"n": n}) for n in range(3)])
    await _handle(bus, "orders", 3)
    (publish,) = _named(exporter, "publish orders")
    assert _attrs(publish)["messaging.batch.message_count"] == 3
    assert "messaging.message.id" not in _attrs(publish)
    processed = _named(exporter, "process orders")
    assert len(processed) == 3
    assert all(
        s.parent is not None and s.parent.span_id == publish.context.span_id for s in processed
    )


async def test_the_outbox_relay_keeps_the_creators_context(
    store: Store, traced: tuple[TracerProvider, InMemorySpanExporter]
) -> None:
    """An outbox event is processed under its create span, in the trace of the writing request."""
    provider, exporter = traced
    bus = Bus(store)
    with provider.get_tracer("test").start_as_current_span("checkout") as request:
        put = bus.outbox_put("orders", {"id": 3}, key="order-3")
        await store.txn([], [put])
    assert await Relay(store, bus).run_once() == 1
    await _handle(bus, "orders", 1)
    (create,) = _named(exporter, "create orders")
    (relayed,) = _named(exporter, "publish orders")
    (process,) = _named(exporter, "process orders")
    assert create.parent is not None
    assert create.parent.span_id == request.get_span_context().span_id
    assert _attrs(create)["messaging.operation.type"] == "create"
    assert process.parent is not None and process.parent.span_id == create.context.span_id
    assert process.context.trace_id == request.get_span_context().trace_id
    assert relayed.parent is None  # the relay's own trace, linked to what it moved
    assert [link.context.span_id for link in relayed.links] == [create.context.span_id]
    assert _attrs(relayed)["keel.events.outbox"] is True
