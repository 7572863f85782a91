"""The core pages in Chromium: first admin from the CLI, users, overview, services, store, audit.

Flows on sqlite and etcd: the first admin is created with ``keel console
adduser``; the admin adds an operator and a viewer on the Users page; the
operator drains an instance and sets its weight, and ``keel instances``
shows it; the viewer sees no action button and the endpoint answers 403; the
store browser shows values as JSON/YAML; the audit log lists every change.
Screenshots of each page go to ``tests/console/artifacts/`` (and to
``docs/console/`` with ``KEEL_DOCS_SHOTS=1``).
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio
from tests.console._core import PASSWORD, browser_login, chromium, keel, serving, shot

import keel as keel_pkg
from keel.console._audit import Audit
from keel.registry import Instance, Registry

pytestmark = pytest.mark.slow


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def browser() -> AsyncIterator[Any]:
    """One Chromium for the module."""
    async with chromium() as opened:
        yield opened


async def _new_page(browser: Any, width: int = 1280, height: int = 800) -> tuple[Any, Any]:
    context = await browser.new_context(viewport={"width": width, "height": height})
    page = await context.new_page()
    page.on("dialog", lambda dialog: asyncio.ensure_future(dialog.accept()))
    return context, page


async def _add_user_in_page(page: Any, name: str, role: str) -> None:
    await page.fill("#new-name", name)
    await page.select_option("#new-role", role)
    await page.fill("#new-pw1", PASSWORD)
    await page.fill("#new-pw2", PASSWORD)
    await page.click("text=Add user")
    await page.wait_for_selector(f"text=user {name} added ({role})")


@pytest.mark.asyncio(loop_scope="module")
@pytest.mark.parametrize("backend", ["sqlite", "etcd"])
async def test_console_core_pages(browser: Any, store_url: str, backend: str) -> None:
    code, out, err = await keel(
        "console", "adduser", "ada", "--role", "admin", "--password-stdin",
        url=store_url, stdin=PASSWORD.encode() + b"\n",
    )  # fmt: skip
    assert code == 0, err
    assert PASSWORD not in out + err
    async with keel_pkg.connect(store_url) as store, Registry(store) as registry:
        for n, zone in ((1, "eu-1"), (2, "eu-2")):
            await registry.register(
                Instance(
                    service="orders", address="127.0.0.1", port=8000 + n, id=f"o-{n}",
                    zone=zone, version="1.4.2", weight=100,
                )
            )  # fmt: skip
        await store.put("config-demo/feature.json", b'{"enabled": true, "ratio": 0.25}')
        async with serving(store) as url:
            # admin: users page, two new users
            context, page = await _new_page(browser)
            await browser_login(page, url, "ada")
            await page.goto(f"{url}/users")
            await _add_user_in_page(page, "olga", "operator")
            await _add_user_in_page(page, "vera", "viewer")
            await shot(page, f"users-{backend}")
            # admin: store browser, a value as YAML, a key created with CAS
            await page.goto(f"{url}/store?prefix=config-demo/")
            await page.click("text=config-demo/feature.json")
            await page.select_option("#as", "yaml")
            await page.wait_for_url(re.compile(r".*as=yaml"))
            assert "ratio: 0.25" in await page.inner_text("#value")
            await shot(page, f"store-{backend}")
            await page.goto(f"{url}/store/key?key=config-demo/new.txt")
            await page.fill("#newvalue", "hello")
            await page.click("text=Save")
            await page.wait_for_selector("text=config-demo/new.txt saved")
            kv = await store.get("config-demo/new.txt")
            assert kv is not None and kv.value == b"hello"
            await context.close()

            # operator: overview, drain, weight; keel instances shows it
            context, page = await _new_page(browser)
            await browser_login(page, url, "olga")
            assert await page.locator("nav >> text=Users").count() == 0
            await shot(page, f"overview-{backend}")
            await page.goto(f"{url}/services")
            row = page.locator('tr[data-instance="orders/o-1"]')
            await row.locator("button[value=drain]").click()
            await page.wait_for_selector("text=orders/o-1: drain done")
            assert await row.locator(".badge").inner_text() == "draining"
            await row.locator("input[name=weight]").fill("5")
            await row.locator("button[value=weight]").click()
            await page.wait_for_selector("text=orders/o-1: weight done")
            await shot(page, f"services-{backend}")
            code, out, err = await keel("instances", "orders", "-o", "json", url=store_url)
            assert code == 0, err
            listed = {i["id"]: i for i in json.loads(out)}
            assert json.dumps(listed["o-1"]).count("draining") >= 1, listed["o-1"]
            assert listed["o-1"]["weight"] == 5
            await page.set_viewport_size({"width": 390, "height": 844})
            await shot(page, f"services-phone-{backend}")
            assert not await page.locator("nav >> text=Audit").is_visible()
            await page.click(".menu-button")  # the menu folds away on a phone
            assert await page.locator("nav >> text=Audit").is_visible()
            await context.close()

            # viewer: no buttons, 403 from the endpoint
            context, page = await _new_page(browser)
            await browser_login(page, url, "vera")
            await page.goto(f"{url}/services")
            assert await page.locator("button[value=drain], button[value=undrain]").count() == 0
            status = await page.evaluate(
                """async () => (await fetch("/services/orders/o-2/override", {method: "POST",
                    headers: {"X-CSRF-Token": document.querySelector("main").dataset.csrf,
                              "Content-Type": "application/x-www-form-urlencoded"},
                    body: "op=drain"})).status"""
            )
            assert status == 403
            await page.goto(f"{url}/users")
            assert "needs the admin role" in await page.inner_text("main")
            await context.close()

            # admin: the audit log has it all
            context, page = await _new_page(browser)
            await browser_login(page, url, "ada")
            await page.goto(f"{url}/audit")
            text = await page.inner_text("#entries")
            for expected in ("user.add", "store.put", "instance.override", "olga", "orders/o-1"):
                assert expected in text, expected
            await page.locator("#entries details summary").first.click()
            await shot(page, f"audit-{backend}")
            await context.close()
    async with keel_pkg.connect(store_url) as store:
        entries = await Audit(store).recent(20)
    actions = [(e.actor, e.action, e.target) for e in reversed(entries)]
    assert actions[0][1:] == ("user.add", "user/ada") and actions[0][0].startswith("cli:")
    assert ("ada", "user.add", "user/olga") in actions
    assert ("ada", "store.put", "store/config-demo/new.txt") in actions
    assert ("olga", "instance.override", "instance/orders/o-1") in actions
    drained = next(
        e for e in entries if e.action == "instance.override" and e.detail == {"op": "drain"}
    )
    assert drained.before is None and drained.after["draining"] is True


@pytest.mark.asyncio(loop_scope="module")
async def test_keyboard_only(browser: Any, tmp_path: Any) -> None:
    """Log in, reach the services page and drain an instance with the keyboard alone."""
    url_store = f"sqlite:///{tmp_path / 'keys.db'}"
    async with keel_pkg.connect(url_store) as store, Registry(store) as registry:
        from tests.console._core import add_user

        from keel.console import Role

        await add_user(store, "olga", Role.OPERATOR)
        await registry.register(
            Instance(service="orders", address="127.0.0.1", port=8001, id="o-1")
        )
        async with serving(store) as url:
            context, page = await _new_page(browser)
            await page.goto(f"{url}/login")
            await page.keyboard.type("olga")  # the name field has the focus
            await page.keyboard.press("Tab")
            await page.keyboard.type(PASSWORD)
            await page.keyboard.press("Enter")
            await page.wait_for_selector("form.logout")
            await page.keyboard.press("Tab")
            assert await page.evaluate("document.activeElement.textContent") == "Skip to content"
            await page.keyboard.press("Enter")
            assert await page.evaluate("document.activeElement.id") == "main"
            await page.goto(f"{url}/services")
            for _ in range(60):  # Tab through the page to the Drain button
                await page.keyboard.press("Tab")
                if await page.evaluate("document.activeElement.value") == "drain":
                    break
            await page.keyboard.press("Enter")
            await page.wait_for_selector("text=orders/o-1: drain done")
            await context.close()
