"""Helpers of the core console tests: an app with logged-in clients, a served console, a browser."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
from argon2 import PasswordHasher
from starlette.applications import Starlette

from keel.console import ConsoleSettings, Role, Users, create_app, serve
from keel.store import Store

ARTIFACTS = Path(__file__).parent / "artifacts"
DOCS_SHOTS = Path(__file__).resolve().parents[2] / "docs" / "console"
CHROMIUM = os.environ.get("KEEL_CHROMIUM", "/usr/bin/chromium")
PASSWORD = "correct horse battery staple"
CHEAP = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)
"""Tests log in often: a cheap argon2 (the console's default is argon2-cffi's)."""


def csrf_of(page: str) -> str:
    """The CSRF token a page's forms carry."""
    found = re.search(r'name="csrf" value="([^"]+)"', page)
    assert found, "no CSRF field in the page"
    return found.group(1)


class Client:
    """An httpx client with one user's session: ``post`` adds the CSRF token."""

    def __init__(self, http: httpx.AsyncClient, csrf: str = "") -> None:
        self.http = http
        self.csrf = csrf

    async def get(self, path: str, **kw: Any) -> httpx.Response:
        """GET ``path``."""
        return await self.http.get(path, **kw)

    async def post(
        self, path: str, data: dict[str, Any] | None = None, **kw: Any
    ) -> httpx.Response:
        """POST a form with the session's CSRF token."""
        return await self.http.post(path, data={"csrf": self.csrf, **(data or {})}, **kw)


def app_for(store: Store, **settings: Any) -> Starlette:
    """The console app over ``store`` (cheap hashes)."""
    return create_app(store, settings=ConsoleSettings(**settings), hasher=CHEAP)


@contextlib.asynccontextmanager
async def anonymous(
    app: Starlette, base_url: str = "http://127.0.0.1:8470"
) -> AsyncIterator[httpx.AsyncClient]:
    """A client of ``app`` in process, without a session."""
    transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 50000))
    async with httpx.AsyncClient(transport=transport, base_url=base_url) as http:
        yield http


async def add_user(store: Store, name: str, role: Role) -> None:
    """Create ``name`` with :data:`PASSWORD`."""
    await Users(store, hasher=CHEAP).add(name, PASSWORD, role)


async def log_in(http: httpx.AsyncClient, name: str, password: str = PASSWORD) -> httpx.Response:
    """Post the login form as a browser would (GET the form first for its token)."""
    form = await http.get("/login")
    return await http.post(
        "/login",
        data={"csrf": csrf_of(form.text), "username": name, "password": password, "next": "/"},
    )


@contextlib.asynccontextmanager
async def logged_in(app: Starlette, name: str) -> AsyncIterator[Client]:
    """A client of ``app`` logged in as ``name`` through the login form."""
    async with anonymous(app) as http:
        answer = await log_in(http, name)
        assert answer.status_code == 303, answer.text
        page = await http.get("/")
        yield Client(http, csrf_of(page.text))


@contextlib.asynccontextmanager
async def serving(store: Store, **settings: Any) -> AsyncIterator[str]:
    """The console served on a free loopback port; yields its URL."""
    stop = asyncio.Event()
    ready: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(
        serve(store, ConsoleSettings(port=0, **settings), stop=stop, on_ready=ready.set_result)
    )
    try:
        async with asyncio.timeout(20):
            url = await asyncio.shield(ready)
        yield url
    finally:
        stop.set()
        async with asyncio.timeout(20):
            await task


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


async def browser_login(page: Any, url: str, name: str, password: str = PASSWORD) -> None:
    """Log a Playwright page in through the login form."""
    await page.goto(f"{url}/login")
    await page.fill("#username", name)
    await page.fill("#password", password)
    await page.click("form button[type=submit]")
    await page.wait_for_selector("form.logout")


async def shot(page: Any, name: str) -> None:
    """Save a full-page screenshot as a test artifact (``tests/console/artifacts/<name>.png``)."""
    ARTIFACTS.mkdir(exist_ok=True)
    await page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


KEEL = str(Path(sys.executable).with_name("keel"))


async def keel(
    *args: str, url: str, stdin: bytes = b"", timeout_s: float = 60
) -> tuple[int, str, str]:
    """Run the ``keel`` script as a real process on ``url``: (exit code, stdout, stderr)."""
    env = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1"}
    env.pop("KEEL_STORE", None)
    proc = await asyncio.create_subprocess_exec(
        KEEL,
        "--store",
        url,
        *args,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    async with asyncio.timeout(timeout_s):
        out, err = await proc.communicate(stdin)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()
