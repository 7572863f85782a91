"""The configs page over HTTP on every backend, and an operator's flow in Chromium."""

from __future__ import annotations

import asyncio
import re
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
    flashes,
    login,
    serving,
    shot,
)

import keel
from keel.config import ConfigCenter, GrayRule
from keel.console import Role
from keel.coord import Session
from keel.store import Store


async def test_viewer_sees_no_publish_and_is_refused(store: Store) -> None:
    """A viewer reads a config but gets no publish form, and every change answers 403."""
    center = ConfigCenter(store)
    await center.publish("app.yaml", "a: 1\n", author="ann")
    async with client(store, "vera", Role.VIEWER) as c:
        page = await c.get("/configs/app.yaml")
        assert page.status_code == 200 and "a: 1" in page.text
        assert "/configs/app.yaml/publish" not in page.text
        assert "/rollback" not in page.text and "New config" not in (await c.get("/configs")).text
        for path in ("publish", "rollback", "gray", "promote", "abort"):
            answer = await c.post(
                f"/configs/app.yaml/{path}", {"content": "a: 2\n", "expected_version": "1"}
            )
            assert answer.status_code == 403, path
        assert (
            await c.post("/configs/new", {"name": "b.yaml", "content": "x: 1"})
        ).status_code == 403
    current = await center.get("app.yaml")
    assert current is not None and current.version == 1


async def test_operator_publishes_diffs_and_rolls_back(store: Store) -> None:
    """Create, publish with CAS, see the side-by-side diff, roll back: history grows by one each."""
    center = ConfigCenter(store)
    async with client(store, "olga", Role.OPERATOR) as c:
        made = await c.post(
            "/configs/new",
            {"name": "app.yaml", "content": "a: 1\r\nb: 2\r\n", "expected_version": "0"},
        )
        assert made.status_code == 303 and made.headers["location"] == "/configs/app.yaml"
        first = await center.get("app.yaml")
        assert first is not None and first.content == "a: 1\nb: 2\n" and first.author == "olga"
        second = await c.post_json(
            "/configs/app.yaml/publish",
            {"content": "a: 1\nb: 3\n", "expected_version": "1", "comment": "raise b"},
        )
        assert second.json() == {
            "ok": True,
            "message": "published app.yaml version 2",
            "version": 2,
        }
        page = await c.get("/configs/app.yaml")
        assert 'data-kind="changed"' in page.text and "b: 3" in page.text and "raise b" in page.text
        chosen = await c.get("/configs/app.yaml?a=2&b=2")
        assert "have the same content" in chosen.text
        back = await c.post("/configs/app.yaml/rollback", {"version": "1"})
        assert back.status_code == 303
        shown = await c.get(back.headers["location"])
        assert "rolled app.yaml back to version 1" in " ".join(flashes(shown.text))
    history = await center.history("app.yaml")
    assert [d.version for d in history] == [1, 2, 3] and history[-1].content == "a: 1\nb: 2\n"
    assert await audit_versions(store, "config.publish") == [(1, 2), (None, 1)]
    assert await audit_versions(store, "config.rollback") == [(2, 3)]


async def test_publish_conflict_names_who_published_meanwhile(store: Store) -> None:
    """Publishing over a version someone else replaced answers 409 naming their version."""
    center = ConfigCenter(store)
    await center.publish("app.yaml", "a: 1\n", author="ann")
    async with client(store, "olga", Role.OPERATOR) as c:
        await center.publish("app.yaml", "a: 2\n", author="bob", comment="hotfix")
        stale = await c.post_json(
            "/configs/app.yaml/publish", {"content": "a: 3\n", "expected_version": "1"}
        )
        assert stale.status_code == 409
        error = stale.json()["error"]
        assert "version 2 by bob" in error and "hotfix" in error and "You edited version 1" in error
        form = await c.post(
            "/configs/app.yaml/publish",
            {"content": "a: 3\n", "expected_version": "1", "next": "/configs/app.yaml"},
        )
        assert form.status_code == 303
        shown = await c.get(form.headers["location"])
        assert any("version 2 by bob" in f for f in flashes(shown.text))
        bad = await c.post_json(
            "/configs/app.yaml/publish", {"content": "a: [\n", "expected_version": "2"}
        )
        assert bad.status_code == 400 and "line" in bad.json()["error"]
    current = await center.get("app.yaml")
    assert current is not None and current.version == 2


