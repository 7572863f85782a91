"""keel.grpc.Channel across restarts and crashes of real server processes (sqlite, etcd)."""

from __future__ import annotations

import asyncio
import signal
from collections import Counter
from pathlib import Path

import grpc
import pytest

import keel
from keel.balance import OutlierSettings, RoundRobin
from keel.grpc import Channel, ChannelSettings
from keel.resilience import BreakerSettings, RetryBudgetSettings
from tests._procs import Child, Children
from tests.conftest import make_url
from tests.grpc import echo_pb2, echo_pb2_grpc
from tests.grpc._channel_util import free_port

pytestmark = pytest.mark.slow

Req = echo_pb2.EchoRequest
CHILD = "tests.grpc._channel_child"
FAST = {"KEEL_SERVICE_DRAIN_DELAY_S": "0.5", "KEEL_SERVICE_GRACE_S": "5"}


@pytest.fixture(params=("sqlite", "etcd"))
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A store URL of this test on each real store."""
    return make_url(request.param, request, tmp_path)


async def _start(
    children: Children, url: str, name: str, port: int = 0, env: dict[str, str] | None = None
) -> Child:
    child = await children.start(CHILD, "echo", url, name, port, env={**FAST, **(env or {})})
    await child.expect("READY", timeout_s=60)
    return child


async def _stop(child: Child) -> None:
    child.signal(signal.SIGTERM)
    await child.expect("STOPPED", timeout_s=30)
    assert await child.wait() == 0


async def test_rolling_restart_under_unary_load_fails_no_call(children: Children, url: str) -> None:
    """Start new, SIGTERM old, twice, under a steady unary loop: not one call fails."""
    old = [await _start(children, url, "a"), await _start(children, url, "b")]
    served: Counter[str] = Counter()
    failures: list[grpc.aio.AioRpcError] = []
    stop = asyncio.Event()
    async with keel.connect(url) as store, Channel(store, "echo") as channel:
        stub = echo_pb2_grpc.EchoStub(channel)

        async def caller() -> None:
            for _ in range(20_000):  # bounded; stops at the event
                if stop.is_set():
                    return
                try:
                    served[(await stub.Unary(Req(delay_ms=2), timeout=5)).served_by] += 1
                except grpc.aio.AioRpcError as exc:
                    failures.append(exc)

        async with asyncio.timeout(120), asyncio.TaskGroup() as tasks:
            for _ in range(4):
                tasks.create_task(caller())
            for old_one, new_name in zip(old, ("c", "d"), strict=True):
                await _start(children, url, new_name)
                await _stop(old_one)
            before = served["c"] + served["d"]
            for _ in range(200):  # the loop keeps going on the new instances
                if served["c"] + served["d"] > before + 50:
                    break
                await asyncio.sleep(0.05)
            stop.set()
        await channel.close()
    assert failures == [], failures[:3]
    assert served["a"] and served["b"] and served["c"] and served["d"], served


async def test_server_streams_across_a_restart_end_or_fail_never_hang(
    children: Children, url: str
) -> None:
    """A stream cut by a restart raises to the caller; later streams go to the live instance."""
    env = {"KEEL_SERVICE_GRACE_S": "0.3"}
    first = await _start(children, url, "a", env=env)
    outcomes: Counter[str] = Counter()
    stop = asyncio.Event()
    async with keel.connect(url) as store, Channel(store, "echo") as channel:
        stub = echo_pb2_grpc.EchoStub(channel)

        async def streamer() -> None:
            for _ in range(200):  # bounded; stops at the event
                if stop.is_set():
                    return
                try:
                    async with asyncio.timeout(5):  # a hung stream fails the test
                        got = [r async for r in stub.ServerStream(Req(count=10, delay_ms=50))]
                    outcomes["complete" if len(got) == 10 else "short"] += 1
                except grpc.aio.AioRpcError:
                    outcomes["error"] += 1

        async def long_stream() -> None:
            long = stub.ServerStream(Req(count=100, delay_ms=100))  # 10 s: outlives the grace
            assert (await long.read()).served_by == "a"
            started.set()
            with pytest.raises(grpc.aio.AioRpcError):
                async with asyncio.timeout(15):
                    async for _ in long:
                        pass

        started = asyncio.Event()
        async with asyncio.timeout(90), asyncio.TaskGroup() as tasks:
            tasks.create_task(long_stream())
            for _ in range(3):
                tasks.create_task(streamer())
            await started.wait()
            await _start(children, url, "b", env=env)
            await _stop(first)
            stop.set()
        async with asyncio.timeout(10):
            after = {r.served_by async for r in stub.ServerStream(Req(count=2))}
    assert outcomes["short"] == 0, outcomes
    assert outcomes["complete"] > 0, outcomes
    assert after == {"b"}


async def test_kill9_retries_idempotent_calls_opens_breaker_and_recovers(
    children: Children, url: str
) -> None:
    """kill -9 of one of two: idempotent calls go to the other, its breaker opens, then heals."""
    port_a = free_port()
    env = {"KEEL_SERVICE_TTL_S": "60"}  # the dead instance's record outlives the test
    a = await _start(children, url, "a", port_a, env)
    await _start(children, url, "b", 0, env)
    settings = ChannelSettings(
        idempotent_methods={"/keel.test.Echo/Unary"},
        budget=RetryBudgetSettings(ratio=1.0, min_retries_per_s=100),
        breaker=BreakerSettings(window_size=10, minimum_calls=3, open_duration_s=1.0),
        outlier=OutlierSettings(consecutive_failures=5, base_ejection_s=0.5, max_ejection_s=1),
    )
    served: Counter[str] = Counter()
    failures: list[grpc.aio.AioRpcError] = []
    async with (
        keel.connect(url) as store,
        Channel(store, "echo", settings=settings, balancer=RoundRobin) as ch,
    ):
        stub = echo_pb2_grpc.EchoStub(ch)
        dead_id = f"127.0.0.1:{port_a}"

        async def calls(n: int) -> None:
            async def one() -> None:
                try:
                    served[(await stub.Unary(Req(delay_ms=30), timeout=5)).served_by] += 1
                except grpc.aio.AioRpcError as exc:
                    failures.append(exc)

            await asyncio.gather(*(one() for _ in range(n)))

        async with asyncio.timeout(90):
            await calls(20)
            assert served["a"] > 0
            in_flight = asyncio.ensure_future(calls(8))
            await asyncio.sleep(0.01)
            a.kill9()
            await in_flight
            for _ in range(100):  # bounded: until the dead one's breaker opens
                await calls(4)
                if dead_id in ch.statistics().open_breakers:
                    break
            assert dead_id in ch.statistics().open_breakers
            served.clear()
            await _start(children, url, "a2", port_a, env)
            for _ in range(200):  # bounded: until the returned instance gets calls
                await calls(4)
                if served["a2"]:
                    break
    assert failures == [], failures[:3]
    assert served["a2"] > 0 and ch.statistics().retries > 0
