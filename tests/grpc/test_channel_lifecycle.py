"""A call's life through a Channel: restarts before a stream began, cancel, callbacks, close."""

from __future__ import annotations

import asyncio
import contextlib

import grpc
import pytest

from keel.balance import RoundRobin
from keel.grpc import Channel
from keel.store import Store
from tests.grpc import echo_pb2, echo_pb2_grpc
from tests.grpc._channel_util import free_port, plain_echo, put_instance

Req = echo_pb2.EchoRequest


@pytest.fixture(params=("sqlite", "etcd"))
def backend(request: pytest.FixtureRequest) -> str:
    """These tests run on the two real stores."""
    name: str = request.param
    return name


async def test_server_stream_refused_at_start_restarts_on_another_instance(store: Store) -> None:
    """A server stream whose instance refuses the connection starts again elsewhere."""
    async with plain_echo("live") as port:
        await put_instance(store, "echo", "dead", free_port())
        await put_instance(store, "echo", "live", port)
        async with Channel(store, "echo", balancer=RoundRobin) as channel, asyncio.timeout(20):
            stub = echo_pb2_grpc.EchoStub(channel)
            for _ in range(4):
                replies = [r.served_by async for r in stub.ServerStream(Req(count=2))]
                assert replies == ["live", "live"]
            stats = channel.statistics()
    assert stats.retries >= 2 and stats.failures == 0


async def test_cancel_and_done_callbacks_of_a_unary_call(store: Store) -> None:
    """cancel() ends a slow call as CANCELLED; done callbacks run once the call ends."""
    async with plain_echo("e") as port:
        await put_instance(store, "echo", "e", port)
        async with Channel(store, "echo") as channel, asyncio.timeout(10):
            stub = echo_pb2_grpc.EchoStub(channel)
            finished = asyncio.Event()
            call = stub.Unary(Req(delay_ms=5000), timeout=8)
            call.add_done_callback(lambda _: finished.set())
            waiting = asyncio.ensure_future(call.code())  # starts the call without awaiting it
            assert not call.done() and 7 < (call.time_remaining() or 0) <= 8
            assert call.cancel()
            assert await waiting is grpc.StatusCode.CANCELLED
            await finished.wait()
            assert call.cancelled() and call.done()
            with pytest.raises(asyncio.CancelledError):
                await call
            ok = stub.Unary(Req(text="after"))
            ok.add_done_callback(lambda c: seen.append(c))
            seen: list[object] = []
            assert (await ok).text == "after" and seen == [ok]
            assert await ok.details() == "" and await ok.code() is grpc.StatusCode.OK


async def test_close_with_grace_lets_calls_in_flight_finish(store: Store) -> None:
    """close(grace) waits for calls in flight; later calls fail as UNAVAILABLE."""
    async with plain_echo("e") as port:
        await put_instance(store, "echo", "e", port)
        channel = Channel(store, "echo")
        async with channel, asyncio.timeout(10):
            stub = echo_pb2_grpc.EchoStub(channel)
            await stub.Unary(Req())
            slow = asyncio.ensure_future(stub.Unary(Req(text="slow", delay_ms=300)))
            await asyncio.sleep(0.1)  # its first step (pick and send) runs before close()
            await channel.close(grace=5)
            assert (await slow).text == "slow"
            with pytest.raises(grpc.aio.AioRpcError, match="not open"):
                await stub.Unary(Req())


async def test_closing_a_stream_early_cancels_it(store: Store) -> None:
    """Closing a stream's iterator early (or cancel()) ends the stream on its instance."""
    async with plain_echo("e") as port:
        await put_instance(store, "echo", "e", port)
        async with Channel(store, "echo") as channel, asyncio.timeout(10):
            stub = echo_pb2_grpc.EchoStub(channel)
            call = stub.ServerStream(Req(count=100, delay_ms=20))
            got = []
            async with contextlib.aclosing(call.__aiter__()) as replies:
                async for reply in replies:
                    got.append(reply.text)
                    if len(got) == 2:
                        break
            assert call.done() and call.cancelled()
            other = stub.ServerStream(Req(count=100, delay_ms=20))
            assert (await other.read()).text == "#0"
            assert other.cancel() and other.done()
            assert (await stub.Unary(Req(text="still"))).text == "still"
    assert got == ["#0", "#1"]
