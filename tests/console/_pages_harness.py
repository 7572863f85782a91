"""Test helpers for the configs, jobs, coordination and sagas pages.

Two ways in: :func:`client` is the console app in process behind an httpx
client that holds a real session (cookie and CSRF token) for a user of a
given role; :func:`serving` runs the console on a free loopback port for the
browser, and :func:`login` logs a Playwright page in through the login form.
"""

from __future__ import annotations

import asyncio
import contextlib
import html
import os
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
from argon2 import PasswordHasher

from keel.console import ConsoleSettings, Role, Users, create_app, serve
from keel.console._audit import Audit
from keel.console._sessions import COOKIE
from keel.store import Store

ARTIFACTS = Path(__file__).parent / "artifacts"
CHROMIUM = os.environ.get("KEEL_CHROMIUM", "/usr/bin/chromium")
PASSWORD = "correct horse battery staple"
CHEAP = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)


async def add_user(store: Store, name: str, role: Role) -> None:
    """Create ``name`` with :data:`PASSWORD` (a cheap hash: tests log in many times)."""
    await Users(store, hasher=CHEAP).add(name, PASSWORD, role)


class PageClient:
    """An httpx client logged in as one user: ``get`` pages, ``post`` forms with the CSRF token."""

    def __init__(self, http: httpx.AsyncClient, csrf: str) -> None:
        self.http = http
        self.csrf = csrf

    async def get(self, path: str, **kwargs: Any) -> httpx.Response:
        """GET ``path``."""
        return await self.http.get(path, **kwargs)

    async def post(
        self, path: str, data: dict[str, Any] | None = None, *, csrf: bool = True, **kw: Any
    ) -> httpx.Response:
        """POST a form to ``path`` (with the session's CSRF token unless ``csrf=False``)."""
        form = dict(data or {})
        if csrf:
            form["csrf"] = self.csrf
        return await self.http.post(path, data=form, **kw)

    async def post_json(self, path: str, data: dict[str, Any] | None = None) -> httpx.Response:
        """POST a form asking for a JSON answer."""
        return await self.post(path, data, headers={"accept": "application/json"})


@contextlib.asynccontextmanager
async def client(store: Store, name: str, role: Role) -> AsyncIterator[PageClient]:
    """The console app over ``store`` and a client logged in as a new user ``name`` of ``role``."""
    await add_user(store, name, role)
    app = create_app(store, settings=ConsoleSettings(), hasher=CHEAP)
    token, session = await app.state.console.sessions.create(name)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(
        transport=transport, base_url="http://127.0.0.1", cookies={COOKIE: token}
    ) as http:
        yield PageClient(http, session.csrf)


@contextlib.asynccontextmanager
async def serving(store: Store) -> AsyncIterator[str]:
    """The console served on a free loopback port; yields its URL."""
    stop = asyncio.Event()
    ready: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    settings = ConsoleSettings(host="127.0.0.1", port=0)
    task = asyncio.create_task(serve(store, settings, stop=stop, on_ready=ready.set_result))
    try:
        async with asyncio.timeout(20):
            url = await asyncio.shield(ready)
        yield url
    finally:
        stop.set()
        async with asyncio.timeout(20):
            await task


async def login(page: Any, url: str, name: str) -> None:
    """Log a Playwright page in as ``name`` through the login form."""
    await page.goto(f"{url}/login")
    await page.fill("input[name=username]", name)
    await page.fill("input[name=password]", PASSWORD)
    await page.click("button[type=submit]")
    await page.wait_for_url(re.compile(r".*/(\?.*)?$"))


async def shot(page: Any, name: str) -> None:
    """Save a full-page screenshot as ``tests/console/artifacts/<name>.png``."""
    ARTIFACTS.mkdir(exist_ok=True)
    await page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def flashes(page: str) -> list[str]:
    """The flash messages in a page."""
    return [
        html.unescape(re.sub(r"\s+", " ", m).strip())
        for m in re.findall(r'<p class="flash[^"]*"[^>]*>(.*?)</p>', page, re.S)
    ]


@contextlib.asynccontextmanager
async def chromium() -> AsyncIterator[Any]:
    """Debian's Chromium driven by Playwright (never a downloaded browser)."""
    from playwright.async_api import async_playwright

    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            yield browser
        finally:
            await browser.close()


async def audit_actions(store: Store) -> list[tuple[str, str, str]]:
    """(actor, action, target) of the audit log, newest first."""
    return [(e.actor, e.action, e.target) for e in await Audit(store).recent(100)]


async def audit_versions(store: Store, action: str) -> list[tuple[Any, Any]]:
    """(before, after) of the audit entries of ``action``, newest first."""
    return [(e.before, e.after) for e in await Audit(store).recent(100) if e.action == action]
