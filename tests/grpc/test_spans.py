"""gRPC spans: a Channel call to a Server is one trace, tagged per the OpenTelemetry RPC rules."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from keel.grpc import Channel, Server
from keel.store import Store
from tests.grpc import echo_pb2, echo_pb2_grpc
from tests.grpc._echo import EchoService

UNARY = "keel.test.Echo/Unary"


@pytest.fixture
def traced() -> tuple[TracerProvider, InMemorySpanExporter]:
    """A tracer provider whose spans land in memory."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider, exporter


@pytest.fixture
async def stub(
    store: Store, traced: tuple[TracerProvider, InMemorySpanExporter]
) -> AsyncIterator[tuple[echo_pb2_grpc.EchoStub, Server]]:
    """A traced echo server registered in the store, and a stub through a traced channel."""
    provider, _ = traced
    server = Server("echo", store=store, port=0, host="127.0.0.1", tracer_provider=provider)
    server.add(echo_pb2_grpc.add_EchoServicer_to_server, EchoService("echo"))
    async with server, Channel(store, "echo", tracer_provider=provider) as channel:
        yield echo_pb2_grpc.EchoStub(channel), server


async def _pair(
    exporter: InMemorySpanExporter, server: Server
) -> tuple[ReadableSpan, ReadableSpan]:
    """The one CLIENT and one SERVER span of the Unary call (once the server has ended it)."""
    async with asyncio.timeout(10):
        await server.interceptor.wait_idle()  # the client may hear the status first
    spans = [s for s in exporter.get_finished_spans() if s.name == UNARY]
    (client,) = [s for s in spans if s.kind.name == "CLIENT"]
    (server,) = [s for s in spans if s.kind.name == "SERVER"]
    return client, server


def _attrs(span: ReadableSpan) -> dict[str, Any]:
    return dict(span.attributes or {})


async def test_a_call_is_a_client_and_a_server_span_in_one_trace(
    stub: tuple[echo_pb2_grpc.EchoStub, Server],
    traced: tuple[TracerProvider, InMemorySpanExporter],
) -> None:
    """The server span is the client span's child; both carry rpc.* and the addresses."""
    echo, server = stub
    provider, exporter = traced
    with provider.get_tracer("test").start_as_current_span("caller") as caller:
        async with asyncio.timeout(10):
            await echo.Unary(echo_pb2.EchoRequest(text="hi"), timeout=5)
    client, served = await _pair(exporter, server)
    assert client.parent is not None
    assert client.parent.span_id == caller.get_span_context().span_id
    assert served.parent is not None and served.parent.span_id == client.context.span_id
    assert served.context.trace_id == client.context.trace_id
    for span in (client, served):
        attrs = _attrs(span)
        assert attrs["rpc.system"] == "grpc"
        assert attrs["rpc.service"] == "keel.test.Echo"
        assert attrs["rpc.method"] == "Unary"
        assert attrs["rpc.grpc.status_code"] == 0
    assert _attrs(client)["server.address"] == "127.0.0.1"
    assert _attrs(client)["server.port"] == server.port
    assert _attrs(served)["network.peer.address"] == "127.0.0.1"
    assert isinstance(_attrs(served)["network.peer.port"], int)


async def test_a_callers_error_fails_the_client_span_only(
    stub: tuple[echo_pb2_grpc.EchoStub, Server],
    traced: tuple[TracerProvider, InMemorySpanExporter],
) -> None:
    """FAILED_PRECONDITION fails the CLIENT span, not the SERVER one; INTERNAL fails both."""
    echo, server = stub
    _, exporter = traced
    code = grpc.StatusCode.FAILED_PRECONDITION
    with pytest.raises(grpc.aio.AioRpcError):
        async with asyncio.timeout(10):
            await echo.Unary(echo_pb2.EchoRequest(fail_code=code.value[0]), timeout=5)
    client, served = await _pair(exporter, server)
    assert _attrs(client)["rpc.grpc.status_code"] == code.value[0]
    assert _attrs(served)["rpc.grpc.status_code"] == code.value[0]
    assert client.status.status_code is StatusCode.ERROR
    assert served.status.status_code is StatusCode.UNSET
    exporter.clear()
    internal = grpc.StatusCode.INTERNAL
    with pytest.raises(grpc.aio.AioRpcError):
        async with asyncio.timeout(10):
            await echo.Unary(echo_pb2.EchoRequest(fail_code=internal.value[0]), timeout=5)
    client, served = await _pair(exporter, server)
    assert client.status.status_code is StatusCode.ERROR
    assert served.status.status_code is StatusCode.ERROR
