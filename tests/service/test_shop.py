"""The shop example end to end: orders → users (gRPC), inventory (2 instances) and payment."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from examples.shop import Shop, orders_app, run_shop
from examples.shop._apps import OrdersSettings
from examples.shop._run import ANALYTICS_KEY
from examples.shop._saga import order_saga
from examples.shop.protos.users_pb2_grpc import UserServiceStub

import keel
from keel.config import ConfigCenter
from keel.grpc import Channel
from keel.http import Client
from keel.registry import decode_instance
from keel.saga import Coordinator
from keel.store import Store
from tests.cli._cli import keel_cli


@pytest.fixture
async def mem() -> AsyncIterator[Store]:
    """A memory store for the whole shop."""
    async with keel.connect("memory://") as store:
        yield store


async def test_order_goes_through_both_services_and_settings_hot_reload(mem: Store) -> None:
    """An order reserves stock on an inventory instance and charges; max_quantity reloads."""
    stop, started = asyncio.Event(), asyncio.Event()
    shops: list[Shop] = []

    def ready(shop: Shop) -> None:
        shops.append(shop)
        started.set()

    async with asyncio.TaskGroup() as tasks, Client(mem) as client:
        running = tasks.create_task(run_shop(mem, stop, on_ready=ready))
        async with asyncio.timeout(30):
            await started.wait()
        assert len(shops[0].services["inventory"]) == 2
        order = await client.post("http://orders/orders", json={"sku": "apple", "qty": 2})
        body = order.json()
        assert order.status_code == 201, body
        assert body["outcome"] == "committed" and body["saga"].startswith("order/")
        assert body["stock"]["available"] == 98 and body["payment"]["fee"] == 0.21
        assert body["user"] == {"id": "alice", "name": "Alice"}
        await ConfigCenter(mem).publish("orders.json", '{"max_quantity": 1}')

        async def refused() -> bool:
            answer = await client.post("http://orders/orders", json={"sku": "apple", "qty": 2})
            return answer.status_code == 422

        for _ in range(200):  # the binding applies the publish within a watch round trip
            if await refused():
                break
            await asyncio.sleep(0.05)
        else:
            pytest.fail("max_quantity was not hot-reloaded")
        stop.set()
        await running
    assert (await mem.range("services/"))[0] == []


async def test_orders_calls_users_over_grpc_and_refuses_above_the_credit_limit(
    tmp_path: Path,
) -> None:
    """orders fetches the user over gRPC: named in the reply, 402 above its limit, grpc:// shown."""
    url = f"sqlite:///{tmp_path}/keel.db"
    stop, started = asyncio.Event(), asyncio.Event()
    async with (
        keel.connect(url) as store,
        asyncio.TaskGroup() as tasks,
        Client(store) as client,
    ):
        running = tasks.create_task(run_shop(store, stop, on_ready=lambda _shop: started.set()))
        async with asyncio.timeout(30):
            await started.wait()
            (users,) = (await store.range("services/users/"))[0]
            assert decode_instance(users.key, users.value).scheme == "grpc"
            order = await client.post(
                "http://orders/orders", json={"sku": "apple", "qty": 2, "user": "bob"}
            )
            assert order.status_code == 201, order.text
            assert order.json()["user"] == {"id": "bob", "name": "Bob"}
            refused = await client.post(
                "http://orders/orders", json={"sku": "apple", "qty": 3, "user": "bob"}
            )
            assert refused.status_code == 402, refused.text
            assert "exceeds Bob's credit limit of 10.00" in refused.json()["error"]
            unknown = await client.post("http://orders/orders", json={"sku": "a", "user": "eve"})
            assert unknown.status_code == 404 and "no user 'eve'" in unknown.json()["error"]
            listing = await asyncio.to_thread(keel_cli, "instances", "users", url=url)
        assert listing.code == 0, listing.err_lines
        assert "grpc://127.0.0.1:" in listing.out.decode()
        stop.set()
        await running
    async with keel.connect(url) as store:
        assert (await store.range("services/"))[0] == []


async def test_orders_answers_503_naming_the_grpc_status_when_users_has_no_instance(
    mem: Store,
) -> None:
    """With no users instance registered, an order is a 503 naming UNAVAILABLE and the service."""
    async with Client(mem) as client, Channel(mem, "users") as channel:
        coordinator = Coordinator(mem, sagas=[order_saga(client)])
        app = orders_app(coordinator, UserServiceStub(channel), lambda: OrdersSettings())
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://orders") as http:
            answer = await http.post("/orders", json={"sku": "apple", "qty": 1})
    assert answer.status_code == 503, answer.text
    assert "UNAVAILABLE" in answer.json()["error"] and "users" in answer.json()["error"]


async def test_the_gateway_fronts_the_shop_and_orders_are_counted_once(tmp_path: Path) -> None:
    """Through the gateway: an order (201) and a stock read; orders.created counted per saga."""
    url = f"sqlite:///{tmp_path}/keel.db"
    stop, started = asyncio.Event(), asyncio.Event()
    shops: list[Shop] = []

    def ready(shop: Shop) -> None:
        shops.append(shop)
        started.set()

    async with keel.connect(url) as store, asyncio.TaskGroup() as tasks:
        running = tasks.create_task(run_shop(store, stop, on_ready=ready))
        async with asyncio.timeout(30):
            await started.wait()
        front = shops[0].urls()["gateway"][0]
        async with httpx.AsyncClient(base_url=front, timeout=10) as http:
            sagas = set()
            for _ in range(3):
                order = await http.post("/orders", json={"sku": "pear", "qty": 1, "user": "bob"})
                assert order.status_code == 201, order.text
                sagas.add(order.json()["saga"])
            stock = await http.get("/stock/pear")
            assert stock.status_code == 200 and stock.json()["available"] == 97, stock.text
            elsewhere = await http.get("/nowhere")
            assert elsewhere.status_code == 404 and "POST /orders" in elsewhere.text
        counted: dict[str, object] = {}
        for _ in range(200):  # the analytics group counts as the events arrive
            kv = await store.get(ANALYTICS_KEY)
            counted = json.loads(kv.value) if kv is not None else {}
            if counted.get("orders") == 3:
                break
            await asyncio.sleep(0.05)
        assert counted.get("orders") == 3 and set(counted["last"]) == sagas  # type: ignore[arg-type]
        stop.set()
        await running
