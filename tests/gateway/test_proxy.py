"""Upstreams.forward against real upstream servers: what reaches them, what comes back."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

import keel
from keel.gateway._h1 import Connection
from keel.gateway._proxy import ResponseAbortedError, Target, Upstreams
from keel.gateway._wire import response_headers
from keel.registry import Discovery, Instance, Registry
from keel.store import Store
from tests.gateway._upstream_app import upstream

Message = MutableMapping[str, Any]


class Sent:
    """A capturing ASGI send."""

    def __init__(self) -> None:
        self.messages: list[Message] = []

    async def __call__(self, message: Message) -> None:
        self.messages.append(message)

    @property
    def status(self) -> int:
        return int(self.messages[0]["status"])

    @property
    def headers(self) -> dict[bytes, bytes]:
        return dict(self.messages[0]["headers"])

    @property
    def body(self) -> bytes:
        return b"".join(m.get("body", b"") for m in self.messages[1:])

    def json(self) -> Any:
        return json.loads(self.body)


def body(*chunks: bytes) -> Callable[[], Awaitable[Message]]:
    """An ASGI receive giving ``chunks`` as the request body, then waiting (as a live client)."""
    queue = [
        {"type": "http.request", "body": c, "more_body": i < len(chunks) - 1}
        for i, c in enumerate(chunks or (b"",))
    ]

    async def receive() -> Message:
        if queue:
            return queue.pop(0)
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    return receive


@pytest.fixture
async def store() -> AsyncIterator[Store]:
    async with keel.connect("memory://") as opened:
        yield opened


@contextlib.asynccontextmanager
async def upstreams(store: Store) -> AsyncIterator[Upstreams]:
    async with Discovery(store) as discovery, Upstreams(discovery) as opened:
        yield opened


async def call(
    u: Upstreams,
    target: Target,
    path: bytes,
    *chunks: bytes,
    method: str = "GET",
    headers: list[tuple[bytes, bytes]] | None = None,
) -> Sent:
    sent = Sent()
    async with asyncio.timeout(20):
        await u.forward(target, method, path, headers or [], body(*chunks), sent)
    return sent


def seen(echo: dict[str, Any], name: str) -> list[str]:
    return [v for k, v in echo["headers"] if k == name]


async def test_forwards_method_path_query_headers_and_body(store: Store) -> None:
    """Method, raw path, query, headers and body reach the upstream as sent."""
    async with upstream(store, "users"), upstreams(store) as u:
        headers = [(b"host", b"api.example"), (b"x-test", b"1"), (b"x-test", b"2")]
        sent = await call(
            u,
            Target(route="r", service="users"),
            b"/users/7%2F8?x=1&y=%20",
            b"hello ",
            b"world",
            method="PUT",
            headers=headers,
        )
    assert sent.status == 200
    echo = sent.json()
    assert (echo["method"], echo["raw_path"], echo["query"]) == ("PUT", "/users/7%2F8", "x=1&y=%20")
    assert seen(echo, "host") == ["api.example"]
    assert seen(echo, "x-test") == ["1", "2"]
    assert echo["body"] == "hello world"
    assert 0 < float(seen(echo, "keel-deadline")[0]) <= 30
    assert sent.headers[b"x-upstream"] == b"users:-"


async def test_a_body_of_unknown_length_streams_chunked(store: Store) -> None:
    """A body arriving in pieces without Content-Length reaches the upstream whole."""
    piece = b"y" * 65536
    async with upstream(store, "users"), upstreams(store) as u:
        sent = await call(
            u, Target(route="r", service="users"), b"/up", *[piece] * 20, method="POST"
        )
    assert sent.json()["body_bytes"] == 20 * 65536
    assert seen(sent.json(), "transfer-encoding") == ["chunked"]


async def test_version_and_labels_choose_instances(store: Store) -> None:
    """Targets with a version or labels only reach matching instances."""
    async with (
        upstream(store, "users", version="v1", metadata={"lane": "blue"}),
        upstream(store, "users", version="v2", metadata={"lane": "green"}),
        upstreams(store) as u,
    ):
        v2 = Target(route="r", service="users", version="v2")
        blue = Target(route="r", service="users", labels={"lane": "blue"})
        either = Target(route="r", service="users", version="v*")
        assert {(await call(u, v2, b"/")).json()["tag"] for _ in range(10)} == {"users:v2"}
        assert {(await call(u, blue, b"/")).json()["tag"] for _ in range(10)} == {"users:v1"}
        assert sorted(i.version for i in await u.picker.instances(either)) == ["v1", "v2"]


async def test_deadline_answers_504_and_propagates_downstream(store: Store) -> None:
    """Route timeout and incoming keel-deadline both bound the call; the rest goes downstream."""
    async with upstream(store, "users"), upstreams(store) as u:
        short = Target(route="r", service="users", timeout_s=0.3)
        timed_out = await call(u, short, b"/slow?s=5")
        assert timed_out.status == 504
        assert timed_out.json()["error"] == "gateway_timeout"
        long = Target(route="r", service="users")
        incoming = [(b"keel-deadline", b"0.2")]
        assert (await call(u, long, b"/slow?s=5", headers=incoming)).status == 504
        echo = (await call(u, long, b"/", headers=[(b"keel-deadline", b"4.5")])).json()
        assert 0 < float(seen(echo, "keel-deadline")[0]) <= 4.5
        assert u.statistics().timed_out == 2


async def test_no_instance_is_502_and_open_breakers_are_503(store: Store) -> None:
    """No instance: 502; an instance that refuses connections trips its breaker: then 503."""
    async with upstreams(store) as u:
        missing = await call(u, Target(route="r", service="nobody"), b"/")
        assert missing.status == 502
        refused = Target(route="r", service=None, url="http://127.0.0.1:9", retries=0)
        statuses = [(await call(u, refused, b"/")).status for _ in range(10)]
    assert statuses[0] == 502
    assert statuses[-1] == 503
    assert u.statistics().breakers_open == 1


async def test_fixed_url_with_base_path_and_head(store: Store) -> None:
    """A fixed URL's path prefixes the request's; HEAD answers with no body; the pool goes on."""
    async with upstream(store, "users") as service, upstreams(store) as u:
        target = Target(route="r", service=None, url=f"http://127.0.0.1:{service.port}/base")
        echo = (await call(u, target, b"/x?q=1")).json()
        assert (echo["path"], echo["query"]) == ("/base/x", "q=1")
        head = await call(u, target, b"/x", method="HEAD")
        assert (head.status, head.body) == (200, b"")
        assert (await call(u, target, b"/again")).json()["path"] == "/base/again"


async def test_trace_context_is_injected(store: Store) -> None:
    """With a span current, its W3C traceparent replaces the client's."""
    context = SpanContext(0xABC, 0xDEF, is_remote=False, trace_flags=TraceFlags(1))
    async with upstream(store, "users"), upstreams(store) as u:
        with trace.use_span(NonRecordingSpan(context)):
            client = [(b"traceparent", b"00-" + b"1" * 32 + b"-" + b"2" * 16 + b"-01")]
            echo = (await call(u, Target(route="r", service="users"), b"/", headers=client)).json()
    assert seen(echo, "traceparent") == [f"00-{0xABC:032x}-{0xDEF:016x}-01"]


