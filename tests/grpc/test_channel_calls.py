"""What each call carries and counts: metadata out, affinity, client metrics, bad arguments."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc
import pytest
import trustme
from opentelemetry import context as otel_context
from opentelemetry import propagate
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from keel.errors import ValidationError
from keel.grpc import Channel, ChannelSettings, GrpcMetrics
from keel.resilience import deadline
from keel.store import Store
from tests.grpc import echo_pb2, echo_pb2_grpc
from tests.grpc._channel_util import plain_echo, put_instance
from tests.grpc._echo import EchoService

Req = echo_pb2.EchoRequest


@pytest.fixture(params=("sqlite", "etcd"))
def backend(request: pytest.FixtureRequest) -> str:
    """These tests run on the two real stores."""
    name: str = request.param
    return name


class MetadataEcho(EchoService):
    """Unary replies with the invocation metadata as ``key=value`` lines in ``text``."""

    async def Unary(
        self, request: echo_pb2.EchoRequest, context: grpc.aio.ServicerContext
    ) -> echo_pb2.EchoReply:
        """The metadata the call arrived with."""
        pairs = "\n".join(f"{k}={v}" for k, v in context.invocation_metadata() or ())
        return echo_pb2.EchoReply(text=pairs, served_by=self.served_by)


async def _requests(*requests: echo_pb2.EchoRequest) -> AsyncIterator[echo_pb2.EchoRequest]:
    for request in requests:
        yield request


async def _metadata_server() -> tuple[grpc.aio.Server, int]:
    server = grpc.aio.server()
    echo_pb2_grpc.add_EchoServicer_to_server(MetadataEcho("meta"), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    return server, port


@pytest.fixture
async def meta_port() -> AsyncIterator[int]:
    """A plain server whose Unary reports the metadata it received."""
    server, port = await _metadata_server()
    try:
        yield port
    finally:
        await server.stop(None)


async def test_deadline_and_caller_metadata_go_out(store: Store, meta_port: int) -> None:
    """keel-deadline carries the seconds left; the caller's own metadata passes through."""
    await put_instance(store, "meta", "m", meta_port)
    async with Channel(store, "meta") as channel, asyncio.timeout(10):
        stub = echo_pb2_grpc.EchoStub(channel)
        async with deadline(1.5):
            reply = await stub.Unary(Req(), metadata=(("tenant", "t1"),))
    seen = dict(pair.split("=", 1) for pair in reply.text.splitlines())
    assert seen["tenant"] == "t1"
    assert 0 < float(seen["keel-deadline"]) <= 1.5


async def test_hash_key_keeps_a_key_on_one_instance(store: Store) -> None:
    """With hash_key, every call carrying the same key value lands on the same instance."""
    async with plain_echo("a") as pa, plain_echo("b") as pb, plain_echo("c") as pc:
        for name, port in (("a", pa), ("b", pb), ("c", pc)):
            await put_instance(store, "echo", name, port)
        async with Channel(store, "echo", hash_key="user-id") as channel, asyncio.timeout(20):
            stub = echo_pb2_grpc.EchoStub(channel)
            homes = {}
            for user in ("u1", "u2", "u3", "u4", "u5", "u6"):
                served = {
                    (await stub.Unary(Req(), metadata=(("user-id", user),))).served_by
                    for _ in range(5)
                }
                assert len(served) == 1, (user, served)
                homes[user] = served.pop()
    assert len(set(homes.values())) >= 2  # keys spread over the ring


async def test_client_metrics_count_calls_by_method_and_code(store: Store) -> None:
    """keel_grpc_client_* series parse and count calls per method and status code."""
    registry = CollectorRegistry()
    metrics = GrpcMetrics(registry)
    async with plain_echo("m") as port:
        await put_instance(store, "echo", "m", port)
        async with Channel(store, "echo", metrics=metrics) as channel, asyncio.timeout(10):
            stub = echo_pb2_grpc.EchoStub(channel)
            for _ in range(3):
                await stub.Unary(Req())
            with pytest.raises(grpc.aio.AioRpcError):
                await stub.Unary(Req(fail_code=grpc.StatusCode.NOT_FOUND.value[0]))
            assert len([r async for r in stub.ServerStream(Req(count=2))]) == 2
            assert (await stub.ClientStream(_requests(Req(text="a")))).text == "a"
            failing = Req(fail_code=grpc.StatusCode.ABORTED.value[0])
            with pytest.raises(grpc.aio.AioRpcError):
                _ = [r async for r in stub.Bidi(_requests(Req(text="a"), failing))]
    handled: dict[tuple[str, str], float] = {}
    messages: dict[tuple[str, str], float] = {}
    for family in text_string_to_metric_families(generate_latest(registry).decode()):
        for sample in family.samples:
            if sample.name == "keel_grpc_client_handled_total":
                key = (sample.labels["grpc_method"], sample.labels["grpc_code"])
                handled[key] = sample.value
            elif sample.name.startswith("keel_grpc_client_msg_"):
                messages[(sample.labels["grpc_method"], sample.name)] = sample.value
    sent, received = "keel_grpc_client_msg_sent_total", "keel_grpc_client_msg_received_total"
    assert messages[("Unary", sent)] == 4 and messages[("Unary", received)] == 3
    assert messages[("ServerStream", sent)] == 1 and messages[("ServerStream", received)] == 2
    assert messages[("ClientStream", sent)] == 1 and messages[("Bidi", sent)] == 2
    assert handled[("Unary", "OK")] == 3
    assert handled[("Unary", "NOT_FOUND")] == 1
    assert handled[("ServerStream", "OK")] == 1
    assert handled[("ClientStream", "OK")] == 1
    assert handled[("Bidi", "ABORTED")] == 1


