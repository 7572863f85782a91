"""The shop's saga end to end: orders → inventory (reserve) → payment (charge) → confirm."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from examples.shop import Shop, run_shop

import keel
from keel.cli._up_lines import PlainLines
from keel.cli._up_view import UpView
from keel.config import ConfigCenter
from keel.http import Client
from keel.saga import Abort, Coordinator, Saga, SagaContext, Step, get_saga
from keel.store import KeyValue, Store
from tests.cli.test_up_view import busy_view, put, screen

SAGA = {"keel-saga": "order/manual", "keel-saga-step": "reserve"}


@contextlib.asynccontextmanager
async def shop_on(tmp_path: Path) -> AsyncIterator[tuple[Store, Client, Shop]]:
    """The whole shop on a memory store, its participants' databases in ``tmp_path``."""
    stop, started = asyncio.Event(), asyncio.Event()
    shops: list[Shop] = []

    def ready(shop: Shop) -> None:
        shops.append(shop)
        started.set()

    async with (
        keel.connect("memory://") as store,
        asyncio.TaskGroup() as tasks,
        Client(store) as client,
    ):
        running = tasks.create_task(run_shop(store, stop, on_ready=ready, data_dir=tmp_path))
        async with asyncio.timeout(30):
            await started.wait()
        try:
            yield store, client, shops[0]
        finally:
            stop.set()
            async with asyncio.timeout(30):
                await running


def rows(path: Path, sql: str) -> list[tuple[object, ...]]:
    """What a participant's database holds."""
    with contextlib.closing(sqlite3.connect(path)) as db:
        return list(db.execute(sql))


async def test_an_order_commits_with_one_reservation_and_one_charge(tmp_path: Path) -> None:
    """A committed order leaves one reservation and one charge; its Idempotency-Key replays it."""
    async with shop_on(tmp_path) as (store, client, _shop), asyncio.timeout(20):
        headers = {"Idempotency-Key": "order-123"}
        first = await client.post(
            "http://orders/orders", json={"sku": "apple", "qty": 2}, headers=headers
        )
        again = await client.post(
            "http://orders/orders", json={"sku": "apple", "qty": 2}, headers=headers
        )
        assert first.status_code == 201, first.text
        body = first.json()
        assert body["outcome"] == "committed" and body["stock"]["reserved"] == 2
        assert again.status_code == 201 and again.json()["saga"] == body["saga"]
        record = await get_saga(store, body["saga"])
        assert [s.state.value for s in record.steps.values()] == ["done"] * 3
        stock = (await client.get("http://inventory/stock/apple")).json()
        assert stock["available"] == 98
    saga_id = body["saga"]
    assert rows(tmp_path / "inventory.db", "SELECT saga_id, sku, qty FROM reservations") == [
        (saga_id, "apple", 2)
    ]
    assert rows(tmp_path / "payment.db", "SELECT saga_id, amount, refunded FROM charges") == [
        (saga_id, 8.4, 0)
    ]


async def test_a_declined_payment_compensates_the_reservation(tmp_path: Path) -> None:
    """A charge above payment's limit is declined: 402, stock back, no charge recorded."""
    async with shop_on(tmp_path) as (store, client, _shop), asyncio.timeout(20):
        order = await client.post("http://orders/orders", json={"sku": "pear", "qty": 7})
        assert order.status_code == 402, order.text
        body = order.json()
        assert body["outcome"] == "compensated" and "above 25.00" in body["error"]
        record = await get_saga(store, body["saga"])
        assert record.steps["reserve"].state.value == "compensated"
        assert record.steps["confirm"].state.value == "pending"
        stock = (await client.get("http://inventory/stock/pear")).json()
        assert stock["available"] == 100
    assert rows(tmp_path / "inventory.db", "SELECT * FROM reservations") == []
    assert rows(tmp_path / "payment.db", "SELECT * FROM charges") == []
    steps = rows(tmp_path / "payment.db", "SELECT step, op, reason FROM keel_barrier")
    assert sorted(steps) == [
        ("charge", "action", "compensate"),
        ("charge", "compensate", "compensate"),
    ]


