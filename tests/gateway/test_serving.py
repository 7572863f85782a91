"""The gateway's server side: coalesced writes, pipelining, the runtime layer it turns off."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import uvicorn
from uvicorn.server import ServerState

import keel
from keel.gateway._serving import CoalescingTransport, GatewayHttpProtocol
from keel.store import Store
from tests.gateway._gw import gateway, publish
from tests.gateway._upstream_app import upstream

DOC = {
    "routes": [
        {"id": "users", "match": {"path": "/users"}, "forward": {"service": "users"}},
        {"id": "slow", "match": {"path": "/slow"}, "forward": {"service": "users"}},
    ]
}


@pytest.fixture
async def mem() -> AsyncIterator[Store]:
    """A memory store."""
    async with keel.connect("memory://") as store:
        yield store


class _Recording(asyncio.Transport):
    """A transport that records each write call (what the socket would be asked to send)."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []
        self.closed = False
        self.aborted = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.writes.append(bytes(data))

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.aborted = True
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def get_write_buffer_size(self) -> int:
        return 0


async def test_writes_of_one_loop_pass_leave_together() -> None:
    """Head and body written in one step go out in one write, after the step."""
    raw = _Recording()
    transport = CoalescingTransport(raw, asyncio.get_running_loop())
    transport.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n")
    transport.write(b"hi")
    transport.write(b"")
    assert raw.writes == [] and transport.get_write_buffer_size() == 40
    await asyncio.sleep(0)
    assert raw.writes == [b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nhi"]
    assert transport.get_write_buffer_size() == 0
    transport.write(b"next")
    await asyncio.sleep(0)
    assert raw.writes[1:] == [b"next"]


async def test_one_callback_flushes_every_connection_of_a_pass() -> None:
    """Writes to several connections in one pass: one scheduled callback sends them all."""
    loop = asyncio.get_running_loop()
    raws = [_Recording() for _ in range(3)]
    transports = [CoalescingTransport(raw, loop) for raw in raws]
    scheduled: list[object] = []
    original = loop.call_soon

    def counting(callback: Any, *args: Any, **kwargs: Any) -> asyncio.Handle:
        scheduled.append(callback)
        return original(callback, *args, **kwargs)

    loop.call_soon = counting  # type: ignore[method-assign, assignment]
    try:
        for i, transport in enumerate(transports):
            transport.write(b"answer %d" % i)
        transports[0].write(b" more")
    finally:
        loop.call_soon = original  # type: ignore[method-assign]
    assert len(scheduled) == 1
    await asyncio.sleep(0)
    assert [raw.writes for raw in raws] == [[b"answer 0 more"], [b"answer 1"], [b"answer 2"]]
    transports[1].write(b"next pass")
    await asyncio.sleep(0)
    assert raws[1].writes[1:] == [b"next pass"]


async def test_close_flushes_abort_drops_and_a_closed_transport_gets_nothing() -> None:
    """close() sends what is queued first; abort() drops it; nothing goes to a closed one."""
    raw = _Recording()
    transport = CoalescingTransport(raw, asyncio.get_running_loop())
    transport.write(b"last words")
    transport.close()
    assert raw.writes == [b"last words"] and raw.closed
    await asyncio.sleep(0)  # the scheduled flush finds nothing
    assert raw.writes == [b"last words"]

    raw2 = _Recording()
    transport2 = CoalescingTransport(raw2, asyncio.get_running_loop())
    transport2.write(b"dropped")
    transport2.abort()
    await asyncio.sleep(0)
    assert raw2.writes == [] and raw2.aborted

    raw3 = _Recording()
    transport3 = CoalescingTransport(raw3, asyncio.get_running_loop())
    transport3.write(b"too late")
    raw3.closed = True  # the peer went away before the end of the pass
    await asyncio.sleep(0)
    assert raw3.writes == []
    assert transport3.get_extra_info("peername") is None  # the rest is the transport's


async def test_pipelined_requests_are_answered_in_order(mem: Store) -> None:
    """Several requests in one packet on one connection: every answer, in order, complete."""
    await publish(mem, DOC)
    async with upstream(mem, "users"), gateway(mem) as gw:
        reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
        request = "GET /users?n={} HTTP/1.1\r\nhost: gw\r\nx-request-id: r{}\r\n\r\n"
        writer.write("".join(request.format(i, i) for i in range(5)).encode())
        await writer.drain()
        for i in range(5):
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            assert head.startswith(b"HTTP/1.1 200 ")
            fields = dict(line.split(b": ", 1) for line in head.split(b"\r\n")[1:] if b": " in line)
            assert fields[b"x-request-id"] == f"r{i}".encode()
            body = await reader.readexactly(int(fields[b"content-length"]))
            assert json.loads(body)["query"] == f"n={i}"  # the echo of request i
        writer.close()
        await writer.wait_closed()


async def test_probes_answer_and_deadlines_hold_without_the_runtime_layer(mem: Store) -> None:
    """The gateway turns the runtime's per-request layer off: probes still answer there,
    and an incoming keel-deadline still bounds the upstream call (the proxy's budget)."""
    await publish(mem, DOC)
    async with (
        upstream(mem, "users"),
        gateway(mem) as gw,
        httpx.AsyncClient(base_url=gw.url) as http,
    ):
        assert gw.service is not None and gw.service.app.observe_http is False
        assert (await http.get("/healthz")).status_code == 200
        assert (await http.get("/readyz")).json()["ready"] is True
        assert "keel_gateway_requests_total" in (await http.get("/metrics")).text
        slow = await http.get("/slow", params={"s": "5"}, headers={"keel-deadline": "0.3"})
        assert slow.status_code == 504
        assert slow.headers["x-request-id"]
        timed = await http.get("/users", headers={"keel-deadline": "0.3"})
        assert timed.status_code == 200


async def _hello(scope: dict[str, Any], receive: Any, send: Any) -> None:
    await send(
        {"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]}
    )
    await send({"type": "http.response.body", "body": b"hi"})


async def test_keep_alive_closes_idle_connections_only() -> None:
    """One timer per idle period: a connection idle for the keep-alive timeout is closed,
    one that keeps sending requests is not (and each request is answered)."""
    config = uvicorn.Config(
        _hello, http=GatewayHttpProtocol, lifespan="off", timeout_keep_alive=0.3, access_log=False
    )
    config.load()
    request = b"GET / HTTP/1.1\r\nhost: x\r\n\r\n"
    busy, idle = _Recording(), _Recording()
    protocols = []
    for raw in (busy, idle):
        protocol = GatewayHttpProtocol(config=config, server_state=ServerState(), app_state={})
        protocol.connection_made(raw)
        protocol.data_received(request)
        protocols.append(protocol)
    for _ in range(6):  # 0.6 s of requests every 0.1 s on the busy one
        await asyncio.sleep(0.1)
        protocols[0].data_received(request)
    await asyncio.sleep(0.05)  # the last answer
    assert idle.closed and not busy.closed
    assert sum(w.startswith(b"HTTP/1.1 200") for w in busy.writes) == 7
    await asyncio.sleep(0.5)
    assert busy.closed
    for protocol, raw in zip(protocols, (busy, idle), strict=True):
        protocol.connection_lost(None)
        assert protocol.timeout_keep_alive_task is None, raw
