"""The relay (plain forwards without the ASGI layer) against the app: same answers, same rules."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from prometheus_client import CollectorRegistry

import keel
from keel.gateway import Gateway
from keel.gateway._settings import UpstreamSettings
from keel.store import Store
from tests.gateway._gw import gateway, publish
from tests.gateway._upstream_app import upstream

KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


def _document(raw_port: int = 9, pem: Path | None = None) -> dict[str, Any]:
    raw = {"url": f"http://127.0.0.1:{raw_port}", "timeout_s": 0.5, "retries": 0}
    routes: list[dict[str, Any]] = [
        {"id": "plain", "match": {"path": "/api/"}, "forward": {"service": "users"}},
        {
            "id": "strip",
            "match": {"path": "/s/"},
            "forward": {"service": "users", "strip_prefix": True},
            "request_headers": {"set": {"x-env": "test"}, "remove": ["x-secret"]},
        },
        {
            "id": "tagged",
            "match": {"path": "/tagged/"},
            "forward": {"service": "users"},
            "response_headers": {"set": {"x-served-by": "keel"}},
        },
        {
            "id": "vhost",
            "match": {"path": "/v/"},
            "forward": {"service": "users"},
            "request_headers": {"set": {"host": "users.internal"}},
        },
        {"id": "raw", "match": {"path": "/raw/"}, "forward": raw},
        {
            "id": "short",
            "match": {"path": "/slow"},
            "forward": {"service": "users", "timeout_s": 0.3},
        },
    ]
    document: dict[str, Any] = {"routes": routes}
    if pem is not None:
        document["jwt"] = {
            "main": {"algorithms": ["RS256"], "audience": "t", "issuer": "i", "key_file": str(pem)}
        }
        routes.append(
            {
                "id": "secure",
                "match": {"path": "/secure/"},
                "forward": {"service": "users"},
                "auth": {"jwt": "main"},
                "limits": {"rate": [{"requests": 2, "per_s": 600, "burst": 2, "by": "consumer"}]},
            }
        )
    return document


@pytest.fixture
async def mem() -> AsyncIterator[Store]:
    """A memory store."""
    async with keel.connect("memory://") as store:
        yield store


@contextlib.asynccontextmanager
async def raw_upstream(handler: Handler) -> AsyncIterator[int]:
    """A hand-written HTTP upstream (for failures no real server makes); yields its port."""
    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    async with server:
        yield server.sockets[0].getsockname()[1]


@contextlib.asynccontextmanager
async def pair(mem: Store, document: dict[str, Any]) -> AsyncIterator[tuple[Gateway, Gateway]]:
    """Two gateways on one document: with the relay, and without it."""
    await publish(mem, document)
    async with (
        upstream(mem, "users"),
        gateway(mem) as relayed,
        gateway(mem, relay=False, registry=CollectorRegistry()) as plain,
    ):
        for gw in (relayed, plain):
            assert gw.discovery is not None
            await gw.discovery.instances("users")
        yield relayed, plain


async def _get(gw: Gateway, path: str, **kwargs: Any) -> httpx.Response:
    async with httpx.AsyncClient(base_url=gw.url, timeout=10) as http:
        return await http.get(path, **kwargs)


def _comparable(answer: httpx.Response) -> tuple[int, list[tuple[bytes, bytes]], Any]:
    headers = [(k, v) for k, v in answer.headers.raw if k.lower() != b"date"]  # in order
    body: Any = answer.content
    if answer.headers.get("content-type") == "application/json" and b'"headers"' in body:
        body = answer.json()
        body["port"] = 0  # each gateway's own upstream connection
        body["headers"] = sorted(
            (k, "<budget>" if k == "keel-deadline" else v) for k, v in body["headers"]
        )
    return answer.status_code, headers, body


async def test_relayed_and_app_answers_are_the_same(mem: Store) -> None:
    """Status, headers, body and what the upstream sees match the app's, request for request."""
    async with pair(mem, _document()) as (relayed, plain):
        assert relayed.relay is not None and plain.relay is None
        passed = relayed.relay.passed  # the runtime's own /readyz at start
        asks: list[tuple[str, dict[str, str]]] = [
            ("/api/users?x=1&y=%20", {"x-request-id": "r-1"}),
            ("/s/users/7", {"x-request-id": "r-2", "x-secret": "s", "x-env": "prod"}),
            ("/api/status/404", {"x-request-id": "r-3"}),
            ("/api/status/503", {"x-request-id": "r-4"}),
            ("/api/stream/200000", {"x-request-id": "r-5"}),
            ("/v/users", {"x-request-id": "r-6"}),  # Host set by the route
        ]
        for path, headers in asks:
            headers["host"] = "gw.example"  # the same Host (and so Forwarded) for both
            a, b = (
                await _get(relayed, path, headers=headers),
                await _get(plain, path, headers=headers),
            )
            assert _comparable(a) == _comparable(b), path
        assert relayed.relay.relayed == len(asks) and relayed.relay.passed == passed
        echo = (await _get(relayed, "/api/x")).json()
        sent = dict(echo["headers"])
        assert 0 < float(sent["keel-deadline"]) <= 30
        assert sent["x-forwarded-for"] == "127.0.0.1" and sent["x-request-id"]
        assert "x-forwarded-host" not in sent  # the upstream has the client's Host itself
        vhost = (await _get(relayed, "/v/users", headers={"host": "gw.example"})).json()
        hosts = [(k, v) for k, v in vhost["headers"] if k in ("host", "x-forwarded-host")]
        assert sorted(hosts) == [("host", "users.internal"), ("x-forwarded-host", "gw.example")]


