"""keel.grpc.Server in a child process: SIGTERM drains in order, in-flight calls finish, exit 0."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

import keel
from keel.registry import decode_instance
from keel.registry._model import instance_key, service_prefix
from keel.store import EventType, Store
from tests._procs import Child, Children
from tests.conftest import make_url
from tests.grpc import echo_pb2, echo_pb2_grpc

pytestmark = pytest.mark.slow

DRAIN_ENV = {"KEEL_SERVICE_DRAIN_DELAY_S": "1.0", "KEEL_SERVICE_GRACE_S": "10"}
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


async def _accepts(port: int) -> bool:
    """Whether a TCP connection to the port is accepted now."""
    try:
        _, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        return False
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return True


class _Timeline:
    """What the parent observed, with monotonic times."""

    def __init__(self) -> None:
        self.at: dict[str, float] = {}

    def mark(self, what: str) -> None:
        self.at.setdefault(what, time.monotonic())


async def _watch_store(store: Store, events: AsyncIterator, seen: _Timeline, port: int) -> None:  # type: ignore[type-arg]
    async for event in events:
        if event.type is EventType.DELETE:
            seen.mark("deleted")
            return
        if decode_instance(event.kv.key, event.kv.value).status == "DRAINING":
            seen.mark("draining")
            assert await _accepts(port), "the port closed while the instance was DRAINING"


async def _watch_health(channel: grpc.aio.Channel, seen: _Timeline) -> None:
    call = health_pb2_grpc.HealthStub(channel).Watch(
        health_pb2.HealthCheckRequest(service="keel.test.Echo")
    )
    with contextlib.suppress(grpc.aio.AioRpcError):
        async for reply in call:
            if reply.status == NOT_SERVING:
                seen.mark("not-serving")


async def _probe_port(store: Store, key: str, port: int, seen: _Timeline) -> None:
    """Connect until the port refuses; the instance must already be gone by then."""
    while True:  # observing another process's socket: there is no event to wait on
        if not await _accepts(port):
            break
        await asyncio.sleep(0.01)
    seen.mark("refused")
    assert await store.get(key) is None, "the port closed before the instance was deregistered"


async def _slow_bidi(
    channel: grpc.aio.Channel, started: asyncio.Event, seen: _Timeline
) -> list[str]:
    """A bidi call that is in flight when SIGTERM comes and needs 1.5 s more after it."""
    call = echo_pb2_grpc.EchoStub(channel).Bidi()
    await call.write(echo_pb2.EchoRequest(text="first"))
    replies = [(await call.read()).text]
    started.set()
    await call.write(echo_pb2.EchoRequest(text="slow", delay_ms=1500))
    await call.done_writing()
    while (reply := await call.read()) is not grpc.aio.EOF:
        replies.append(reply.text)
    assert await call.code() is grpc.StatusCode.OK
    seen.mark("slow-done")
    return replies


@pytest.mark.parametrize("backend", ["sqlite", "etcd"])
async def test_sigterm_drains_in_order_and_finishes_in_flight_calls(
    backend: str, request: pytest.FixtureRequest, tmp_path: Path, children: Children
) -> None:
    """NOT_SERVING and DRAINING, deleted before the port refuses, the slow call ends OK, exit 0."""
    url = make_url(backend, request, tmp_path)
    seen = _Timeline()
    async with keel.connect(url) as store, store.watch(service_prefix("echo"), prefix=True) as ev:
        child: Child = await children.start("tests.grpc._server_child", "echo", url, env=DRAIN_ENV)
        port_text, instance_id = await child.expect("READY", timeout_s=30)
        port = int(port_text)
        key = instance_key("echo", instance_id)
        registered = await anext(aiter(ev))
        assert registered.type is EventType.PUT
        async with asyncio.timeout(30), grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            in_flight = asyncio.Event()
            async with asyncio.TaskGroup() as tasks:
                health = tasks.create_task(_watch_health(channel, seen))
                slow = tasks.create_task(_slow_bidi(channel, in_flight, seen))
                await in_flight.wait()
                child.signal(signal.SIGTERM)
                tasks.create_task(_watch_store(store, ev, seen, port))
                tasks.create_task(_probe_port(store, key, port, seen))
            assert health.done()
            assert slow.result() == ["first", "slow"]
        await child.expect("STOPPED", timeout_s=30)
        seen.mark("stopped")
        assert await child.wait(30) == 0
    assert set(seen.at) == {
        *("not-serving", "draining", "deleted"),
        *("refused", "slow-done", "stopped"),
    }
    # The health watch, open till the end, did not hold the stop for the whole grace (10 s).
    assert seen.at["stopped"] - seen.at["slow-done"] < 5.0
    # "deleted before the port refuses" is checked where the refusal is seen (a store
    # read); the watch may deliver the DELETE a moment after the probe saw the refusal.
    assert seen.at["not-serving"] < seen.at["refused"]
    assert seen.at["draining"] < seen.at["deleted"]
    assert seen.at["draining"] < seen.at["refused"] < seen.at["slow-done"]


async def test_a_second_sigterm_stops_waiting_for_in_flight_calls(
    tmp_path: Path, children: Children
) -> None:
    """With a 60 s grace, a second SIGTERM cancels the slow call at once; still exit 0."""
    url = f"sqlite:///{tmp_path / 'keel.db'}"
    env = {"KEEL_SERVICE_DRAIN_DELAY_S": "0", "KEEL_SERVICE_GRACE_S": "60"}
    child = await children.start("tests.grpc._server_child", "echo", url, env=env)
    port = int((await child.expect("READY", timeout_s=30))[0])
    async with asyncio.timeout(30), grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        call = echo_pb2_grpc.EchoStub(channel).Bidi()
        await call.write(echo_pb2.EchoRequest(text="first"))
        assert (await call.read()).text == "first"
        await call.write(echo_pb2.EchoRequest(text="slow", delay_ms=50_000))
        child.signal(signal.SIGTERM)
        await _deregistered(url)
        child.signal(signal.SIGTERM)
        with pytest.raises(grpc.aio.AioRpcError):
            await call.read()
        await child.expect("STOPPED", timeout_s=20)
        assert await child.wait(20) == 0


async def _deregistered(url: str) -> None:
    """Wait until no echo instance is registered (the drain reached the server's stop)."""
    async with keel.connect(url) as store:
        prefix = service_prefix("echo")
        async with store.watch(prefix, prefix=True) as events:
            if (await store.range(prefix))[0]:
                async for event in events:
                    if event.type is EventType.DELETE:
                        break