async def test_bad_arguments_are_refused_with_the_fix(store: Store) -> None:
    """Each bad argument is one ValidationError naming the fix, before anything starts."""
    with pytest.raises(ValidationError, match="service name"):
        Channel(store, "Not A Name")
    with pytest.raises(ValidationError, match="host:port"):
        Channel(None, "echo", target_override="nowhere")
    with pytest.raises(ValidationError, match="target_override"):
        Channel(None, "echo")
    with pytest.raises(ValidationError, match="lower-case"):
        Channel(store, "echo", hash_key="User-Id")
    with pytest.raises(ValidationError, match="not a URL"):
        Channel("sqlite:///x.db", "echo")  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match="first argument is a dict"):
        Channel({}, "echo")  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match="ChannelSettings"):
        Channel(store, "echo", settings={"timeout_s": 1})  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match="RoundRobin"):
        Channel(store, "echo", balancer="p2c")  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match="hash_key"):
        Channel(store, "echo", hash_key=7)  # type: ignore[arg-type]


async def test_repr_statistics_and_state(store: Store) -> None:
    """repr tells service, state and counts; get_state follows the sub-channels."""
    async with plain_echo("r") as port:
        await put_instance(store, "echo", "r", port)
        channel = Channel(store, "echo")
        assert "new" in repr(channel)
        with pytest.raises(grpc.aio.AioRpcError, match="not open"):
            await echo_pb2_grpc.EchoStub(channel).Unary(Req())
        async with channel, asyncio.timeout(10):
            await channel.channel_ready()
            assert channel.get_state() is grpc.ChannelConnectivity.READY
            await echo_pb2_grpc.EchoStub(channel).Unary(Req())
            text = repr(channel)
        stats = channel.statistics()
    assert "'echo' open" in text and "calls=2 failures=1" in text  # one refused: not open
    assert (stats.calls, stats.failures, stats.instances) == (2, 1, 0)
    assert channel.get_state() is grpc.ChannelConnectivity.SHUTDOWN


async def test_grpcs_instances_need_credentials(store: Store) -> None:
    """A grpcs instance is called over TLS with credentials, and skipped without them."""
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    server = grpc.aio.server()
    echo_pb2_grpc.add_EchoServicer_to_server(EchoService("tls"), server)
    chain = b"".join(pem.bytes() for pem in cert.cert_chain_pems)
    creds = grpc.ssl_server_credentials([(cert.private_key_pem.bytes(), chain)])
    port = server.add_secure_port("127.0.0.1:0", creds)
    await server.start()
    try:
        await put_instance(store, "secure", "s", port, scheme="grpcs")
        tls = ChannelSettings(credentials=grpc.ssl_channel_credentials(ca.cert_pem.bytes()))
        async with Channel(store, "secure", settings=tls) as channel, asyncio.timeout(10):
            reply = await echo_pb2_grpc.EchoStub(channel).Unary(Req())
        async with Channel(store, "secure") as channel:
            with pytest.raises(grpc.aio.AioRpcError, match="no credentials"):
                await echo_pb2_grpc.EchoStub(channel).Unary(Req())
            assert channel.statistics().skipped == 1
    finally:
        await server.stop(None)
    assert reply.served_by == "tls"


async def test_incoming_trace_context_goes_out_without_a_tracer(store: Store) -> None:
    """A caller's remote trace context (no SDK of its own) reaches the server in traceparent."""
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    remote = propagate.extract({"traceparent": f"00-{trace_id}-00f067aa0ba902b7-01"})
    async with plain_echo("t") as port:
        await put_instance(store, "echo", "t", port)
        async with Channel(store, "echo") as channel, asyncio.timeout(10):
            stub = echo_pb2_grpc.EchoStub(channel)
            token = otel_context.attach(remote)
            try:
                reply = await stub.Unary(Req())
            finally:
                otel_context.detach(token)
            bare = await stub.Unary(Req())
    assert reply.traceparent.split("-")[1] == trace_id
    assert trace_id not in bare.traceparent
