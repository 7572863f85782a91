"""Every console page in a browser, with a screenshot of each (docs/console.md's).

One demo environment on SQLite (services with an override and a failing
check, configs with history and a gray release, jobs with runs, a held lock
and an election, sagas, users, audit entries); each page is captured at
1280x800, the services page also at a phone's 390x844. The screenshots go to
a temporary directory; with ``KEEL_DOCS_SHOTS=1`` into ``docs/console/``,
replacing the docs' pictures.
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import Any

import pytest
from tests.console._core import DOCS_SHOTS, add_user, browser_login, chromium, serving

import keel as keel_pkg
from keel.config import ConfigCenter
from keel.console import Role
from keel.coord import Election, Lock, Session
from keel.registry import Instance, Registry
from keel.saga import SagaRecord, Status, StepRecord, StepState
from keel.schedule import Execution, JobDef, put_job
from keel.schedule import Status as RunStatus
from keel.store import Store

pytestmark = pytest.mark.slow


async def _services(registry: Registry, store: Store) -> None:
    for n, (service, zone) in enumerate(
        [("orders", "eu-1"), ("orders", "eu-2"), ("orders", "eu-1"), ("payments", "eu-1")]
    ):
        await registry.register(
            Instance(
                service=service, address=f"10.0.0.{n + 1}", port=8080, id=f"{service[0]}-{n + 1}",
                zone=zone, version="2.3.1", weight=100,
            )
        )  # fmt: skip
    mark = (
        b'{"status": "failing", "reason": "HTTP 503 from /readyz", "since": %d, "checker": "up-1"}'
    )
    await store.put("health/orders/o-3", mark % int(time.time()))


async def _configs(store: Store) -> None:
    center = ConfigCenter(store)
    await center.publish("orders.yaml", "limit: 10\nzone: eu\n", author="ann", comment="first")
    await center.publish("orders.yaml", "limit: 20\nzone: eu\nretries: 3\n", author="ann")
    await center.publish("payments.json", '{"provider": "acme", "timeout_s": 2}', author="bo")


async def _jobs(store: Store) -> None:
    await put_job(store, JobDef(name="report", trigger={"cron": "0 */5 * * * *"}))
    now = time.time()
    for n in range(24):
        fire = now - (24 - n) * 300
        failed = n in (7, 19)
        run = Execution(
            job="report", name=f"{round(fire * 1000):013d}-000", handler="report", fire=fire,
            status=RunStatus.FAILED if failed else RunStatus.SUCCEEDED, attempt=1,
            worker="worker-1", token=100 + n, started_at=fire,
            finished_at=fire + 0.4 + (n % 5) * 0.3,
            log=f"report {n}: 120 rows\\n", error="TimeoutError: upstream" if failed else "",
        )  # fmt: skip
        await store.put(run.key, run.encode())


async def _sagas(store: Store) -> None:
    for saga_id, status in (("r-1041", Status.RUNNING), ("f-1039", Status.FAILED)):
        record = SagaRecord(
            saga="order", id=saga_id, status=status,
            steps={
                "reserve": StepRecord(state=StepState.DONE, attempts=1),
                "charge": StepRecord(state=StepState.FAILED, attempts=3, error="card declined"),
            },
            created_at=time.time() - 60, updated_at=time.time() - 30,
        )  # fmt: skip
        await store.put(f"sagas/order/{saga_id}", record.encode())


async def _shoot(page: Any, url: str, path: str, out: Path) -> None:
    await page.goto(f"{url}{path}")
    await page.wait_for_load_state("networkidle")
    await page.screenshot(path=str(out))


async def _act(page: Any, url: str) -> None:
    """A few changes through the console, for the audit log."""
    row = page.locator('tr[data-instance="payments/p-4"]')
    await row.locator("input[name=weight]").fill("50")
    await row.locator("button[value=weight]").click()
    await page.wait_for_selector("text=payments/p-4: weight done")
    await page.goto(f"{url}/configs/orders.yaml")
    await page.fill("#publish-content", "limit: 25\nzone: eu\nretries: 3\n")
    await page.click("#publish-button")
    await page.wait_for_selector("text=published orders.yaml version 3")
    status = await page.evaluate(
        """async () => (await fetch("/jobs/report/trigger", {method: "POST",
            headers: {"X-CSRF-Token": document.querySelector("main").dataset.csrf,
                      "Content-Type": "application/x-www-form-urlencoded"},
            body: ""})).status"""
    )
    assert status in (200, 303), status
    await page.goto(f"{url}/users")
    await page.fill("#new-name", "vera")
    await page.fill("#new-pw1", "viewer password")
    await page.fill("#new-pw2", "viewer password")
    await page.click("text=Add user")
    await page.wait_for_selector("text=user vera added (viewer)")


async def _tour(browser: Any, url: str, out: Path) -> None:
    context = await browser.new_context(viewport={"width": 1280, "height": 800})
    page = await context.new_page()
    page.on("dialog", lambda dialog: asyncio.ensure_future(dialog.accept()))
    await page.goto(f"{url}/login")
    await page.screenshot(path=str(out / "login.png"))
    await browser_login(page, url, "ada")
    await page.goto(f"{url}/services")
    row = page.locator('tr[data-instance="orders/o-2"]')
    await row.locator("button[value=drain]").click()
    await page.wait_for_selector("text=orders/o-2: drain done")
    await page.screenshot(path=str(out / "services.png"))
    await _act(page, url)
    for path, name in [
        ("/", "overview"),
        ("/configs", "configs"),
        ("/configs/orders.yaml", "config"),
        ("/jobs", "jobs"),
        ("/jobs/report", "job"),
        ("/coord", "coordination"),
        ("/sagas", "sagas"),
        ("/store?prefix=services/orders/", "store"),
        ("/store/key?key=services/orders/o-1&as=yaml", "store-key"),
        ("/users", "users"),
    ]:
        await _shoot(page, url, path, out / f"{name}.png")
    await page.goto(f"{url}/audit")
    await page.locator("#entries details summary").nth(1).click()
    await page.screenshot(path=str(out / "audit.png"))
    await page.set_viewport_size({"width": 390, "height": 844})
    await _shoot(page, url, "/services", out / "services-phone.png")
    await context.close()


async def test_every_page_renders_in_the_browser(tmp_path: Path) -> None:
    """The demo environment's pages all load in Chromium after a few actions; each is captured."""
    out = DOCS_SHOTS if os.environ.get("KEEL_DOCS_SHOTS") == "1" else tmp_path / "shots"
    out.mkdir(exist_ok=True)
    url_store = f"sqlite:///{tmp_path / 'demo.db'}"
    async with (
        keel_pkg.connect(url_store) as store,
        Registry(store) as registry,
        Session(store, ttl_s=10) as session,
    ):
        await add_user(store, "ada", Role.ADMIN)
        await add_user(store, "olga", Role.OPERATOR)
        await _services(registry, store)
        await _configs(store)
        await _jobs(store)
        await _sagas(store)
        held = await Lock(session, "nightly-report").acquire()
        async with (
            Election(session, "scheduler").campaign(b"node-7"),
            serving(store) as url,
            chromium() as browser,
        ):
            await _tour(browser, url, out)
        await held.release()
    shots = {p.name: p.stat().st_size for p in out.glob("*.png")}
    assert len(shots) == 14 and all(shots.values()), shots
