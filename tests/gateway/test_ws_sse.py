"""Server-sent events and WebSockets pass through a gateway process as they happen."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed, InvalidStatus

import keel
from tests._procs import Children
from tests.gateway import _proxy_gateway
from tests.gateway._security_child import publish_routes, start_gateway
from tests.gateway._upstream_app import start_child

pytestmark = pytest.mark.slow


async def test_sse_events_arrive_as_they_are_sent(children: Children, tmp_path: Path) -> None:
    """Each event reaches the client when the upstream sends it, not when the stream ends."""
    url = f"sqlite:///{tmp_path}/keel.db"
    await start_child(children, "events", url)
    _, port = await _proxy_gateway.start(children, url, "events")
    arrivals: list[tuple[float, str]] = []
    async with (
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as client,
        asyncio.timeout(20),
        client.stream("GET", "/sse?n=5&interval=0.25") as response,
    ):
        assert response.headers["content-type"] == "text/event-stream"
        arrivals.extend(
            [
                (time.monotonic(), line[6:])
                async for line in response.aiter_lines()
                if line[:6] == "data: "
            ]
        )
    assert [data for _, data in arrivals] == ["0", "1", "2", "3", "4"]
    # Buffered, all five would land together; streamed, they span the upstream's 4 pauses.
    assert arrivals[-1][0] - arrivals[0][0] >= 0.5


async def test_websocket_echo_text_binary_and_ping(children: Children, tmp_path: Path) -> None:
    """Text stays text, bytes stay bytes, pings are answered, a clean close is clean."""
    url = f"sqlite:///{tmp_path}/keel.db"
    await start_child(children, "chat", url)
    _, port = await _proxy_gateway.start(children, url, "chat")
    async with asyncio.timeout(20), connect(f"ws://127.0.0.1:{port}/ws") as ws:
        await ws.send("hello")
        assert await ws.recv() == "hello"
        await ws.send(b"\x00\x01binary")
        assert await ws.recv() == b"\x00\x01binary"
        await (await ws.ping())
        await ws.close(1000)
    assert ws.close_code == 1000


async def test_websocket_close_codes_pass_both_ways(children: Children) -> None:
    """The upstream's close code reaches the client, and the client's reaches the upstream."""
    closed_by_client: asyncio.Future[int | None] = asyncio.get_running_loop().create_future()

    async def handler(ws: ServerConnection) -> None:
        try:
            async for message in ws:
                if message == "close me":
                    await ws.close(4003, "bye")
                    return
                await ws.send(message)
        except ConnectionClosed:
            pass
        if not closed_by_client.done():
            closed_by_client.set_result(ws.close_code)

    async with serve(handler, "127.0.0.1", 0) as server:
        ws_port = server.sockets[0].getsockname()[1] if server.sockets else 0
        upstream = f"http://127.0.0.1:{ws_port}"
        _, port = await _proxy_gateway.start(children, "memory://", "chat", url=upstream)
        async with asyncio.timeout(20):
            async with connect(f"ws://127.0.0.1:{port}/ws") as ws:
                await ws.send("close me")
                with pytest.raises(ConnectionClosed):
                    await ws.recv()
            assert (ws.close_code, ws.close_reason) == (4003, "bye")
            async with connect(f"ws://127.0.0.1:{port}/ws") as ws:
                await ws.send("ping?")
                assert await ws.recv() == "ping?"
                await ws.close(4001, "done")
            assert await closed_by_client == 4001


async def test_websocket_without_upstream_is_refused(children: Children) -> None:
    """No upstream accepts: the client's handshake is refused with 502."""
    _, port = await _proxy_gateway.start(children, "memory://", "x", url="http://127.0.0.1:9")
    async with asyncio.timeout(20):
        with pytest.raises(InvalidStatus) as refused:
            await connect(f"ws://127.0.0.1:{port}/ws")
    assert refused.value.response.status_code == 502


async def test_sse_and_websocket_through_keel_gateway(children: Children, tmp_path: Path) -> None:
    """The same pass-through behind keel's Gateway (routes from the config center)."""
    url = f"sqlite:///{tmp_path}/keel.db"
    await start_child(children, "live", url)
    async with keel.connect(url) as store:
        routes = {
            "routes": [{"id": "live", "match": {"path": "/"}, "forward": {"service": "live"}}]
        }
        await publish_routes(store, routes)
    _, base = await start_gateway(children, url)
    async with (
        httpx.AsyncClient(base_url=base, timeout=10) as client,
        asyncio.timeout(30),
    ):
        for _ in range(500):  # the gateway may serve before its first document is compiled
            if (await client.get("/ready-probe")).status_code == 200:
                break
            await asyncio.sleep(0.02)
        async with client.stream("GET", "/sse?n=3&interval=0.05") as response:
            lines = [line async for line in response.aiter_lines() if line.startswith("data: ")]
        assert lines == ["data: 0", "data: 1", "data: 2"]
        async with connect(base.replace("http://", "ws://") + "/ws") as ws:
            await ws.send("through keel")
            assert await ws.recv() == "through keel"
