"""Saga spans: the saga's run, each step try and compensation, and the participants' calls."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from keel.grpc import Channel, Server
from keel.saga import Coordinator, Outcome, Saga, SagaContext, Step
from keel.store import Store
from tests._util import eventually
from tests.grpc import echo_pb2, echo_pb2_grpc
from tests.grpc._echo import EchoService

UNARY = "keel.test.Echo/Unary"


@pytest.fixture
async def echo(
    store: Store, traced: tuple[TracerProvider, InMemorySpanExporter]
) -> AsyncIterator[tuple[echo_pb2_grpc.EchoStub, Server]]:
    """A participant: a traced echo gRPC server, and a stub calling it through a traced channel."""
    provider, _ = traced
    server = Server("stock", store=store, port=0, host="127.0.0.1", tracer_provider=provider)
    server.add(echo_pb2_grpc.add_EchoServicer_to_server, EchoService("stock"))
    async with server, Channel(store, "stock", tracer_provider=provider) as channel:
        yield echo_pb2_grpc.EchoStub(channel), server


def _attrs(span: ReadableSpan) -> dict[str, Any]:
    return dict(span.attributes or {})


def _children(spans: list[ReadableSpan], parent: ReadableSpan) -> list[ReadableSpan]:
    return [s for s in spans if s.parent is not None and s.parent.span_id == parent.context.span_id]


async def _ended(exporter: InMemorySpanExporter, name: str) -> None:
    """Wait until the span ``name`` has ended.

    The saga's last state is visible in the store (and to ``wait``) before the task
    driving it has returned; leaving the coordinator then would cancel that task and
    end the span as ``stopped``.
    """
    await eventually(lambda: any(s.name == name for s in exporter.get_finished_spans()), 10, 0.01)


def _one(spans: list[ReadableSpan], name: str) -> ReadableSpan:
    found = [s for s in spans if s.name == name]
    assert len(found) == 1, [s.name for s in spans]
    return found[0]


async def test_failed_step_compensates_under_one_saga_span(
    store: Store,
    echo: tuple[echo_pb2_grpc.EchoStub, Server],
    traced: tuple[TracerProvider, InMemorySpanExporter],
) -> None:
    """Saga span under the submitter's; step, compensation and their gRPC calls nest under it."""
    provider, exporter = traced
    stub, participant = echo

    async def call(ctx: SagaContext, fail_code: int = 0) -> str:
        req = echo_pb2.EchoRequest(text=f"{ctx.step} {ctx.op}", fail_code=fail_code)
        return (await stub.Unary(req, timeout=5)).text

    async def charge(ctx: SagaContext) -> str:
        return await call(ctx, fail_code=9)  # FAILED_PRECONDITION: the card is declined

    saga = Saga(
        "order",
        [Step("reserve", action=call, compensate=call), Step("charge", action=charge)],
    )
    async with asyncio.timeout(20), Coordinator(store, [saga], ttl_s=5) as coord:
        with provider.get_tracer("test").start_as_current_span("checkout") as request:
            saga_id = await coord.start("order", {"sku": "a1"})
        assert await coord.wait(saga_id) is Outcome.COMPENSATED
        await _ended(exporter, "saga order")
        await participant.interceptor.wait_idle()  # its last server span has ended
    trace_id = request.get_span_context().trace_id
    spans = [s for s in exporter.get_finished_spans() if s.context.trace_id == trace_id]

    root = _one(spans, "saga order")
    assert root.parent is not None and root.parent.span_id == request.get_span_context().span_id
    assert _attrs(root) == {
        "keel.saga.name": "order",
        "keel.saga.gid": saga_id,
        "keel.saga.resumed": False,
        "keel.saga.outcome": "compensated",
        "error.type": "compensated",
    }
    steps = [s for s in _children(spans, root) if s.name.startswith("saga ")]
    assert [s.name for s in sorted(steps, key=lambda s: s.start_time or 0)] == [
        "saga step reserve",
        "saga step charge",
        "saga compensate charge",  # a failed step is compensated too (here: nothing to undo)
        "saga compensate reserve",
    ]
    reserve, charge_span, _, undo = sorted(steps, key=lambda s: s.start_time or 0)
    assert _attrs(reserve)["keel.saga.outcome"] == "ok"
    assert _attrs(reserve)["keel.saga.branch"] == "01"
    assert _attrs(charge_span)["keel.saga.branch"] == "02"
    assert _attrs(charge_span)["keel.saga.outcome"] == "failed"
    assert _attrs(charge_span)["error.type"] == "AioRpcError"
    assert _attrs(undo)["keel.saga.op"] == "compensate"
    assert _attrs(undo)["keel.saga.attempt"] == 1
    for step in (reserve, charge_span, undo):
        assert step.kind.name == "CLIENT"
        (client,) = [s for s in _children(spans, step) if s.name == UNARY]
        assert client.kind.name == "CLIENT"
        (server,) = _children(spans, client)
        assert server.kind.name == "SERVER" and server.name == UNARY
    assert _attrs(charge_span)["keel.saga.step"] == "charge"


async def test_a_saga_taken_over_is_its_own_trace(
    store: Store, traced: tuple[TracerProvider, InMemorySpanExporter]
) -> None:
    """A saga started where no coordinator runs is a new trace, made by the one that claims it."""
    provider, exporter = traced

    async def ok(ctx: SagaContext) -> None:
        return None

    saga = Saga("resume", [Step("only", action=ok)])
    coord = Coordinator(store, [saga], ttl_s=5)
    with provider.get_tracer("test").start_as_current_span("submit"):
        saga_id = await coord.start("resume")  # not running here: left for a coordinator
    async with asyncio.timeout(20), coord:
        assert await coord.wait(saga_id) is Outcome.COMMITTED
        await _ended(exporter, "saga resume")
    root = _one(list(exporter.get_finished_spans()), "saga resume")
    assert root.parent is None
    assert _attrs(root)["keel.saga.resumed"] is True
    assert _attrs(root)["keel.saga.outcome"] == "committed"
    assert "error.type" not in _attrs(root)
    (step,) = [
        s for s in _children(list(exporter.get_finished_spans()), root) if s.name[:5] == "saga "
    ]
    assert step.name == "saga step only" and _attrs(step)["keel.saga.outcome"] == "ok"