async def test_gray_release_start_promote_and_abort(store: Store) -> None:
    """A gray release shows its rule and diff; promote makes it main, abort ends it."""
    center = ConfigCenter(store)
    await center.publish("app.yaml", "a: 1\n", author="ann")
    async with client(store, "olga", Role.OPERATOR) as c:
        started = await c.post_json(
            "/configs/app.yaml/gray",
            {"content": "a: 2\n", "ids": "c1, c2", "labels": "zone=eu-*", "percent": ""},
        )
        assert started.json()["ok"] is True
        page = await c.get("/configs/app.yaml")
        assert "c1, c2" in page.text and "zone=eu-*" in page.text and "Promote to main" in page.text
        again = await c.post_json("/configs/app.yaml/gray", {"content": "a: 3\n", "ids": "c9"})
        assert again.status_code == 409
        empty = await c.post_json("/configs/app.yaml/gray", {"content": "a: 3\n", "replace": "1"})
        assert empty.status_code == 400
        promoted = await c.post_json("/configs/app.yaml/promote")
        assert promoted.json()["version"] == 2
        assert await center.gray("app.yaml") is None
        await c.post_json("/configs/app.yaml/gray", {"content": "a: 4\n", "percent": "10"})
        aborted = await c.post_json("/configs/app.yaml/abort")
        assert aborted.json()["message"] == "gray release of app.yaml aborted"
        missing = await c.get("/configs/nope.yaml")
        assert missing.status_code == 404
    assert await center.gray("app.yaml") is None
    current = await center.get("app.yaml")
    assert current is not None and current.content == "a: 2\n"


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def browser() -> AsyncIterator[Any]:
    """One Chromium for the module's browser flows."""
    async with chromium() as opened:
        yield opened


@pytest.mark.slow
@pytest.mark.asyncio(loop_scope="module")
@pytest.mark.parametrize("backend", ["sqlite", "etcd"])
async def test_browser_viewer_cannot_publish_operator_publishes_and_rolls_back(
    browser: Any, store_url: str, backend: str
) -> None:
    """In Chromium: no publish button for a viewer (and 403 on the endpoint); an operator
    publishes, sees the diff and the history update live, rolls back; the audit log has it."""
    async with keel.connect(store_url) as store, serving(store) as url:
        center = ConfigCenter(store)
        await center.publish("orders.yaml", "limit: 10\nzone: eu\n", author="ann")
        await add_user(store, "vera", Role.VIEWER)
        await add_user(store, "olga", Role.OPERATOR)
        viewer = await browser.new_context(viewport={"width": 1280, "height": 800})
        page = await viewer.new_page()
        await login(page, url, "vera")
        await page.goto(f"{url}/configs/orders.yaml")
        assert await page.locator("#publish-button").count() == 0
        assert await page.get_by_role("button", name=re.compile("Roll back")).count() == 0
        status = await page.evaluate(
            """async () => (await fetch("/configs/orders.yaml/publish", {method: "POST",
                headers: {"X-CSRF-Token": document.querySelector("main").dataset.csrf,
                          "Content-Type": "application/x-www-form-urlencoded"},
                body: "content=limit%3A%200&expected_version=1"})).status"""
        )
        assert status == 403
        await viewer.close()

        operator = await browser.new_context(viewport={"width": 1280, "height": 800})
        page = await operator.new_page()
        page.on("dialog", lambda dialog: asyncio.ensure_future(dialog.accept()))
        await login(page, url, "olga")
        await page.goto(f"{url}/configs")
        await shot(page, f"configs-{backend}")
        await page.click("text=orders.yaml")
        await page.fill("#publish-content", "limit: 20\nzone: eu\n")
        await page.fill("#publish-comment", "double the limit")
        await page.click("#publish-button")
        await page.wait_for_selector("text=published orders.yaml version 2")
        assert await page.inner_text("#current-version") == "2"
        changed = page.locator('#diff [data-kind="changed"]')
        assert "limit: 20" in " ".join(await changed.all_inner_texts())
        await shot(page, f"config-diff-{backend}")
        await center.publish(
            "orders.yaml", "limit: 30\nzone: eu\n", author="cli", comment="from cli"
        )
        await page.wait_for_selector("#history >> text=from cli", timeout=3000)
        await page.click("#history button:has-text('Roll back to 1')")
        await page.wait_for_selector("text=rolled orders.yaml back to version 1")
        assert await page.inner_text("#current-version") == "4"
        await shot(page, f"config-rolled-back-{backend}")
        await page.set_viewport_size({"width": 390, "height": 844})
        await shot(page, f"config-phone-{backend}")
        await operator.close()
        current = await center.get("orders.yaml")
        assert current is not None and current.content == "limit: 10\nzone: eu\n"
        mine = [(a, t) for who, a, t in await audit_actions(store) if who == "olga"]
        assert ("config.publish", "config/orders.yaml") in mine
        assert ("config.rollback", "config/orders.yaml") in mine


