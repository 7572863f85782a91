"""The shop example end to end: orders → inventory (2 instances) and payment, hot reload."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from examples.shop import Shop, run_shop

import keel
from keel.config import ConfigCenter
from keel.http import Client
from keel.store import Store


@pytest.fixture
async def mem() -> AsyncIterator[Store]:
    """A memory store for the whole shop."""
    async with keel.connect("memory://") as store:
        yield store


async def test_order_goes_through_both_services_and_settings_hot_reload(mem: Store) -> None:
    """An order checks stock on an inventory instance and charges payment; max_quantity reloads."""
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
        assert order.status_code == 200, body
        assert body["stock"]["available"] == 100 and body["payment"]["fee"] == 0.21
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
