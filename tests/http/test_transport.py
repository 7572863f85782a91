"""DiscoveryTransport logic over an httpx MockTransport: which hosts resolve, what is sent."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

import keel
from keel.http import ClientSettings, DiscoveryTransport
from keel.registry import Discovery, Instance, Registry
from keel.resilience import deadline
from keel.store import Store


@pytest.fixture
async def mem() -> AsyncIterator[Store]:
    """A memory store with two 'orders' instances and one 'shop.eu'."""
    async with keel.connect("memory://") as store, Registry(store) as registry:
        await registry.register(Instance(service="orders", address="10.0.0.1", port=81))
        await registry.register(Instance(service="orders", address="10.0.0.2", port=82))
        await registry.register(Instance(service="shop.eu", address="10.0.0.3", port=83))
        yield store


async def test_hosts_resolve_or_pass_through(mem: Store) -> None:
    """Service names go to instances; ports, IPs, localhost and unknown dotted hosts pass."""
    sent: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        return httpx.Response(200)

    async with Discovery(mem) as discovery:
        transport = DiscoveryTransport(discovery, pool=httpx.MockTransport(handler))
        async with httpx.AsyncClient(transport=transport) as client:
            for url in (
                "http://orders/a",
                "http://shop.eu/b",
                "http://orders:9000/c",
                "http://127.0.0.1/d",
                "http://localhost/e",
                "http://example.com/f",
            ):
                await client.get(url)
    hosts = [(r.url.host, r.url.port) for r in sent]
    assert hosts[0][0] in ("10.0.0.1", "10.0.0.2") and hosts[1] == ("10.0.0.3", 83)
    passed = [("orders", 9000), ("127.0.0.1", None), ("localhost", None), ("example.com", None)]
    assert hosts[2:] == passed
    assert sent[0].headers["host"] == "orders"
    stats = transport.statistics()
    assert (stats.calls, stats.passthrough) == (2, 4)


async def test_deadline_header_is_what_is_left(mem: Store) -> None:
    """keel-deadline carries the time left of the caller's deadline, at most timeout_s."""
    seen: list[float] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(float(request.headers["keel-deadline"]))
        return httpx.Response(200)

    async with Discovery(mem) as discovery:
        transport = DiscoveryTransport(
            discovery, settings=ClientSettings(timeout_s=5), pool=httpx.MockTransport(handler)
        )
        async with httpx.AsyncClient(transport=transport) as client:
            await client.get("http://orders/")
            async with deadline(0.5):
                await client.get("http://orders/")
    assert 4.5 < seen[0] <= 5.0 and 0 < seen[1] <= 0.5


async def test_503_is_retried_on_another_instance_for_get_only(mem: Store) -> None:
    """A 503 makes a GET try the other instance; a POST gets the 503 back."""
    calls: list[tuple[str, str | None]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append((request.method, request.url.host))
        return httpx.Response(503 if request.url.host == "10.0.0.1" else 200)

    async with Discovery(mem) as discovery:
        transport = DiscoveryTransport(discovery, pool=httpx.MockTransport(handler))
        async with httpx.AsyncClient(transport=transport) as client:
            for _ in range(10):
                assert (await client.get("http://orders/")).status_code == 200
            for _ in range(20):
                await client.post("http://orders/")
    assert sum(method == "POST" for method, _ in calls) == 20  # one attempt each
    first_hosts = [host for method, host in calls if method == "GET"]
    assert first_hosts.count("10.0.0.2") == 10