async def test_malformed_records_are_shown_not_fatal(store: Store) -> None:
    """A malformed current record, gray record or client report is named on the page; the
    rest of the page (history, list) still renders."""
    center = ConfigCenter(store)
    await center.publish("app.yaml", "a: 1\n", author="ann")
    await store.put("config/app.yaml", b"{not json")
    await store.put("config-gray/app.yaml", b'{"name": 3}')
    await store.put("config-clients/app.yaml/c1", b"[]")
    await store.put("config/other.yaml", b"\xff\xfe")
    async with client(store, "olga", Role.OPERATOR) as c:
        listed = await c.get("/configs")
        assert listed.status_code == 200 and "malformed" in listed.text
        page = await c.get("/configs/app.yaml")
        assert page.status_code == 200
        assert "malformed record" in page.text and "malformed gray record" in page.text
        assert "malformed report" in page.text and "version 1" in page.text
        refused = await c.post_json(
            "/configs/app.yaml/publish", {"content": "a: 2\n", "expected_version": "1"}
        )
        assert refused.status_code == 409 and "--force" in refused.json()["error"]


async def test_deleted_config_shows_history_and_publishes_again(store: Store) -> None:
    """A deleted config keeps its history page; its publish form brings it back."""
    center = ConfigCenter(store)
    await center.publish("app.yaml", "a: 1\n", author="ann")
    await center.delete("app.yaml")
    async with client(store, "olga", Role.OPERATOR) as c:
        page = await c.get("/configs/app.yaml")
        assert page.status_code == 200 and "Deleted: history is kept" in page.text
        assert 'name="expected_version" value="0"' in page.text
        back = await c.post_json(
            "/configs/app.yaml/publish", {"content": "a: 2\n", "expected_version": "0"}
        )
        assert back.json()["version"] == 2


async def test_clients_table_shows_which_client_runs_gray(store: Store) -> None:
    """Two live bindings report their versions: the one the rule picks runs gray."""
    center = ConfigCenter(store)
    await center.publish("app.yaml", "a: 1\n", author="ann")
    await center.publish_gray("app.yaml", "a: 2\n", GrayRule(ids=("canary-1",)))
    async with (
        Session(store, ttl_s=10) as session,
        center.bind("app.yaml", client_id="canary-1", session=session, environ={}),
        center.bind("app.yaml", client_id="stable-1", session=session, environ={}),
        client(store, "vera", Role.VIEWER) as c,
    ):
        async with asyncio.timeout(10):
            while True:  # bounded: both bindings report on start
                reports, _ = await store.range("config-clients/app.yaml/")
                if len(reports) == 2:
                    break
                await asyncio.sleep(0.05)
        page = await c.get("/configs/app.yaml", params={"fragment": "clients"})
    rows = re.findall(r"<tr>\s*<td>([\w-]+)</td>(.*?)</tr>", page.text, re.S)
    gray = {name: "badge gray" in rest for name, rest in rows}
    assert gray == {"canary-1": True, "stable-1": False}


async def _tab_to(page: Any, selector: str, limit: int = 60) -> None:
    """Press Tab until ``selector`` has the focus (at most ``limit`` presses)."""
    for _ in range(limit):
        await page.keyboard.press("Tab")
        if await page.evaluate(f"document.activeElement.matches({selector!r})"):
            return
    raise AssertionError(f"{selector} never got the focus by Tab")


@pytest.mark.slow
@pytest.mark.asyncio(loop_scope="module")
@pytest.mark.parametrize("backend", ["sqlite"])
async def test_browser_keyboard_only_publish_and_rollback(
    browser: Any, store_url: str, backend: str
) -> None:
    """With the keyboard alone an operator publishes a version and rolls it back."""
    async with keel.connect(store_url) as store, serving(store) as url:
        center = ConfigCenter(store)
        await center.publish("app.yaml", "a: 1\n", author="ann")
        await add_user(store, "olga", Role.OPERATOR)
        context = await browser.new_context(viewport={"width": 1280, "height": 800})
        page = await context.new_page()
        page.on("dialog", lambda dialog: asyncio.ensure_future(dialog.accept()))
        await login(page, url, "olga")
        await page.goto(f"{url}/configs/app.yaml")
        await _tab_to(page, "#publish-content")
        await page.keyboard.press("Control+A")
        await page.keyboard.type("a: 2\n")
        await _tab_to(page, "#publish-button")
        await page.keyboard.press("Enter")
        await page.wait_for_selector("text=published app.yaml version 2")
        await _tab_to(page, "#history button")
        await page.keyboard.press("Enter")
        await page.wait_for_selector("text=rolled app.yaml back to version 1")
        await context.close()
        history = await center.history("app.yaml")
    assert [d.content for d in history] == ["a: 1\n", "a: 2\n", "a: 1\n"]
