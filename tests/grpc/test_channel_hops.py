"""Deadline and trace context across two hops: caller → middle (keel.grpc.Server) → echo."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import grpc
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from keel.grpc import Channel, Server
from keel.store import Store
from tests.grpc import echo_pb2, echo_pb2_grpc
from tests.grpc._echo import EchoService

Req = echo_pb2.EchoRequest


@pytest.fixture(params=("sqlite", "etcd"))
def backend(request: pytest.FixtureRequest) -> str:
    """The two-hop tests run on the two real stores."""
    name: str = request.param
    return name


class Middle(echo_pb2_grpc.EchoServicer):
    """Unary: calls echo through a Channel; reports its own deadline in ``text``."""

    def __init__(self, channel: Channel) -> None:
        self.stub = echo_pb2_grpc.EchoStub(channel)

    async def Unary(
        self, request: echo_pb2.EchoRequest, context: grpc.aio.ServicerContext
    ) -> echo_pb2.EchoReply:
        """Forward to echo (no timeout of its own: keel's propagated deadline applies)."""
        seen = context.time_remaining()
        inner = await self.stub.Unary(Req(text=request.text, delay_ms=request.delay_ms))
        return echo_pb2.EchoReply(
            text=f"{seen:.3f}",
            served_by=f"middle>{inner.served_by}",
            deadline_left_s=inner.deadline_left_s,
            traceparent=inner.traceparent,
        )


@pytest.fixture
def provider() -> tuple[TracerProvider, InMemorySpanExporter]:
    """A tracer provider whose spans land in memory."""
    exporter = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    return tracer_provider, exporter


@pytest.fixture
async def hops(
    store: Store, provider: tuple[TracerProvider, InMemorySpanExporter]
) -> AsyncIterator[Channel]:
    """Echo and middle servers registered in the store; yields the caller's channel to middle."""
    tracer_provider, _ = provider
    echo = Server("echo", store=store, port=0, host="127.0.0.1", tracer_provider=tracer_provider)
    echo.add(echo_pb2_grpc.add_EchoServicer_to_server, EchoService("echo"))
    async with echo, Channel(store, "echo", tracer_provider=tracer_provider) as to_echo:
        middle = Server(
            "middle", store=store, port=0, host="127.0.0.1", tracer_provider=tracer_provider
        )
        middle.add(echo_pb2_grpc.add_EchoServicer_to_server, Middle(to_echo))
        async with middle, Channel(store, "middle", tracer_provider=tracer_provider) as channel:
            yield channel


async def test_deadline_shrinks_across_two_hops(hops: Channel) -> None:
    """The caller's 2 s deadline reaches the second hop smaller than the first hop saw it."""
    async with asyncio.timeout(10):
        reply = await echo_pb2_grpc.EchoStub(hops).Unary(Req(delay_ms=50), timeout=2.0)
    at_middle = float(reply.text)
    assert reply.served_by == "middle>echo"
    assert 0 < reply.deadline_left_s < at_middle <= 2.05


async def test_slow_second_hop_fails_at_the_original_deadline(hops: Channel) -> None:
    """A second hop slower than the caller's deadline gives DEADLINE_EXCEEDED at that deadline."""
    stub = echo_pb2_grpc.EchoStub(hops)
    await stub.Unary(Req(), timeout=5)  # both hops connected
    start = time.monotonic()
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        async with asyncio.timeout(10):
            await stub.Unary(Req(delay_ms=3000), timeout=0.5)
    took = time.monotonic() - start
    assert caught.value.code() is grpc.StatusCode.DEADLINE_EXCEEDED
    assert 0.45 < took < 0.9


async def test_trace_context_crosses_two_hops(
    hops: Channel, provider: tuple[TracerProvider, InMemorySpanExporter]
) -> None:
    """One trace id from the caller's span through the middle to the echo server."""
    tracer_provider, exporter = provider
    with tracer_provider.get_tracer("test").start_as_current_span("caller") as root:
        async with asyncio.timeout(10):
            reply = await echo_pb2_grpc.EchoStub(hops).Unary(Req(), timeout=5)
    trace_id = format(root.get_span_context().trace_id, "032x")
    assert reply.traceparent.split("-")[1] == trace_id
    ours = [s for s in exporter.get_finished_spans() if s.context.trace_id == int(trace_id, 16)]
    kinds = sorted((s.kind.name, s.name) for s in ours if s.name.endswith("Echo/Unary"))
    # caller → middle (client, server), middle → echo (client, server)
    assert [k for k, _ in kinds] == ["CLIENT", "CLIENT", "SERVER", "SERVER"], kinds
