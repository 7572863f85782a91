"""keel.grpc.Server in-process: registration after serving, interop, deadline, trace, metrics."""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import AsyncIterator

import grpc
import httpx
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

import keel
from keel.errors import KeelError, ValidationError
from keel.grpc import GrpcMetrics, Server
from keel.registry import decode_instance
from keel.registry._model import service_prefix
from keel.resilience import remaining
from keel.service import ServiceSettings
from keel.store import EventType, Store
from tests.grpc import echo_pb2, echo_pb2_grpc
from tests.grpc._echo import EchoService

FAST = ServiceSettings(drain_delay_s=0.0, grace_s=2.0)
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"


@pytest.fixture
async def mem() -> AsyncIterator[Store]:
    """A memory store for tests that do not depend on the backend."""
    async with keel.connect("memory://") as store:
        yield store


def echo_server(store: Store, name: str = "echo", **kwargs: object) -> Server:
    server = Server(name, store=store, port=0, settings=FAST, **kwargs)  # type: ignore[arg-type]
    server.add(echo_pb2_grpc.add_EchoServicer_to_server, EchoService(name))
    return server


async def _requests(*texts: str) -> AsyncIterator[echo_pb2.EchoRequest]:
    for text in texts:
        yield echo_pb2.EchoRequest(text=text)


async def test_registers_only_after_its_health_answers_serving(store: Store) -> None:
    """The instance appears in the store only once a plain channel already gets SERVING."""
    async with store.watch(service_prefix("echo"), prefix=True) as events:
        server = echo_server(store)
        async with asyncio.timeout(20), server:
            event = await anext(aiter(events))
            assert event.type is EventType.PUT
            instance = decode_instance(event.kv.key, event.kv.value)
            assert instance.scheme == "grpc"
            assert instance.url == f"grpc://{server.address}"
            async with grpc.aio.insecure_channel(f"{instance.address}:{instance.port}") as ch:
                reply = await health_pb2_grpc.HealthStub(ch).Check(
                    health_pb2.HealthCheckRequest(service="keel.test.Echo"), timeout=5
                )
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
            assert server.ready.is_set() and server.session is not None


async def test_a_plain_grpc_channel_calls_all_four_methods(mem: Store) -> None:
    """Any gRPC client calls the keel server at its address: unary and the three streams."""
    async with (
        asyncio.timeout(20),
        echo_server(mem) as server,
        grpc.aio.insecure_channel(server.address) as channel,
    ):
        stub = echo_pb2_grpc.EchoStub(channel)
        unary = await stub.Unary(echo_pb2.EchoRequest(text="hi"), timeout=5)
        assert (unary.text, unary.served_by) == ("hi", "echo")
        stream = stub.ServerStream(echo_pb2.EchoRequest(text="s", count=3), timeout=5)
        assert [r.text async for r in stream] == ["s#0", "s#1", "s#2"]
        joined = await stub.ClientStream(_requests("a", "b", "c"), timeout=5)
        assert joined.text == "a,b,c"
        bidi = stub.Bidi(_requests("x", "y"), timeout=5)
        assert [r.text async for r in bidi] == ["x", "y"]
        with pytest.raises(grpc.aio.AioRpcError) as failed:
            await stub.Unary(echo_pb2.EchoRequest(fail_code=5), timeout=5)
        assert failed.value.code() is grpc.StatusCode.NOT_FOUND


async def test_reflection_lists_the_services(mem: Store) -> None:
    """Server reflection names keel.test.Echo and the health service."""
    async with (
        asyncio.timeout(20),
        echo_server(mem) as server,
        grpc.aio.insecure_channel(server.address) as channel,
    ):
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        call = stub.ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=5
        )
        reply = await anext(aiter(call))
        call.cancel()
    names = {s.name for s in reply.list_services_response.service}
    assert {"keel.test.Echo", "grpc.health.v1.Health"} <= names


class _DeadlineEcho(EchoService):
    """Answers with keel's ``remaining()`` instead of grpc's own time_remaining()."""

    async def Unary(
        self, request: echo_pb2.EchoRequest, context: grpc.aio.ServicerContext
    ) -> echo_pb2.EchoReply:
        left = remaining()
        return echo_pb2.EchoReply(deadline_left_s=-1.0 if math.isinf(left) else left)