async def test_requests_the_relay_leaves_to_the_app(mem: Store) -> None:
    """Bodies, HEAD, OPTIONS, probes, a caller's deadline, response header operations,
    no route: answered by the app, as before."""
    async with pair(mem, _document()) as (relayed, _):
        relay = relayed.relay
        assert relay is not None
        passed = relay.passed
        async with httpx.AsyncClient(base_url=relayed.url, timeout=10) as http:
            posted = await http.post("/api/orders", content=b"hello")
            assert posted.json()["body"] == "hello"
            assert (await http.head("/api/x")).status_code == 200
            assert (await http.options("/api/x")).status_code == 200
            assert (await http.get("/healthz")).status_code == 200
            late = await http.get("/api/x", headers={"keel-deadline": "5"})
            assert float(dict(late.json()["headers"])["keel-deadline"]) <= 5
            assert (await http.get("/tagged/x")).headers["x-served-by"] == "keel"
            assert (await http.get("/nowhere")).status_code == 404
        assert relay.relayed == 0 and relay.passed == passed + 7


async def test_pooled_connections_are_reused(mem: Store) -> None:
    """Sequential relayed requests share one kept-alive upstream connection."""
    async with pair(mem, _document()) as (relayed, _):
        assert relayed.upstreams is not None
        async with httpx.AsyncClient(base_url=relayed.url, timeout=10) as http:
            for n in range(20):
                assert (await http.get(f"/api/n/{n}")).json()["path"] == f"/api/n/{n}"
        stats = relayed.upstreams.statistics()
        assert (stats.connections_opened, stats.connections_idle) == (1, 1)


async def test_pipelined_relayed_requests_keep_their_order(mem: Store) -> None:
    """Requests in one packet: each answered in order, the last one closing the connection."""
    async with pair(mem, _document()) as (relayed, _):
        reader, writer = await asyncio.open_connection("127.0.0.1", relayed.port)
        one = "GET /api/{0} HTTP/1.1\r\nhost: gw\r\nx-request-id: p{0}\r\n{1}\r\n"
        writer.write(
            "".join(one.format(i, "connection: close\r\n" * (i == 3)) for i in range(4)).encode()
        )
        await writer.drain()
        async with asyncio.timeout(10):
            raw = await reader.read()
        writer.close()
        answers = raw.split(b"HTTP/1.1 ")[1:]
        assert [a.split(b"\r\n", 1)[0] for a in answers] == [b"200 OK"] * 4
        assert [f"x-request-id: p{i}".encode() in a for i, a in enumerate(answers)] == [True] * 4
        assert b"connection: close" in answers[3]


