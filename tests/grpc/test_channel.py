"""keel.grpc.Channel against real servers on loopback, instances found in sqlite and etcd."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator

import grpc
import pytest

from keel.balance import RoundRobin
from keel.errors import NoInstanceError
from keel.grpc import Channel, ChannelSettings, NoInstanceRpcError, Server
from keel.registry import Discovery
from keel.resilience import deadline
from keel.store import Store
from tests.grpc import echo_pb2, echo_pb2_grpc
from tests.grpc._channel_util import free_port, plain_echo, put_instance
from tests.grpc._echo import EchoService

Req = echo_pb2.EchoRequest


@pytest.fixture(params=("sqlite", "etcd"))
def backend(request: pytest.FixtureRequest) -> str:
    """The channel tests run on the two real stores."""
    name: str = request.param
    return name


async def _texts(*texts: str) -> AsyncIterator[echo_pb2.EchoRequest]:
    for text in texts:
        yield Req(text=text)


async def _wait_instances(channel: Channel, n: int) -> None:
    assert channel.discovery is not None
    async with asyncio.timeout(10):
        async for found in channel.discovery.subscribe(channel.service):
            if len(found) == n:
                return


async def test_four_call_modes_through_a_keel_server(store: Store) -> None:
    """Unary, server, client and bidi streaming reach a keel.grpc.Server found by name."""
    server = Server("echo", store=store, port=0, host="127.0.0.1")
    server.add(echo_pb2_grpc.add_EchoServicer_to_server, EchoService("keel"))
    async with server, Channel(store, "echo") as channel:
        stub = echo_pb2_grpc.EchoStub(channel)
        async with asyncio.timeout(10):
            reply = await stub.Unary(Req(text="hi"), timeout=5)
            streamed = [r.text async for r in stub.ServerStream(Req(text="s", count=3))]
            joined = await stub.ClientStream(_texts("a", "b", "c"))
            bidi = [r.text async for r in stub.Bidi(_texts("x", "y"))]
    assert reply.text == "hi" and 0 < reply.deadline_left_s <= 5.1
    assert streamed == ["s#0", "s#1", "s#2"]
    assert joined.text == "a,b,c"
    assert bidi == ["x", "y"]
    assert channel.statistics().calls == 4 and channel.statistics().failures == 0


async def test_plain_grpc_server_registered_by_hand_is_callable(store: Store) -> None:
    """A non-keel grpc.aio server written in the documented JSON layout is callable."""
    async with plain_echo("plain") as port:
        await put_instance(store, "legacy", "box-1", port)
        async with Channel(store, "legacy") as channel:
            stub = echo_pb2_grpc.EchoStub(channel)
            async with asyncio.timeout(10):
                reply = await stub.Unary(Req(text="hello"))
                call = stub.Unary(Req(text="meta"))
                code = await call.code()
                assert (await call).text == "meta"
    assert reply.served_by == "plain"
    assert code is grpc.StatusCode.OK


async def test_calls_spread_over_two_instances(store: Store) -> None:
    """Concurrent calls go to both instances (P2C-EWMA); round robin alternates."""
    async with plain_echo("a") as pa, plain_echo("b") as pb:
        await put_instance(store, "echo", "a", pa)
        await put_instance(store, "echo", "b", pb)
        async with Channel(store, "echo") as channel:
            stub = echo_pb2_grpc.EchoStub(channel)
            async with asyncio.timeout(20):
                for _ in range(5):  # bounded: warm both instances, then measure
                    replies = await asyncio.gather(
                        *(stub.Unary(Req(delay_ms=5)) for _ in range(64))
                    )
                    spread = Counter(r.served_by for r in replies)
                    if len(spread) == 2:
                        break
        assert set(spread) == {"a", "b"}, spread
        async with Channel(store, "echo", balancer=RoundRobin) as channel:
            stub = echo_pb2_grpc.EchoStub(channel)
            async with asyncio.timeout(10):
                order = [(await stub.Unary(Req())).served_by for _ in range(6)]
        assert Counter(order) == {"a": 3, "b": 3}


async def test_no_instance_fails_fast_naming_the_service(store: Store) -> None:
    """A name without instances fails at once with UNAVAILABLE naming it, for every mode."""
    async with Channel(store, "ghost") as channel:
        stub = echo_pb2_grpc.EchoStub(channel)
        start = time.monotonic()
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.Unary(Req(), timeout=5)
        assert time.monotonic() - start < 0.5
        with pytest.raises(NoInstanceRpcError):
            stub.ServerStream(Req())
        with pytest.raises(NoInstanceError):
            stub.Bidi(_texts("x"))
    assert caught.value.code() is grpc.StatusCode.UNAVAILABLE
    assert "'ghost'" in (caught.value.details() or "")
    assert isinstance(caught.value, NoInstanceError)


async def test_other_schemes_and_malformed_records_are_skipped(store: Store) -> None:
    """An http instance and a malformed record are skipped; the gRPC one gets every call."""
    async with plain_echo("good") as port, plain_echo("http-one") as other:
        await put_instance(store, "mixed", "web", other, scheme="http")
        await store.put("services/mixed/broken", b'{"address": ["x"], "port": "no"')
        await store.put("services/mixed/list", b"[1, 2, 3]")
        await put_instance(store, "mixed", "rpc", port)
        async with Channel(store, "mixed") as channel:
            stub = echo_pb2_grpc.EchoStub(channel)
            async with asyncio.timeout(10):
                served = {(await stub.Unary(Req())).served_by for _ in range(10)}
            stats = channel.statistics()
        await put_instance(store, "webonly", "web", other, scheme="http")
        async with Channel(store, "webonly") as channel:
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await echo_pb2_grpc.EchoStub(channel).Unary(Req())
    assert served == {"good"}
    assert stats.instances == 1 and stats.skipped >= 1
    assert caught.value.code() is grpc.StatusCode.UNAVAILABLE
    assert "scheme 'grpc'" in (caught.value.details() or "")


async def test_unsent_calls_retry_elsewhere_and_sent_ones_only_when_idempotent(
    store: Store,
) -> None:
    """Connection refused is retried on another instance; a sent UNAVAILABLE only if idempotent."""
    async with plain_echo("live") as port:
        await put_instance(store, "echo", "dead", free_port())
        await put_instance(store, "echo", "live", port)
        settings = ChannelSettings(idempotent_methods={"/keel.test.Echo/ClientStream"})
        async with Channel(store, "echo", balancer=RoundRobin, settings=settings) as channel:
            stub = echo_pb2_grpc.EchoStub(channel)
            async with asyncio.timeout(20):
                served = [(await stub.Unary(Req(), timeout=5)).served_by for _ in range(6)]
                retries = channel.statistics().retries
                unavailable = Req(fail_code=grpc.StatusCode.UNAVAILABLE.value[0])
                with pytest.raises(grpc.aio.AioRpcError):
                    await stub.Unary(unavailable)
                plain = channel.statistics().retries
                with pytest.raises(grpc.aio.AioRpcError) as caught:
                    await stub.Unary(unavailable, idempotent=True)
                marked = channel.statistics().retries
    assert served == ["live"] * 6
    assert retries >= 3
    assert plain == retries  # sent and not idempotent: not retried
    assert marked > plain  # idempotent: retried
    assert caught.value.code() is grpc.StatusCode.UNAVAILABLE


async def test_caller_timeout_gives_deadline_exceeded_without_retry(store: Store) -> None:
    """A slow instance past the caller's timeout gives DEADLINE_EXCEEDED at that time."""
    async with plain_echo("slow") as port:
        await put_instance(store, "echo", "slow", port)
        async with Channel(store, "echo") as channel:
            stub = echo_pb2_grpc.EchoStub(channel)
            await stub.Unary(Req())  # connect first
            start = time.monotonic()
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await stub.Unary(Req(delay_ms=2000), timeout=0.3, idempotent=True)
            took = time.monotonic() - start
            async with deadline(0.4):
                left = (await stub.Unary(Req())).deadline_left_s
    assert caught.value.code() is grpc.StatusCode.DEADLINE_EXCEEDED
    assert 0.25 < took < 0.8
    assert channel.statistics().retries == 0
    assert 0 < left <= 0.45