async def test_an_upstream_failing_mid_body_aborts_the_response(store: Store) -> None:
    """Once the head is sent, an upstream reset raises instead of sending a second response."""

    async def half(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        length = b"100" if head.startswith(b"GET /small") else b"1000000"
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: " + length + b"\r\n\r\n0123456789")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(half, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server, upstreams(store) as u:
        sent = Sent()
        target = Target(route="r", service=None, url=f"http://127.0.0.1:{port}")
        with pytest.raises(ResponseAbortedError):
            await u.forward(target, "GET", b"/", [], body(), sent)
        # A small body is awaited whole before the head goes out: still time for a 502.
        small = await call(u, target, b"/small")
    assert [m["type"] for m in sent.messages][:1] == ["http.response.start"]
    assert sum(m["type"] == "http.response.start" for m in sent.messages) == 1
    assert u.statistics().aborted == 1
    assert small.status == 502


async def test_response_hop_by_hop_headers_are_removed() -> None:
    """Connection, Keep-Alive, Transfer-Encoding and headers named by Connection never pass."""
    conn = Connection(("http", "127.0.0.1", 1), asyncio.get_running_loop())
    conn.data_received(
        b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
        b"Connection: keep-alive, X-Private\r\nKeep-Alive: timeout=5\r\n"
        b"Transfer-Encoding: chunked\r\nX-Private: secret\r\nX-Public: ok\r\n\r\n0\r\n\r\n"
    )
    assert conn.complete
    assert response_headers(conn.headers) == [
        (b"content-type", b"text/plain"),
        (b"x-public", b"ok"),
    ]


async def test_idle_connections_closed_by_the_upstream_leave_the_pool(store: Store) -> None:
    """A kept-alive connection the upstream closes is dropped at once, and the next call works."""
    writers: list[asyncio.StreamWriter] = []

    async def keep_alive(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
            while True:
                await reader.readuntil(b"\r\n\r\n")
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")

    server = await asyncio.start_server(keep_alive, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server, upstreams(store) as u:
        target = Target(route="r", service=None, url=f"http://127.0.0.1:{port}")
        assert (await call(u, target, b"/")).body == b"ok"
        assert u.statistics().connections_idle == 1
        for writer in writers:
            writer.close()
        async with asyncio.timeout(5):
            while u.statistics().connections_open:  # noqa: ASYNC110 - polls a counter
                await asyncio.sleep(0.01)
        assert (await call(u, target, b"/")).body == b"ok"
        for writer in writers:
            writer.close()
            await writer.wait_closed()


async def test_a_post_never_sent_is_retried_elsewhere(store: Store) -> None:
    """Connection refused means the POST never left: it goes to the next instance."""
    async with upstream(store, "users"), upstreams(store) as u, Registry(store) as registry:
        for n in range(2):
            dead = Instance(service="users", address="127.0.0.1", port=closed_port(), id=f"dead{n}")
            await registry.register(dead)
        async with asyncio.timeout(5):
            while len(await u.picker.instances(Target(route="r", service="users"))) < 3:  # noqa: ASYNC110
                await asyncio.sleep(0.01)  # discovery's watch delivers the registrations
        target = Target(route="r", service="users", retries=2)
        sent = [await call(u, target, b"/orders", b"{}", method="POST") for _ in range(10)]
    assert [s.status for s in sent] == [200] * 10
    assert [s.json()["body"] for s in sent] == ["{}"] * 10
    assert u.statistics().retries >= 1


def closed_port() -> int:
    """A port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
