"""Live updates: one store watch per console, coalesced per subscriber, CLI changes on screen."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import pytest_asyncio
from tests.console._core import (
    add_user,
    browser_login,
    chromium,
    keel,
    log_in,
    serving,
    shot,
)

import keel as keel_pkg
from keel.console import Role
from keel.console._live import ALL, Hub, live_endpoint, topic_of
from keel.console._metrics import ConsoleMetrics
from keel.registry import Instance, Registry
from keel.store import Store


@pytest.mark.parametrize(
    ("key", "topic"),
    [
        ("services/orders/i-1", "services"),
        ("overrides/orders/i-1", "overrides"),
        ("config-history/a.yaml/3", "config-history"),
        ("console/audit/0000000001/000000000001", "audit"),
        ("console/users/ada", "users"),
        ("console/sessions/abc", None),
        ("console/audit-seq", None),
        ("plain", "plain"),
    ],
)
def test_topics(key: str, topic: str | None) -> None:
    assert topic_of(key) == topic


async def test_a_burst_is_coalesced_per_topic() -> None:
    async with keel_pkg.connect("memory://") as store:
        hub = Hub(store, metrics=ConsoleMetrics())
        services = hub.subscribe(frozenset({"services"}))
        everything = hub.subscribe()
        for revision in range(1, 20_001):
            hub.publish("services" if revision % 2 else "jobs", revision)
        assert services.take() == {"services": 19_999}
        assert everything.take() == {"services": 19_999, "jobs": 20_000}
        assert services.take() == {} and not services.wake.is_set()
        hub.publish(ALL, 0)  # after a compaction every page refreshes
        assert services.take() == {ALL: 0}
        hub.unsubscribe(services)
        hub.publish("services", 5)
        assert services.take() == {}


async def test_after_compaction_every_page_refreshes(store: Store) -> None:
    """A watch resumed from a compacted revision announces ALL, then follows changes again."""
    hub = Hub(store, metrics=ConsoleMetrics())
    for n in range(5):
        await store.put(f"services/a/{n}", b"{}")
    await store.compact(await store.put("services/a/x", b"{}"))
    hub.revision = 1  # as if the console had been away since revision 1
    subscriber = hub.subscribe(frozenset({"services"}))
    task = asyncio.create_task(hub.run())
    try:
        async with asyncio.timeout(10):
            await subscriber.wake.wait()
            assert ALL in subscriber.take()
            await hub.running.wait()
            revision = await store.put("services/a/y", b"{}")
            while subscriber.take().get("services") != revision:
                await subscriber.wake.wait()
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_a_client_that_stops_reading_is_dropped() -> None:
    """A stream whose sends block longer than send_timeout_s ends and leaves the hub."""
    async with keel_pkg.connect("memory://") as store:
        metrics = ConsoleMetrics()
        hub = Hub(store, metrics=metrics, send_timeout_s=0.2, min_interval_s=0.01)
        sent: list[bytes] = []
        stuck, hello = asyncio.Event(), asyncio.Event()

        async def send(message: dict[str, Any]) -> None:
            if len(sent) >= 2:  # the start and the hello went out; then the client stops reading
                stuck.set()
                await asyncio.Event().wait()
            sent.append(message.get("body", b""))
            if len(sent) == 2:
                hello.set()

        async def receive() -> dict[str, Any]:
            await asyncio.Event().wait()  # never disconnects by itself
            return {"type": "http.disconnect"}

        scope = {"type": "http", "query_string": b"topics=services"}
        stream = asyncio.create_task(live_endpoint(hub, scope, receive, send))  # type: ignore[arg-type]
        async with asyncio.timeout(5):
            await hello.wait()
        hub.publish("services", 7)
        async with asyncio.timeout(5):
            await stream
        assert stuck.is_set() and not hub._subscribers
        assert metrics.live_dropped._value.get() == 1


async def _events(response: httpx.Response) -> AsyncIterator[tuple[str, dict[str, Any]]]:
    event = ""
    async for line in response.aiter_lines():
        if line.startswith("event: "):
            event = line.removeprefix("event: ")
        elif line.startswith("data: "):
            yield event, json.loads(line.removeprefix("data: "))


async def test_the_stream_announces_store_changes(store: Store) -> None:
    await add_user(store, "ada", Role.VIEWER)
    async with serving(store) as url, httpx.AsyncClient(base_url=url) as http:
        assert (await log_in(http, "ada")).status_code == 303
        async with http.stream("GET", "/live?topics=services,config") as response:
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            events = _events(response)
            kind, _ = await anext(events)
            assert kind == "hello"
            await store.put("jobs/x", b"{}")  # not asked for
            revision = await store.put("services/orders/i-1", b"{}")
            async with asyncio.timeout(5):
                kind, data = await anext(events)
            assert (kind, data) == ("change", {"topic": "services", "revision": revision})


async def test_the_stream_keeps_up_with_a_burst(store: Store) -> None:
    """400 changes at about 200/s: the stream ends on the last revision, coalesced on the way."""
    await add_user(store, "ada", Role.VIEWER)
    async with serving(store) as url, httpx.AsyncClient(base_url=url) as http:
        assert (await log_in(http, "ada")).status_code == 303
        async with http.stream("GET", "/live?topics=services") as response:
            events = _events(response)
            await anext(events)  # hello
            last = 0
            for n in range(400):
                last = await store.put(f"services/orders/i-{n % 50}", b"{}")
                if n % 10 == 9:
                    await asyncio.sleep(0.05)
            seen, notifications = 0, 0
            async with asyncio.timeout(10):
                while seen < last:
                    _, data = await anext(events)
                    seen, notifications = data["revision"], notifications + 1
    assert seen == last
    assert notifications <= 400
    print(f"live: 400 changes arrived as {notifications} notifications")


async def test_the_stream_needs_a_session(store: Store) -> None:
    async with serving(store) as url, httpx.AsyncClient(base_url=url) as http:
        answer = await http.get("/live")
        assert answer.status_code == 401


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def browser() -> AsyncIterator[Any]:
    """One Chromium for the module."""
    async with chromium() as opened:
        yield opened


@pytest.mark.slow
@pytest.mark.asyncio(loop_scope="module")
@pytest.mark.parametrize("backend", ["sqlite", "etcd"])
async def test_a_cli_change_shows_on_an_open_page_within_a_second(
    browser: Any, store_url: str, backend: str
) -> None:
    async with keel_pkg.connect(store_url) as store, Registry(store) as registry:
        await add_user(store, "olga", Role.OPERATOR)
        await registry.register(
            Instance(service="orders", address="127.0.0.1", port=8001, id="o-1", zone="eu-1")
        )
        async with serving(store) as url:
            context = await browser.new_context(viewport={"width": 1280, "height": 800})
            page = await context.new_page()
            await browser_login(page, url, "olga")
            await page.goto(f"{url}/services")
            await page.wait_for_selector("html[data-live-ready]")
            row = 'tr[data-instance="orders/o-1"]'
            assert await page.inner_text(f"{row} .badge") == "up"
            code, _, err = await keel("instance", "drain", "orders", "o-1", url=store_url)
            assert code == 0, err
            written = time.monotonic()
            await page.wait_for_selector(f"{row} .badge.draining", timeout=5000)
            elapsed = time.monotonic() - written
            print(f"live: CLI drain on screen {elapsed * 1000:.0f} ms after the CLI exited")
            assert elapsed < 1.0
            await shot(page, f"live-services-{backend}")
            await context.close()


@pytest.mark.slow
@pytest.mark.asyncio(loop_scope="module")
@pytest.mark.parametrize("backend", ["sqlite", "etcd"])
async def test_a_change_between_render_and_connect_is_not_missed(
    browser: Any, store_url: str, backend: str
) -> None:
    """A change made after the page rendered but before its live stream connected shows too."""
    async with keel_pkg.connect(store_url) as store, Registry(store) as registry:
        await add_user(store, "olga", Role.OPERATOR)
        await registry.register(
            Instance(service="orders", address="127.0.0.1", port=8001, id="o-1")
        )
        async with serving(store) as url:
            context = await browser.new_context(viewport={"width": 1280, "height": 800})
            page = await context.new_page()
            await browser_login(page, url, "olga")
            held = asyncio.Event()

            async def hold_live(route: Any) -> None:
                held.set()
                await asyncio.sleep(1.5)  # the change below lands in this gap
                await route.continue_()

            await page.route("**/live?*", hold_live)
            await page.goto(f"{url}/services")
            row = 'tr[data-instance="orders/o-1"]'
            assert await page.inner_text(f"{row} .badge") == "up"
            await held.wait()
            code, _, err = await keel("instance", "drain", "orders", "o-1", url=store_url)
            assert code == 0, err
            await page.wait_for_selector(f"{row} .badge.draining", timeout=10_000)
            await context.close()
