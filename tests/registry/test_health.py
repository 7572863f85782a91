"""The health checker against real small HTTP servers: marks with rise/fall, leader failover."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest

from keel.coord import Election, Session
from keel.registry import CheckState, Discovery, HealthCheck, HealthChecker, Instance, Registry
from keel.store import Store

CHECK = HealthCheck(type="http", path="/healthz", interval_s=1.0, timeout_s=0.3, rise=2, fall=2)


class Backend:
    """A tiny HTTP server whose /healthz answers ``status`` (0: never answers)."""

    def __init__(self, status: int) -> None:
        self.status = status
        self.server: asyncio.Server | None = None
        self.port = 0
        self.closing = asyncio.Event()
        self.writers: set[asyncio.StreamWriter] = set()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.writers.add(writer)
        try:
            await reader.readuntil(b"\r\n\r\n")
            if self.status == 0:
                await self.closing.wait()
                return
            reason = b"OK" if self.status < 400 else b"Error"
            writer.write(
                b"HTTP/1.1 %d %s\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                % (self.status, reason)
            )
            await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self.writers.discard(writer)
            writer.close()

    async def __aenter__(self) -> Backend:
        self.server = await asyncio.start_server(self.handle, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.closing.set()
        for writer in list(self.writers):
            writer.close()
        self.server.close()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(1):
                await self.server.wait_closed()


def test_rise_and_fall_thresholds() -> None:
    """fall failures in a row mark failing; rise successes in a row clear it; mixed runs reset."""
    check = HealthCheck(rise=2, fall=3)
    state = CheckState()
    assert [state.record(ok, check) for ok in (False, False, True, False, False)] == [False] * 5
    assert state.record(False, check) and state.failing
    assert not state.record(True, check) and state.failing
    assert state.record(True, check) and not state.failing


@contextlib.asynccontextmanager
async def checker(store: Store, node: str) -> AsyncIterator[HealthChecker]:
    """A health checker running on its own session until the block ends."""
    async with Session(store, ttl_s=2) as session:
        hc = HealthChecker(session, node=node)
        task = asyncio.ensure_future(hc.run())
        try:
            yield hc
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def wait_ids(discovery: Discovery, ids: set[str], timeout_s: float = 15) -> None:
    """Wait until the healthy list is exactly ``ids``."""
    async with asyncio.timeout(timeout_s):
        async for snapshot in discovery.subscribe("web"):
            if {i.id for i in snapshot} == ids:
                return


@pytest.mark.slow
async def test_checker_marks_broken_and_hanging_instances(store: Store) -> None:
    """500 and hanging instances are marked failing, a healthy one is not; fixed ones return."""
    async with (
        Backend(200) as good,
        Backend(500) as broken,
        Backend(0) as hanging,
        Registry(store) as registry,
        Discovery(store) as discovery,
        checker(store, "hc-1"),
    ):
        for name, backend in (("good", good), ("broken", broken), ("hanging", hanging)):
            await registry.register(
                Instance(
                    service="web", address="127.0.0.1", port=backend.port, id=name, check=CHECK
                )
            )
        await wait_ids(discovery, {"good"})
        assert await discovery.failing("web") == {"broken", "hanging"}
        broken.status = 200
        await wait_ids(discovery, {"good", "broken"})


@pytest.mark.slow
async def test_checker_leader_failover(store: Store) -> None:
    """When the leading checker stops, another takes over and keeps marking."""
    async with (
        Backend(200) as good,
        Backend(500) as bad,
        Registry(store) as registry,
        Discovery(store) as discovery,
        checker(store, "hc-2") as second,
    ):
        async with checker(store, "hc-1"):
            await registry.register(
                Instance(service="web", address="127.0.0.1", port=good.port, id="g", check=CHECK)
            )
            await registry.register(
                Instance(service="web", address="127.0.0.1", port=bad.port, id="b", check=CHECK)
            )
            await wait_ids(discovery, {"g"})
        async with Session(store) as observer:
            async with asyncio.timeout(10):
                async for leader in Election(observer, "registry/health-checker").observe():
                    if leader is not None and leader.value == b"hc-2":
                        break
        bad.status = 200
        await wait_ids(discovery, {"g", "b"})
        assert second.probes > 0