async def test_participants_apply_retried_and_reordered_calls_once(tmp_path: Path) -> None:
    """A retried reserve applies once, a release before its reserve makes it 409; out of stock."""
    async with shop_on(tmp_path) as (_store, client, _shop), asyncio.timeout(20):
        reserve = {**SAGA, "keel-saga-op": "action"}
        body = {"sku": "fig", "qty": 95}
        first = await client.post("http://inventory/reserve", json=body, headers=reserve)
        second = await client.post("http://inventory/reserve", json=body, headers=reserve)
        assert first.status_code == second.status_code == 200, (first.text, second.text)
        assert first.json()["available"] == second.json()["available"] == 5
        out = await client.post("http://orders/orders", json={"sku": "fig", "qty": 9})
        assert out.status_code == 409, out.text
        assert out.json()["outcome"] == "compensated" and "out of stock" in out.json()["error"]
        other = {**SAGA, "keel-saga": "order/other"}
        release = {**other, "keel-saga-op": "compensate"}
        early = await client.post("http://inventory/release", json={}, headers=release)
        assert early.status_code == 200, early.text  # null compensation: nothing to undo
        late = await client.post(
            "http://inventory/reserve",
            json={"sku": "fig", "qty": 1},
            headers={**other, "keel-saga-op": "action"},
        )
        assert late.status_code == 409 and "after its compensation" in late.json()["error"]
        assert (
            await client.post("http://inventory/release", json={}, headers=release)
        ).status_code == 200
        unsigned = await client.post("http://inventory/reserve", json={"sku": "fig", "qty": 1})
        assert unsigned.status_code == 400 and "keel-saga" in unsigned.json()["error"]
        assert (await client.get("http://inventory/stock/fig")).json()["available"] == 5
    reserved = rows(tmp_path / "inventory.db", "SELECT saga_id, qty FROM reservations")
    assert reserved == [("order/manual", 95)]


async def _until(client: Client, status: int) -> dict[str, Any]:
    """POST orders until one is answered ``status`` (a setting applies in a watch round trip)."""
    for _ in range(200):
        order = await client.post("http://orders/orders", json={"sku": "plum", "qty": 1})
        assert order.status_code in (201, 202, 402), order.text
        if order.status_code == status:
            return dict(order.json())
        await asyncio.sleep(0.02)
    raise AssertionError(f"no {status} answer: the setting was not applied")


async def test_the_decline_switch_and_a_saga_still_running_after_wait_s(tmp_path: Path) -> None:
    """payment.json's decline makes orders 402; past orders.json's wait_s the answer is 202."""
    async with shop_on(tmp_path) as (store, client, _shop), asyncio.timeout(20):
        center = ConfigCenter(store)
        await center.publish("payment.json", '{"decline": true}')
        declined = await _until(client, 402)
        assert "declined (test switch)" in declined["error"], declined
        await center.publish("orders.json", '{"wait_s": 0}')
        running = await _until(client, 202)
        assert running["outcome"] == "running" and running["saga"].startswith("order/")
        outcome = await Coordinator(store, sagas=[]).wait(running["saga"], timeout=10)
        assert outcome.value == "compensated"
    assert rows(tmp_path / "payment.db", "SELECT saga_id FROM charges WHERE refunded = 0") == []


async def _sagas_in_every_state(store: Store) -> list[KeyValue]:
    """The records of sagas committed, compensated and running, read while one runs."""
    reached, release = asyncio.Event(), asyncio.Event()

    async def ok(ctx: SagaContext) -> None:
        if ctx.input == "slow":
            reached.set()
            await release.wait()
        if ctx.input == "bad":
            raise Abort("card declined")

    saga = Saga("order", [Step("reserve", action=ok), Step("charge", action=ok)])
    async with Coordinator(store, sagas=[saga]) as coordinator:
        for kind in ("good", "bad"):
            await coordinator.wait(await coordinator.start("order", kind), timeout=10)
        slow = await coordinator.start("order", "slow")
        await reached.wait()
        records, _ = await store.range("sagas/")
        release.set()
        await coordinator.wait(slow, timeout=10)
    return records


async def test_keel_up_shows_sagas_in_progress_and_their_outcomes() -> None:
    """keel up's view has a sagas panel (running first) within 80x24; plain lines count them."""
    async with keel.connect("memory://") as store, asyncio.timeout(20):
        kvs = await _sagas_in_every_state(store)
    view = busy_view()
    view.load(kvs)
    view.apply(put("sagas/order/broken", b'{"saga": [1]}'))  # malformed: skipped, not drawn
    lines = screen(view, 80, 24)
    text = "\n".join(lines)
    assert len(lines) <= 24 and all(len(line) <= 80 for line in lines), text
    assert "sagas · 1 running · 1 committed · 1 compensated" in text, text
    assert "services · 12 instances" in text and "locks and leaders" in text, text
    roomy = "\n".join(screen(view, 120, 40))
    first = roomy.index("running  ")
    assert first < roomy.index("committed  ") and first < roomy.index("compensated  "), roomy
    assert "reserve" in roomy and "aborted: card declined" in roomy, roomy
    assert len(view.sagas) == 3  # the malformed record is not among them
    plain = UpView("memory://")
    plain.load(kvs)
    assert any(
        line.endswith("sagas: 1 running · 1 committed · 1 compensated")
        for line in PlainLines().changes(plain)
    )