async def test_instances_leaving_and_joining_follow_discovery(store: Store) -> None:
    """A new instance gets calls without a restart; a deregistered one's sub-channel closes."""
    settings = ChannelSettings(close_grace_s=0.1)
    async with plain_echo("one") as p1, plain_echo("two") as p2:
        await put_instance(store, "echo", "one", p1)
        async with Channel(store, "echo", settings=settings, balancer=RoundRobin) as channel:
            stub = echo_pb2_grpc.EchoStub(channel)
            async with asyncio.timeout(15):
                assert (await stub.Unary(Req())).served_by == "one"
                await put_instance(store, "echo", "two", p2)
                await _wait_instances(channel, 2)
                assert {(await stub.Unary(Req())).served_by for _ in range(4)} == {"one", "two"}
                await store.delete("services/echo/one")
                await _wait_instances(channel, 1)
                assert {(await stub.Unary(Req())).served_by for _ in range(4)} == {"two"}
                for _ in range(100):  # the old sub-channel closes after its grace
                    if channel.statistics().subchannels == 1:
                        break
                    await asyncio.sleep(0.05)
                assert channel.statistics().subchannels == 1


async def test_shared_discovery_and_target_override(store: Store) -> None:
    """A Channel can share the caller's Discovery; target_override bypasses discovery."""
    async with plain_echo("fixed") as port:
        await put_instance(store, "echo", "x", port)
        async with Discovery(store) as discovery, Channel(discovery, "echo") as shared:
            reply = await echo_pb2_grpc.EchoStub(shared).Unary(Req(), timeout=5)
        async with Channel(None, "echo", target_override=f"127.0.0.1:{port}") as fixed:
            direct = await echo_pb2_grpc.EchoStub(fixed).Unary(Req(), timeout=5)
            assert "target=grpc://127.0.0.1" in repr(fixed)
    assert reply.served_by == direct.served_by == "fixed"
