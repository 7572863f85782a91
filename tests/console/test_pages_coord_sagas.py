"""The coordination and sagas pages over HTTP on every backend, and in Chromium."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio
from tests.console._pages_harness import (
    add_user,
    audit_actions,
    audit_versions,
    chromium,
    client,
    login,
    serving,
    shot,
)

import keel
from keel.console import Role
from keel.coord import Election, Lock, Semaphore, Session
from keel.saga import SagaRecord, Status, StepRecord, StepState, get_saga
from keel.store import Store


async def test_coord_page_shows_holders_tokens_and_waiters(store: Store) -> None:
    """A held lock with its fencing token and lease, a semaphore line, an election's leader."""
    async with (
        Session(store, ttl_s=10) as s1,
        Session(store, ttl_s=10) as s2,
        client(store, "vera", Role.VIEWER) as c,
    ):
        lease = s1.lease_id
        held = await Lock(s1, "nightly").acquire()
        slot = await Semaphore(s2, "pool", 2).acquire()
        async with Election(s2, "scheduler").campaign(b"node-7"):
            page = await c.get("/coord")
        await slot.release()
        await held.release()
        empty = await c.get("/coord")
    assert page.status_code == 200
    assert "nightly" in page.text and f"<div>{held.fencing_token}</div>" in page.text
    assert f"{lease:x}" in page.text and "node-7" in page.text and "pool" in page.text
    assert "nightly" not in empty.text and empty.text.count("None held.") == 4


def _saga(saga_id: str, status: Status, at: float) -> SagaRecord:
    return SagaRecord(
        saga="order",
        id=saga_id,
        status=status,
        steps={
            "reserve": StepRecord(state=StepState.DONE, attempts=1),
            "charge": StepRecord(state=StepState.FAILED, attempts=3, error="card declined"),
        },
        error="compensation of reserve failed" if status is Status.FAILED else "",
        created_at=at,
        updated_at=at,
    )


async def test_sagas_page_lists_and_operator_retries_and_aborts(store: Store) -> None:
    """Sagas in progress and ended; a viewer is refused; an operator retries and aborts."""
    for rec in (_saga("r1", Status.RUNNING, 1.0), _saga("f1", Status.FAILED, 2.0)):
        await store.put(f"sagas/order/{rec.id}", rec.encode())
    async with client(store, "vera", Role.VIEWER) as viewer:
        page = await viewer.get("/sagas")
        assert "order/r1" in page.text and "order/f1" in page.text and "/retry" not in page.text
        one = await viewer.get("/sagas/order/f1")
        assert "card declined" in one.text and "compensation of reserve failed" in one.text
        assert (await viewer.post("/sagas/order/f1/retry")).status_code == 403
        assert (await viewer.get("/sagas/order/none")).status_code == 404
    async with client(store, "olga", Role.OPERATOR) as op:
        page = await op.get("/sagas?status=failed")
        assert "/sagas/order/f1/retry" in page.text and "order/r1" not in page.text
        retried = await op.post_json("/sagas/order/f1/retry")
        assert retried.json()["message"] == "order/f1: compensating again"
        again = await op.post_json("/sagas/order/f1/retry")
        assert again.status_code == 409 and "not failed" in again.json()["error"]
        aborted = await op.post("/sagas/order/r1/abort")
        assert aborted.status_code == 303 and aborted.headers["location"] == "/sagas/order/r1"
        shown = await op.get("/sagas/order/r1")
        assert "abort asked" in shown.text and "/sagas/order/r1/abort" not in shown.text
    assert (await get_saga(store, "order/f1")).status is Status.COMPENSATING
    assert (await get_saga(store, "order/r1")).abort is True
    assert await audit_versions(store, "saga.retry") == [("failed", "compensating")]
    assert await audit_versions(store, "saga.abort") == [("running", "running (abort asked)")]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def browser() -> AsyncIterator[Any]:
    """One Chromium for the module's browser flows."""
    async with chromium() as opened:
        yield opened


@pytest.mark.slow
@pytest.mark.asyncio(loop_scope="module")
@pytest.mark.parametrize("backend", ["sqlite", "etcd"])
async def test_browser_locks_live_and_saga_retry(
    browser: Any, store_url: str, backend: str
) -> None:
    """In Chromium: a lock taken while the page is open appears with its token; an operator
    retries a failed saga from the sagas page (confirming), and the audit log has it."""
    async with keel.connect(store_url) as store, serving(store) as url:
        await store.put("sagas/order/f1", _saga("f1", Status.FAILED, 2.0).encode())
        await store.put("sagas/order/r1", _saga("r1", Status.RUNNING, 3.0).encode())
        await add_user(store, "olga", Role.OPERATOR)
        context = await browser.new_context(viewport={"width": 1280, "height": 800})
        page = await context.new_page()
        page.on("dialog", lambda dialog: asyncio.ensure_future(dialog.accept()))
        await login(page, url, "olga")
        await page.goto(f"{url}/coord")
        await page.wait_for_selector("html[data-live-ready='1']", state="attached")
        async with Session(store, ttl_s=10) as session:
            held = await Lock(session, "nightly-backup").acquire()
            async with Election(session, "scheduler").campaign(b"node-7"):
                await page.wait_for_selector("#lines >> text=nightly-backup", timeout=5000)
                await page.wait_for_selector("#lines >> text=node-7", timeout=5000)
                assert str(held.fencing_token) in await page.inner_text("#lines")
                await shot(page, f"coord-{backend}")
            await held.release()
        await page.goto(f"{url}/sagas")
        await shot(page, f"sagas-{backend}")
        await page.click("#sagas tr:has-text('order/f1') button:has-text('Retry')")
        await page.wait_for_selector("text=order/f1: compensating again")
        assert "compensating" in await page.inner_text("#saga-status")
        await shot(page, f"saga-{backend}")
        await page.set_viewport_size({"width": 390, "height": 844})
        await page.goto(f"{url}/sagas")
        await shot(page, f"sagas-phone-{backend}")
        await context.close()
        assert (await get_saga(store, "order/f1")).status is Status.COMPENSATING
        assert ("olga", "saga.retry", "saga/order/f1") in await audit_actions(store)
