"""The health checker against untrusted records: bad ones skipped, floors kept, targets fenced."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator

from keel.coord import Session
from keel.registry import Discovery, HealthChecker
from keel.store import Store


class Counting:
    """A tiny HTTP server answering ``status`` to every request; records when each came."""

    def __init__(self, status: int = 200, host: str = "127.0.0.1", port: int = 0) -> None:
        self.status = status
        self.host = host
        self.times: list[float] = []
        self.arrived = asyncio.Event()
        self.port = port
        self._server: asyncio.Server | None = None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.times.append(time.monotonic())
        self.arrived.set()
        try:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(
                b"HTTP/1.1 %d X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n" % self.status
            )
            await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    async def probes(self, n: int, timeout_s: float = 15) -> None:
        """Wait until at least ``n`` connections arrived."""
        async with asyncio.timeout(timeout_s):
            while len(self.times) < n:
                self.arrived.clear()
                await self.arrived.wait()

    async def __aenter__(self) -> Counting:
        self._server = await asyncio.start_server(self._handle, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(1):
                await self._server.wait_closed()


@contextlib.asynccontextmanager
async def running(
    store: Store, *, allow_other_targets: bool = False
) -> AsyncIterator[asyncio.Future[None]]:
    """A HealthChecker running on its own session; yields its task."""
    async with Session(store, ttl_s=2) as session:
        task = asyncio.ensure_future(
            HealthChecker(session, node="hc", allow_other_targets=allow_other_targets).run()
        )
        try:
            yield task
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


def record(port: int, **check: object) -> bytes:
    """An instance record on 127.0.0.1:port with an HTTP check."""
    body = {
        "address": "127.0.0.1",
        "port": port,
        "check": {"interval_s": 1.0, "timeout_s": 0.5, **check},
    }
    return json.dumps(body).encode()


async def test_empty_record_does_not_stop_the_checker(store: Store) -> None:
    """A record {} present at the checker's first pass is skipped; others are still probed."""
    await store.put("services/legacy/x", b"{}")
    await store.put("services/legacy/y", b'{"address":"127.0.0.1","port":1,"check":[1]}')
    async with Counting(500) as broken, Discovery(store) as discovery:
        await store.put("services/web/b", record(broken.port, fall=1))
        async with running(store) as task:
            await store.put("services/legacy/z", b"{}")  # and one arriving by the watch
            async with asyncio.timeout(15):
                async for _ in discovery.subscribe("web"):
                    if await discovery.failing("web") == {"b"}:
                        break
            assert not task.done()


async def test_interval_below_the_floor_is_clamped(store: Store) -> None:
    """A record asking for a probe every microsecond is probed at most once a second."""
    async with Counting() as server, running(store) as task:
        await store.put("services/web/a", record(server.port, interval_s=1e-6, timeout_s=1e-6))
        await server.probes(3)
        gaps = [b - a for a, b in zip(server.times, server.times[1:], strict=False)]
        assert min(gaps) >= 0.9, gaps
        assert not task.done()


async def test_check_url_to_another_port_is_not_probed(store: Store) -> None:
    """Without allow_other_targets the checker probes only the instance's own address and port."""
    async with contextlib.AsyncExitStack() as stack:
        own = await stack.enter_async_context(Counting())
        other = await stack.enter_async_context(Counting())
        try:  # an address with a path in it once sent the probe to port 80 of that host
            port80 = await stack.enter_async_context(Counting(host="127.0.0.77", port=80))
        except OSError:
            port80 = None
        task = await stack.enter_async_context(running(store))
        target = f"http://127.0.0.1:{other.port}/healthz"
        await store.put("services/web/a", record(own.port, path=target))
        smuggled = json.loads(record(own.port))
        smuggled["address"] = "127.0.0.77/"
        await store.put("services/web/c", json.dumps(smuggled).encode())
        await store.put("services/web/b", record(own.port))
        await own.probes(2)  # the checker is working: b was probed twice
        assert other.times == []
        assert port80 is None or port80.times == []
        assert not task.done()


async def test_check_url_is_probed_when_the_operator_allows(store: Store) -> None:
    """With allow_other_targets=True a check URL naming another port is probed."""
    async with Counting() as own, Counting() as other, running(store, allow_other_targets=True):
        target = f"http://127.0.0.1:{other.port}/healthz"
        await store.put("services/web/a", record(own.port, path=target))
        await other.probes(1)
