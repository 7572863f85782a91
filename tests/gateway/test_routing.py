"""Routing through a real gateway: host, path, method, header; rewrites; redirect; respond."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

import keel
from keel.gateway import Gateway
from keel.store import Store
from tests._util import eventually
from tests.gateway._gw import gateway, publish
from tests.gateway._upstream_app import upstream

ROUTES: dict[str, Any] = {
    "routes": [
        {
            "id": "users",
            "match": {"path": "/api/users/"},
            "forward": {"service": "users", "strip_prefix": True},
        },
        {
            "id": "orders-write",
            "match": {"path": "/api/orders", "methods": ["POST", "PUT"]},
            "forward": {"service": "orders", "rewrite": "/v2/orders"},
        },
        {
            "id": "orders-read",
            "match": {"path": "/api/orders", "methods": ["GET"]},
            "forward": {"service": "users"},
        },
        {
            "id": "user-by-id",
            "match": {"path": "/u/{id}/{rest*}"},
            "forward": {"service": "users", "rewrite": "/people/{id}/{rest}"},
        },
        {
            "id": "admin-host",
            "match": {"hosts": ["admin.example.com"], "path": "/"},
            "forward": {"service": "orders"},
        },
        {
            "id": "beta",
            "match": {"path": "/api/users/", "headers": {"x-beta": "1"}},
            "forward": {"service": "orders"},
        },
        {
            "id": "old",
            "match": {"path": "/old/"},
            "redirect": {"location": "https://new.example.com{rest}", "status": 301},
        },
        {
            "id": "ping",
            "match": {"path": "/ping", "methods": ["GET"]},
            "respond": {"status": 200, "body": "pong", "headers": {"cache-control": "no-store"}},
        },
        {
            "id": "headers",
            "match": {"path": "/hdr"},
            "forward": {"service": "users"},
            "request_headers": {
                "remove": ["x-secret"],
                "set": {"x-env": "test"},
                "add": {"x-tag": "a"},
            },
            "response_headers": {"remove": ["x-upstream"], "set": {"x-served-by": "keel"}},
        },
        {
            "id": "small",
            "match": {"path": "/small"},
            "forward": {"service": "users"},
            "max_body_bytes": 10,
        },
    ]
}


@pytest.fixture
async def mem() -> AsyncIterator[Store]:
    """A memory store (routing logic is the same on every backend; end-to-end runs on all)."""
    async with keel.connect("memory://") as store:
        yield store


@pytest.fixture
async def gw(mem: Store) -> AsyncIterator[Gateway]:
    """A gateway with ROUTES in front of the 'users' and 'orders' upstreams."""
    await publish(mem, ROUTES)
    async with upstream(mem, "users"), upstream(mem, "orders"), gateway(mem) as started:
        yield started


@pytest.fixture
async def http(gw: Gateway) -> AsyncIterator[httpx.AsyncClient]:
    """A client of the gateway."""
    async with httpx.AsyncClient(base_url=gw.url, timeout=10) as client:
        yield client


async def test_path_prefix_strip_and_service(http: httpx.AsyncClient) -> None:
    """A prefix route forwards to its service with the prefix stripped and the query kept."""
    answer = await http.get("/api/users/42?x=1&y=%20")
    echo = answer.json()
    assert answer.status_code == 200 and echo["tag"] == "users:-"
    assert (echo["path"], echo["query"]) == ("/42", "x=1&y=%20")
    assert (await http.get("/api/users")).json()["path"] == "/"


async def test_method_routing_and_prefix_rewrite(http: httpx.AsyncClient) -> None:
    """The same path goes to different routes by method; a rewrite replaces the prefix."""
    post = (await http.post("/api/orders/7", content=b"hello")).json()
    assert (post["tag"], post["path"], post["body"]) == ("orders:-", "/v2/orders/7", "hello")
    get = (await http.get("/api/orders/7")).json()
    assert (get["tag"], get["path"]) == ("users:-", "/api/orders/7")
    refused = await http.delete("/api/orders/7")
    assert refused.status_code == 405 and refused.headers["allow"] == "GET, POST, PUT"
    assert refused.json()["error"] == "method"


async def test_template_rewrite(http: httpx.AsyncClient) -> None:
    """Template parameters fill the rewrite, the rest parameter keeps its slashes."""
    echo = (await http.get("/u/ann/books/1")).json()
    assert echo["path"] == "/people/ann/books/1"


async def test_host_and_header_routing(http: httpx.AsyncClient) -> None:
    """An exact host beats the catch-all; a header condition picks another route."""
    assert (await http.get("/x", headers={"host": "ADMIN.example.com:8080"})).json()[
        "tag"
    ] == "orders:-"
    assert (await http.get("/api/users/1", headers={"x-beta": "1"})).json()["tag"] == "orders:-"
    assert (await http.get("/api/users/1", headers={"x-beta": "2"})).json()["tag"] == "users:-"


async def test_redirect_and_fixed_response(http: httpx.AsyncClient) -> None:
    """Redirects fill {rest} and keep the query; fixed responses carry their headers."""
    moved = await http.get("/old/a/b?q=1")
    assert (
        moved.status_code == 301 and moved.headers["location"] == "https://new.example.com/a/b?q=1"
    )
    pong = await http.get("/ping")
    assert (pong.status_code, pong.text, pong.headers["cache-control"]) == (200, "pong", "no-store")
    assert (await http.head("/ping")).status_code == 200


async def test_header_operations(http: httpx.AsyncClient) -> None:
    """Request headers removed/set/added before the upstream; response headers after it."""
    answer = await http.get("/hdr", headers={"x-secret": "s", "x-env": "prod", "x-tag": "client"})
    sent = answer.json()["headers"]
    names = [k for k, _ in sent]
    assert "x-secret" not in names
    assert [v for k, v in sent if k == "x-env"] == ["test"]
    assert [v for k, v in sent if k == "x-tag"] == ["client", "a"]
    assert "x-upstream" not in answer.headers and answer.headers["x-served-by"] == "keel"


async def test_not_found_and_request_ids(http: httpx.AsyncClient) -> None:
    """No route is a small JSON 404; the request id is generated, or kept when sane."""
    missing = await http.get("/nothing-here")
    body = missing.json()
    assert missing.status_code == 404 and body["error"] == "not_found"
    assert body["request_id"] == missing.headers["x-request-id"]
    kept = await http.get("/api/users/1", headers={"x-request-id": "req-123"})
    assert kept.headers["x-request-id"] == "req-123"
    assert ["x-request-id", "req-123"] in kept.json()["headers"]
    odd = await http.get("/api/users/1", headers={"x-request-id": "x" * 500})
    assert odd.headers["x-request-id"] != "x" * 500


async def test_body_limits(http: httpx.AsyncClient) -> None:
    """A declared body over the limit gets 413 at once; a streamed one is cut off at the limit."""
    declared = await http.post("/small", content=b"x" * 11)
    assert declared.status_code == 413 and declared.json()["error"] == "too_large"
    assert (await http.post("/small", content=b"x" * 10)).json()["body_bytes"] == 10

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(4):
            yield b"x" * 8

    streamed = await http.post("/small", content=chunks())
    assert streamed.status_code == 413


async def test_dot_segments_refused(gw: Gateway) -> None:
    """A raw path with '..' segments is refused before matching (no prefix escape upstream)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
    writer.write(b"GET /api/users/../../admin HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
    await writer.drain()
    async with asyncio.timeout(5):
        raw = await reader.read()
    writer.close()
    assert raw.startswith(b"HTTP/1.1 400")


async def test_fixed_url_forward(mem: Store) -> None:
    """A route may forward to a fixed URL instead of a service."""
    async with upstream(mem, "elsewhere") as target:
        doc = {"routes": [{"id": "fixed", "match": {"path": "/"}, "forward": {"url": target.url}}]}
        await publish(mem, doc)
        async with gateway(mem) as gw, httpx.AsyncClient(base_url=gw.url) as http:
            assert (await http.get("/p")).json()["tag"] == "elsewhere:-"


async def test_websocket_and_sse_through_routes(mem: Store) -> None:
    """WebSockets are matched and rewritten like HTTP and relayed; refusals carry a status."""
    import websockets

    doc = {
        "routes": [
            {
                "id": "live",
                "match": {"path": "/live/"},
                "forward": {"service": "s", "rewrite": "/ws"},
            },
            {
                "id": "events",
                "match": {"path": "/events"},
                "forward": {"service": "s", "rewrite": "/sse"},
            },
            {"id": "fixed", "match": {"path": "/fixed"}, "respond": {}},
        ]
    }
    await publish(mem, doc)
    async with upstream(mem, "s"), gateway(mem) as gw:
        base = gw.url.replace("http://", "ws://")
        async with websockets.connect(base + "/live/") as ws:
            await ws.send("hi")
            assert await ws.recv() == "hi"
            await ws.send(b"\x00\x01")
            assert await ws.recv() == b"\x00\x01"
        for path, status in (("/nothing", 404), ("/fixed", 400)):
            with pytest.raises(websockets.InvalidStatus) as refused:
                async with websockets.connect(base + path):
                    pass
            assert refused.value.response.status_code == status
        async with (
            httpx.AsyncClient(base_url=gw.url) as http,
            http.stream("GET", "/events?n=3") as sse,
        ):
            assert sse.headers["content-type"] == "text/event-stream"
            assert [line async for line in sse.aiter_lines() if line.startswith("data")] == [
                "data: 0",
                "data: 1",
                "data: 2",
            ]


async def test_cors_preflight_and_errors_carry_route_headers(mem: Store) -> None:
    """A preflight is answered before auth; the gateway's own 401 still has the CORS headers."""
    origin = "https://app.example.com"
    doc = {
        "cors": {
            "allow_origins": [origin],
            "allow_methods": ["POST"],
            "allow_headers": ["x-api-key"],
        },
        "routes": [
            {
                "id": "api",
                "match": {"path": "/api/", "methods": ["POST"]},
                "forward": {"service": "users"},
                "auth": {"api_key": True},
                "cors": True,
                "response_headers": {"set": {"x-route": "api"}},
            }
        ],
    }
    await publish(mem, doc)
    async with (
        upstream(mem, "users"),
        gateway(mem) as gw,
        httpx.AsyncClient(base_url=gw.url) as http,
    ):
        asks = {"origin": origin, "access-control-request-method": "POST"}
        preflight = await http.options(
            "/api/x", headers={**asks, "access-control-request-headers": "x-api-key"}
        )
        assert preflight.status_code in (200, 204)
        assert preflight.headers["access-control-allow-origin"] == origin
        refused = await http.post("/api/x", headers={"origin": origin})
        assert refused.status_code == 401 and "www-authenticate" in refused.headers
        assert refused.headers["access-control-allow-origin"] == origin
        assert refused.headers["x-route"] == "api"
        assert refused.headers.get_list("x-request-id") == [refused.json()["request_id"]]


async def test_fixed_url_with_a_base_path(mem: Store) -> None:
    """A fixed URL's path is put before the request's."""
    async with upstream(mem, "elsewhere") as target:
        doc = {
            "routes": [
                {"id": "fixed", "match": {"path": "/"}, "forward": {"url": target.url + "/base"}}
            ]
        }
        await publish(mem, doc)
        async with gateway(mem) as gw, httpx.AsyncClient(base_url=gw.url) as http:
            assert (await http.get("/p?q=1")).json()["path"] == "/base/p"


async def test_forwarded_headers_believed_only_from_trusted_proxies(mem: Store) -> None:
    """A client's X-Forwarded-For is replaced unless its peer is a trusted proxy."""
    route = {"id": "all", "match": {"path": "/"}, "forward": {"service": "users"}}
    spoof = {"x-forwarded-for": "6.6.6.6", "x-forwarded-proto": "https"}

    def forwarded(answer: httpx.Response) -> dict[str, str]:
        return {k: v for k, v in answer.json()["headers"] if k.startswith("x-forwarded-")}

    await publish(mem, {"routes": [route]})
    async with (
        upstream(mem, "users"),
        gateway(mem) as gw,
        httpx.AsyncClient(base_url=gw.url) as http,
    ):
        seen = forwarded(await http.get("/x", headers=spoof))
        assert (seen["x-forwarded-for"], seen["x-forwarded-proto"]) == ("127.0.0.1", "http")
        await publish(mem, {"trusted_proxies": ["127.0.0.0/8"], "routes": [route]})
        await eventually(lambda: gw.version == 2, 5)
        seen = forwarded(await http.get("/x", headers=spoof))
        assert (seen["x-forwarded-for"], seen["x-forwarded-proto"]) == (
            "6.6.6.6, 127.0.0.1",
            "https",
        )
        names = [k for k, _ in (await http.get("/x")).json()["headers"]]
        assert "forwarded" not in names  # one style by default: X-Forwarded-*
        await publish(
            mem, {"forwarded_headers": "rfc7239", "trusted_proxies": [], "routes": [route]}
        )
        await eventually(lambda: gw.version == 3, 5)
        sent = dict((await http.get("/x", headers=spoof)).json()["headers"])
        assert sent["forwarded"].startswith("for=127.0.0.1;proto=http;host=")
        assert not any(k.startswith("x-forwarded-") for k in sent)