async def _serve_broken(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Answers by path: /raw/cut (a long body cut short), /raw/small (a short one cut),
    /raw/reset (nothing), /raw/chunked (a small chunked body), /raw/private (headers
    named by Connection), /raw/hang (never)."""
    try:
        await _answer_broken(reader, writer)
    except (ConnectionError, asyncio.IncompleteReadError):
        pass
    finally:
        writer.close()


async def _answer_broken(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while True:
        head = await reader.readuntil(b"\r\n\r\n")
        path = head.split(b" ", 2)[1]
        if path == b"/raw/chunked":
            writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
            writer.write(b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n")
            continue
        if path == b"/raw/private":
            writer.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
                b"Connection: keep-alive, X-Private\r\nKeep-Alive: timeout=5\r\n"
                b"X-Private: secret\r\nX-Public: ok\r\nServer: raw\r\n"
                b"Content-Length: 2\r\n\r\nok"
            )
            continue
        if path == b"/raw/hang":
            await asyncio.sleep(5)
        elif path in (b"/raw/cut", b"/raw/small"):
            length = b"1000000" if path == b"/raw/cut" else b"100"
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: " + length + b"\r\n\r\n0123456789")
            await writer.drain()
        writer.close()
        return


async def test_upstream_failures_on_the_relay(mem: Store) -> None:
    """A reset or a short body before the head went out: 502; a long body cut after it:
    the client connection drops; no answer in time: 504; chunked small bodies get a length."""
    async with raw_upstream(_serve_broken) as port, pair(mem, _document(port)) as (gw, plain):
        assert gw.relay is not None and gw.upstreams is not None
        passed = gw.relay.passed
        for broken in ("/raw/reset", "/raw/small"):
            answer = await _get(gw, broken)
            assert answer.status_code == 502 and answer.json()["error"] == "bad_gateway"
        with pytest.raises(httpx.RemoteProtocolError):
            await _get(gw, "/raw/cut")
        hung = await _get(gw, "/raw/hang")
        assert hung.status_code == 504 and hung.json()["error"] == "gateway_timeout"
        slow = await _get(gw, "/slow", params={"s": "2"})
        assert slow.status_code == 504 and slow.headers["x-request-id"]
        rid = {"x-request-id": "c-1"}
        answers = [await _get(each, "/raw/chunked", headers=rid) for each in (gw, plain)]
        for chunked in answers:
            assert (chunked.text, chunked.headers["content-length"]) == ("abcde", "5")
            assert "transfer-encoding" not in chunked.headers
        assert _comparable(answers[0]) == _comparable(answers[1])
        assert gw.relay.passed == passed
        stats = gw.upstreams.statistics()
        assert (stats.failed, stats.timed_out, stats.aborted) == (2, 2, 1)
        # every connection of a failed exchange was closed, none left busy
        assert stats.connections_open == stats.connections_idle


async def test_response_headers_named_by_connection_are_dropped(mem: Store) -> None:
    """Hop-by-hop headers, those the upstream's Connection names, its Server: none pass."""
    async with raw_upstream(_serve_broken) as port, pair(mem, _document(port)) as (gw, plain):
        assert gw.relay is not None
        relayed = gw.relay.relayed
        rid = {"x-request-id": "c-0"}
        answers = [await _get(each, "/raw/private", headers=rid) for each in (gw, plain)]
        assert gw.relay.relayed == relayed + 1
        assert _comparable(answers[0]) == _comparable(answers[1])
        kept = answers[0].headers
        assert (kept["x-public"], answers[0].text) == ("ok", "ok")
        assert kept.get("server") != "raw"  # the gateway's own server header, if any
        assert not {"x-private", "keep-alive", "connection"} & set(kept)


async def test_a_wait_for_a_connection_counts_against_the_deadline(mem: Store) -> None:
    """With one connection per instance, a request that waits for it sends the budget left."""
    document = {"routes": [{"id": "r", "match": {"path": "/"}, "forward": {"service": "users"}}]}
    await publish(mem, document)
    one = UpstreamSettings(max_connections_per_instance=1)
    async with upstream(mem, "users"), gateway(mem, upstream_settings=one) as gw:
        assert gw.discovery is not None and gw.relay is not None
        await gw.discovery.instances("users")
        async with httpx.AsyncClient(base_url=gw.url, timeout=10) as http:
            slow = asyncio.ensure_future(http.get("/slow", params={"s": "1"}))
            await asyncio.sleep(0.3)  # the slow request holds the only connection
            waited = await http.get("/after")
            assert (await slow).status_code == 200
        sent = dict(waited.json()["headers"])
        assert 27.0 < float(sent["keel-deadline"]) < 29.6  # 30 s less the wait
        assert gw.relay.relayed >= 2


async def test_a_client_gone_before_the_answer_leaves_the_relay_clean(mem: Store) -> None:
    """The client hangs up while the upstream works: nothing is written, the pool goes on."""
    async with pair(mem, _document()) as (gw, _):
        assert gw.upstreams is not None and gw.relay is not None
        _, writer = await asyncio.open_connection("127.0.0.1", gw.port)
        writer.write(b"GET /api/slow?s=0.3 HTTP/1.1\r\nhost: gw\r\n\r\n")
        await writer.drain()
        writer.close()
        await writer.wait_closed()
        async with asyncio.timeout(5):
            while gw.metrics.in_flight:  # noqa: ASYNC110 - polls a counter
                await asyncio.sleep(0.02)
        assert (await _get(gw, "/api/after")).status_code == 200
        assert gw.upstreams.statistics().connections_opened <= 2


async def test_jwt_and_local_limits_on_the_relay(mem: Store, tmp_path: Path) -> None:
    """A verified token and a local rate limit are decided on the relay (429 included);
    refused credentials go to the app, which answers 401."""
    pem = tmp_path / "public.pem"
    pem.write_bytes(
        KEY.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    claims = {"sub": "ann", "aud": "t", "iss": "i", "exp": time.time() + 600}
    token = jwt.encode(claims, KEY, algorithm="RS256")
    bearer = {"authorization": f"Bearer {token}"}
    async with pair(mem, _document(pem=pem)) as (gw, plain):
        relay = gw.relay
        assert relay is not None
        passed = relay.passed
        answers = [await _get(gw, "/secure/x", headers=bearer) for _ in range(3)]
        from_app = [await _get(plain, "/secure/x", headers=bearer) for _ in range(3)]
        assert [a.status_code for a in from_app] == [200, 200, 429]
        names = [[k for k, _ in a.headers.raw] for a in (answers[2], from_app[2])]
        assert names[0] == names[1]  # the relay's 429 is the app's, header for header
        assert [a.status_code for a in answers] == [200, 200, 429]
        assert dict(answers[0].json()["headers"])["x-consumer"] == "ann"
        assert int(answers[2].headers["retry-after"]) >= 1
        assert answers[2].json()["error"] == "limited"
        assert relay.relayed == 3
        bad = await _get(gw, "/secure/x", headers={"authorization": "Bearer nope"})
        assert bad.status_code == 401 and relay.passed == passed + 1


@pytest.mark.parametrize(
    ("client", "headers", "consumer"),
    [
        ("10.0.0.7", [(b"host", b"api.example"), (b"accept", b"*/*")], None),
        (
            "10.0.0.7",
            [
                (b"host", b"api.example"),
                (b"x-forwarded-for", b"1.2.3.4"),
                (b"forwarded", b"for=1.2.3.4"),
                (b"x-real-ip", b"1.2.3.4"),
                (b"x-consumer", b"mallory"),
                (b"x-secret", b"s"),
                (b"traceparent", b"00-" + b"1" * 32 + b"-" + b"2" * 16 + b"-01"),
                (b"proxy-authorization", b"Basic eA=="),
            ],
            "ann",
        ),
        ("::1", [(b"accept", b"*/*")], None),
    ],
)
def test_the_relay_head_is_the_proxy_head(
    client: str, headers: list[tuple[bytes, bytes]], consumer: str | None
) -> None:
    """The relay's one-pass head equals upstream_headers + request_head, byte for byte."""
    from keel.gateway._auth import Consumer
    from keel.gateway._headers import TrustedProxies, plain_head, relay_skip, upstream_headers
    from keel.gateway._wire import request_head

    who = Consumer(consumer, "jwt") if consumer is not None else None
    host = dict(headers).get(b"host")
    nobody = TrustedProxies.parse([])

    def relay(
        sent: list[tuple[bytes, bytes]],
        skip: frozenset[bytes],
        *,
        tail: bytes = b"",
        style: str = "x-forwarded",
        trusted: TrustedProxies = nobody,
    ) -> tuple[bytes, bool] | None:
        line = b"GET /a?b=1 HTTP/1.1\r\n"
        return plain_head(
            line, sent, skip=skip, client=client, scheme="http", host=host,
            trusted=trusted, tail=tail, style=style,
        )  # fmt: skip

    for drop, extra in (
        (frozenset({b"x-request-id", b"x-secret"}), [(b"x-env", b"test")]),
        (frozenset({b"x-request-id", b"host"}), [(b"host", b"users.internal")]),  # Host set
    ):
        extra = [*extra, (b"x-request-id", b"r-9")]
        skip = relay_skip(drop, b"x-consumer")
        assert skip is not None
        tail = b"".join(k + b": " + v + b"\r\n" for k, v in extra)
        if who is not None:
            tail = b"x-consumer: " + who.name.encode() + b"\r\n" + tail
        for style in ("x-forwarded", "rfc7239", "both"):
            out = upstream_headers(
                headers,
                client=client,
                scheme="http",
                host=host,
                trusted=nobody,
                consumer=who,
                consumer_header=b"x-consumer",
                drop=drop,
                style=style,
            )
            general = request_head("GET", b"/a?b=1", [*out, *extra])
            found = relay(headers, skip, tail=tail, style=style)
            assert found == (general.prefix, general.has_host), (style, drop)
            assert (b"x-forwarded-host: " in found[0]) == (
                style != "rfc7239" and b"host" in drop and host is not None
            )
        # the general path's cases: a Connection header, a peer that is a trusted proxy
        assert relay([*headers, (b"connection", b"x-other")], skip) is None
        assert relay(headers, skip, trusted=TrustedProxies.parse([client])) is None
    assert relay_skip(frozenset({b"x-forwarded-for"}), b"x-consumer") is None


async def test_one_timer_watches_every_relayed_deadline() -> None:
    """Deadlines time out in their order, each once; a discarded one never does."""
    from keel.gateway._deadlines import Deadlines

    class Late:
        def __init__(self, name: str, log: list[str]) -> None:
            self.name, self.log = name, log

        def timed_out(self) -> None:
            self.log.append(self.name)

    loop = asyncio.get_running_loop()
    log: list[str] = []
    deadlines = Deadlines(loop)
    late = {name: Late(name, log) for name in "abcd"}
    for name, after in (("a", 0.15), ("b", 0.05), ("c", 0.1), ("d", 0.02)):
        deadlines.add(late[name], after)  # type: ignore[arg-type]
    deadlines.discard(late["d"])  # type: ignore[arg-type]
    await asyncio.sleep(0.3)
    assert log == ["b", "c", "a"] and len(deadlines) == 0


async def test_refused_connects_then_an_open_breaker_on_the_relay(mem: Store) -> None:
    """Connection refused: 502 (the connect runs as a task); once the instance's breaker
    opens, 503 is answered at once, before anything is sent."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    document = _document()
    document["routes"].append(
        {
            "id": "dead",
            "match": {"path": "/dead/"},
            "forward": {"url": f"http://127.0.0.1:{closed}", "retries": 0},
        }
    )
    async with pair(mem, document) as (gw, _):
        assert gw.relay is not None and gw.upstreams is not None
        statuses = [(await _get(gw, "/dead/x")).status_code for _ in range(10)]
        assert statuses[0] == 502 and statuses[-1] == 503
        assert gw.upstreams.statistics().breakers_open == 1
        assert gw.relay.relayed == 10
        assert (await _get(gw, "/api/still-fine")).status_code == 200


async def test_an_http_1_0_client_gets_its_answer_and_the_close(mem: Store) -> None:
    """No keep-alive for HTTP/1.0: the relayed answer says so and the connection ends."""
    async with pair(mem, _document()) as (gw, _):
        reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
        writer.write(b"GET /api/old HTTP/1.0\r\nhost: gw\r\n\r\n")
        await writer.drain()
        async with asyncio.timeout(10):
            raw = await reader.read()  # ends: the gateway closed the connection
        writer.close()
        head, _, body = raw.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200 ") and b"connection: close" in head
        assert b'"/api/old"' in body
        assert gw.relay is not None and gw.relay.relayed == 1