async def test_the_callers_deadline_becomes_keels_deadline(mem: Store) -> None:
    """A handler sees keel's remaining() close to the caller's timeout; none without one."""
    server = Server("echo", store=mem, port=0, settings=FAST)
    server.add(echo_pb2_grpc.add_EchoServicer_to_server, _DeadlineEcho("echo"))
    async with (
        asyncio.timeout(20),
        server,
        grpc.aio.insecure_channel(server.address) as channel,
    ):
        stub = echo_pb2_grpc.EchoStub(channel)
        bounded = await stub.Unary(echo_pb2.EchoRequest(), timeout=2.0)
        unbounded = await stub.Unary(echo_pb2.EchoRequest())
        with pytest.raises(grpc.aio.AioRpcError) as late:
            await (
                echo_pb2_grpc.EchoStub(channel)
                .ServerStream(echo_pb2.EchoRequest(count=2, delay_ms=2000), timeout=0.3)
                .read()
            )
    # grpc-timeout on the wire is rounded up to its unit: allow a few ms over.
    assert 1.5 < bounded.deadline_left_s <= 2.05
    assert unbounded.deadline_left_s == -1.0
    assert late.value.code() is grpc.StatusCode.DEADLINE_EXCEEDED


async def test_a_callers_traceparent_is_the_parent_of_the_server_span(mem: Store) -> None:
    """W3C trace context in metadata parents the server span; the span carries the code."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    traceparent = f"00-{TRACE_ID}-{PARENT_ID}-01"
    async with (
        asyncio.timeout(20),
        echo_server(mem, tracer_provider=provider) as server,
        grpc.aio.insecure_channel(server.address) as channel,
    ):
        reply = await echo_pb2_grpc.EchoStub(channel).Unary(
            echo_pb2.EchoRequest(text="t"), metadata=(("traceparent", traceparent),)
        )
    assert reply.traceparent == traceparent
    spans = [s for s in exporter.get_finished_spans() if s.name == "keel.test.Echo/Unary"]
    assert len(spans) == 1
    span = spans[0]
    assert span.parent is not None and format(span.parent.span_id, "016x") == PARENT_ID
    assert format(span.context.trace_id, "032x") == TRACE_ID
    assert span.attributes is not None and span.attributes["rpc.grpc.status_code"] == 0


def _samples(registry: CollectorRegistry) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = generate_latest(registry).decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def _key(name: str, method: str, grpc_type: str, **more: str) -> tuple[str, tuple]:  # type: ignore[type-arg]
    labels = {"grpc_service": "keel.test.Echo", "grpc_method": method, "grpc_type": grpc_type}
    return name, tuple(sorted({**labels, **more}.items()))


async def test_metrics_count_calls_by_method_and_code(mem: Store) -> None:
    """The keel_grpc_server_* series parse and count started, handled by code, messages."""
    registry = CollectorRegistry()
    async with (
        asyncio.timeout(20),
        echo_server(mem, metrics=GrpcMetrics(registry)) as server,
        grpc.aio.insecure_channel(server.address) as channel,
    ):
        stub = echo_pb2_grpc.EchoStub(channel)
        for _ in range(2):
            await stub.Unary(echo_pb2.EchoRequest(text="ok"))
        with pytest.raises(grpc.aio.AioRpcError):
            await stub.Unary(echo_pb2.EchoRequest(fail_code=14))
        assert len([r async for r in stub.ServerStream(echo_pb2.EchoRequest(count=3))]) == 3
        await stub.ClientStream(_requests("a", "b"))
    samples = _samples(registry)
    assert samples[_key("keel_grpc_server_started_total", "Unary", "unary")] == 3
    assert samples[_key("keel_grpc_server_handled_total", "Unary", "unary", grpc_code="OK")] == 2
    unavailable = _key("keel_grpc_server_handled_total", "Unary", "unary", grpc_code="UNAVAILABLE")
    assert samples[unavailable] == 1
    assert samples[_key("keel_grpc_server_handling_seconds_count", "Unary", "unary")] == 3
    assert samples[_key("keel_grpc_server_msg_sent_total", "ServerStream", "server_stream")] == 3
    received = _key("keel_grpc_server_msg_received_total", "ClientStream", "client_stream")
    assert samples[received] == 2


async def test_a_stream_the_client_cancels_counts_as_cancelled(mem: Store) -> None:
    """A server stream cut by its caller is handled once, with CANCELLED."""
    registry = CollectorRegistry()
    server = echo_server(mem, metrics=GrpcMetrics(registry))
    handled = _key("keel_grpc_server_handled_total", "ServerStream", "server_stream")
    async with (
        asyncio.timeout(20),
        server,
        grpc.aio.insecure_channel(server.address) as channel,
    ):
        call = echo_pb2_grpc.EchoStub(channel).ServerStream(
            echo_pb2.EchoRequest(count=1000, delay_ms=5)
        )
        await call.read()
        call.cancel()
    # Leaving the server drained it: the stream's handler has ended.
    counted = {
        labels: value
        for (name, labels), value in _samples(registry).items()
        if name == handled[0] and ("grpc_method", "ServerStream") in labels
    }
    assert [(dict(k)["grpc_code"], v) for k, v in counted.items()] == [("CANCELLED", 1.0)]


async def test_one_access_log_line_per_call(mem: Store, caplog: pytest.LogCaptureFixture) -> None:
    """Each call logs one line on keel.grpc.access: method, code, duration, peer."""
    caplog.set_level(logging.INFO, logger="keel.grpc.access")
    async with asyncio.timeout(20), echo_server(mem) as server:
        caplog.clear()
        async with grpc.aio.insecure_channel(server.address) as channel:
            with pytest.raises(grpc.aio.AioRpcError):
                await echo_pb2_grpc.EchoStub(channel).Unary(echo_pb2.EchoRequest(fail_code=3))
    lines = [r for r in caplog.records if r.name == "keel.grpc.access"]
    assert len(lines) == 1
    record = lines[0]
    assert record.grpc_method == "/keel.test.Echo/Unary"  # type: ignore[attr-defined]
    assert record.grpc_code == "INVALID_ARGUMENT"  # type: ignore[attr-defined]
    assert "127.0.0.1" in record.peer  # type: ignore[attr-defined]
    assert "INVALID_ARGUMENT" in record.getMessage()


async def test_access_log_false_writes_no_line(
    mem: Store, caplog: pytest.LogCaptureFixture
) -> None:
    """Server(access_log=False) logs nothing per call even with the logger at INFO."""
    caplog.set_level(logging.INFO, logger="keel.grpc.access")
    server = echo_server(mem, access_log=False)
    async with (
        asyncio.timeout(20),
        server,
        grpc.aio.insecure_channel(server.address) as channel,
    ):
        await echo_pb2_grpc.EchoStub(channel).Unary(echo_pb2.EchoRequest(text="quiet"))
    assert not [r for r in caplog.records if r.name == "keel.grpc.access"]


async def test_bad_input_is_refused_with_the_fix(mem: Store) -> None:
    """workers > 1, add() after start, a bad name and a taken port are ValidationErrors."""
    with pytest.raises(ValidationError, match="run more instances"):
        Server("echo", store=mem, settings=ServiceSettings(workers=2))
    with pytest.raises(ValidationError):
        Server("Not A Name", store=mem)
    with pytest.raises(ValidationError, match="add_XServicer_to_server"):
        Server("echo", store=mem).add(EchoService("x"), EchoService("x"))  # type: ignore[arg-type]
    async with asyncio.timeout(20), echo_server(mem) as server:
        with pytest.raises(ValidationError, match="before serve"):
            server.add(echo_pb2_grpc.add_EchoServicer_to_server, EchoService("x"))
        taken = Server("other", store=mem, port=server.port, settings=FAST)
        with pytest.raises(ValidationError, match="cannot bind"):
            await taken.__aenter__()


async def test_metrics_port_answers_get_metrics_over_http(mem: Store) -> None:
    """metrics_port=0 serves the registry on GET /metrics (404 elsewhere), parseable."""
    registry = CollectorRegistry()
    server = echo_server(mem, metrics=GrpcMetrics(registry), metrics_port=0, registry=registry)
    async with (
        asyncio.timeout(20),
        server,
        grpc.aio.insecure_channel(server.address) as channel,
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.metrics_port}") as http,
    ):
        await echo_pb2_grpc.EchoStub(channel).Unary(echo_pb2.EchoRequest(text="m"))
        scraped = await http.get("/metrics")
        missing = await http.get("/other")
    assert scraped.status_code == 200 and missing.status_code == 404
    families = {f.name for f in text_string_to_metric_families(scraped.text)}
    assert {"keel_grpc_server_started", "keel_grpc_server_handled"} <= families
    assert 'grpc_code="OK"' in scraped.text


async def test_a_health_check_that_never_answers_fails_the_start_unregistered(mem: Store) -> None:
    """An advertised address that does not reach the server: KeelError, nothing registered."""
    settings = ServiceSettings(advertise="127.0.0.2", startup_timeout_s=0.5, drain_delay_s=0)
    server = Server("echo", store=mem, port=0, settings=settings)
    with pytest.raises(KeelError, match="did not answer SERVING"):
        async with asyncio.timeout(20), server:
            pass
    assert server.registration is None
    assert (await mem.range(service_prefix("echo")))[0] == []
