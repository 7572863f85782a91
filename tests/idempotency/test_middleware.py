"""The Idempotency-Key middleware over real HTTP, with records in the keel store or Redis."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis

import keel
from keel.errors import ValidationError
from keel.idempotency import IdempotencySettings, Middleware
from keel.service import Service, ServiceSettings
from keel.store import Store
from keel.testing import RedisServer
from tests._procs import Children
from tests.idempotency._app import OrdersApp

FAST = ServiceSettings(drain_delay_s=0.05, grace_s=2.0)


@pytest.fixture
async def sqlite_store(tmp_path: Path) -> AsyncIterator[Store]:
    """A sqlite store file of one test."""
    async with keel.connect(f"sqlite:///{tmp_path / 'keel.db'}") as store:
        yield store


@pytest.fixture(params=["store", "redis"])
async def records(
    request: pytest.FixtureRequest, sqlite_store: Store
) -> AsyncIterator[dict[str, Any]]:
    """Where the middleware keeps its records: the keel store (sqlite) or a real Redis."""
    if request.param == "store":
        yield {"store": sqlite_store}
        return
    server: RedisServer = request.getfixturevalue("redis_server")
    redis = Redis.from_url(server.url)
    try:
        yield {"redis": redis}
    finally:
        await redis.aclose()


@contextlib.asynccontextmanager
async def serving(
    app: OrdersApp, records: dict[str, Any], sqlite_store: Store, **settings: Any
) -> AsyncIterator[httpx.AsyncClient]:
    """The app behind the middleware in a real Service, and an HTTP client to it."""
    options = IdempotencySettings(namespace=f"t-{uuid.uuid4().hex[:8]}", **settings)
    wrapped = Middleware(app, settings=options, **records)
    async with (
        Service("orders", wrapped, store=sqlite_store, port=0, settings=FAST) as svc,
        httpx.AsyncClient(base_url=svc.url, timeout=10) as http,
    ):
        yield http


def key() -> dict[str, str]:
    """A fresh Idempotency-Key header."""
    return {"Idempotency-Key": str(uuid.uuid4())}


async def test_retry_gets_the_stored_response(records: dict[str, Any], sqlite_store: Store) -> None:
    """The same key and request twice: one order, the second answer replayed byte for byte."""
    app = OrdersApp()
    async with asyncio.timeout(20), serving(app, records, sqlite_store) as http:
        headers = key()
        first = await http.post("/orders", content=b'{"sku": 1}', headers=headers)
        second = await http.post("/orders", content=b'{"sku": 1}', headers=headers)
        assert first.status_code == second.status_code == 201
        assert second.content == first.content and second.headers["x-order"] == "yes"
        assert second.headers["idempotent-replayed"] == "true"
        assert "idempotent-replayed" not in first.headers
        assert app.orders == 1
        other = await http.post("/orders", content=b'{"sku": 1}', headers=key())
        assert other.json()["order"] == 2


async def test_concurrent_duplicate_gets_409(records: dict[str, Any], sqlite_store: Store) -> None:
    """A duplicate while the first request runs gets 409 with Retry-After; later a replay."""
    app = OrdersApp()
    app.hold = asyncio.Event()
    async with asyncio.timeout(20), serving(app, records, sqlite_store) as http:
        headers = key()
        first = asyncio.ensure_future(http.post("/orders", content=b"a", headers=headers))
        await app.started.wait()
        dup = await http.post("/orders", content=b"a", headers=headers)
        assert dup.status_code == 409 and dup.headers["retry-after"] == "1"
        assert dup.headers["content-type"] == "application/problem+json"
        app.hold.set()
        assert (await first).status_code == 201
        again = await http.post("/orders", content=b"a", headers=headers)
        assert again.headers["idempotent-replayed"] == "true" and app.orders == 1


async def test_same_key_other_payload_gets_422(
    records: dict[str, Any], sqlite_store: Store
) -> None:
    """The key reused with another body (or path) is refused with 422 and runs nothing."""
    app = OrdersApp()
    async with asyncio.timeout(20), serving(app, records, sqlite_store) as http:
        headers = key()
        assert (await http.post("/orders", content=b"a", headers=headers)).status_code == 201
        other = await http.post("/orders", content=b"b", headers=headers)
        assert other.status_code == 422 and "different" in other.json()["detail"]
        assert (await http.post("/other", content=b"a", headers=headers)).status_code == 422
        assert app.orders == 1


async def test_stored_response_expires(records: dict[str, Any], sqlite_store: Store) -> None:
    """After ttl_s the key is forgotten: the same request runs again."""
    app = OrdersApp()
    async with asyncio.timeout(30), serving(app, records, sqlite_store, ttl_s=1.0) as http:
        headers = key()
        await http.post("/orders", content=b"a", headers=headers)
        while True:
            answer = await http.post("/orders", content=b"a", headers=headers)
            if "idempotent-replayed" not in answer.headers:
                break
            await asyncio.sleep(0.2)  # polling a TTL in another process: no event to wait on
        assert app.orders == 2


async def test_server_errors_and_large_bodies(records: dict[str, Any], sqlite_store: Store) -> None:
    """A 5xx is not kept (the retry runs); a body above the cap is never run twice (409)."""
    app = OrdersApp()
    async with asyncio.timeout(20), serving(app, records, sqlite_store, max_body_bytes=100) as http:
        headers = key()
        for _ in range(2):
            boom = await http.post("/boom", content=b"a", headers=headers)
            assert boom.status_code == 503 and "idempotent-replayed" not in boom.headers
        headers = key()
        big = await http.post("/big", content=b"a", headers=headers)
        assert big.status_code == 200 and len(big.content) == 4096
        again = await http.post("/big", content=b"a", headers=headers)
        assert again.status_code == 409 and "too large" in again.json()["title"]
        assert app.orders == 1


async def test_missing_and_malformed_keys(records: dict[str, Any], sqlite_store: Store) -> None:
    """No key passes through (or 400 when required); a bad key is 400; GET is never keyed."""
    app = OrdersApp()
    async with asyncio.timeout(20):
        async with serving(app, records, sqlite_store) as http:
            assert (await http.post("/orders", content=b"a")).status_code == 201
            assert (await http.post("/orders", content=b"a")).status_code == 201
            bad = await http.post("/orders", content=b"a", headers={"Idempotency-Key": "a b"})
            assert bad.status_code == 400
            quoted = {"Idempotency-Key": '"k-1"'}
            assert (await http.post("/orders", content=b"a", headers=quoted)).status_code == 201
            assert (await http.get("/orders", headers=quoted)).status_code == 201
        async with serving(app, records, sqlite_store, required=True) as http:
            missing = await http.post("/orders", content=b"a")
            assert missing.status_code == 400 and "requires" in missing.json()["detail"]
    assert app.orders == 4


async def test_bad_record_is_replaced(sqlite_store: Store) -> None:
    """A malformed record under the key is reported and replaced: the request runs."""
    app = OrdersApp()
    settings = IdempotencySettings(namespace="bad")
    wrapped = Middleware(app, store=sqlite_store, settings=settings)
    name = hashlib.sha256(b"k-bad").hexdigest()
    await sqlite_store.put(f"idempotency/bad/{name}", b'{"v": 1, "state": ["x"]}')
    async with (
        asyncio.timeout(20),
        Service("orders", wrapped, store=sqlite_store, port=0, settings=FAST) as svc,
        httpx.AsyncClient(base_url=svc.url) as http,
    ):
        headers = {"Idempotency-Key": "k-bad"}
        assert (await http.post("/orders", content=b"a", headers=headers)).status_code == 201
        replay = await http.post("/orders", content=b"a", headers=headers)
        assert replay.headers["idempotent-replayed"] == "true" and app.orders == 1


def test_bad_settings_are_refused() -> None:
    """Bad settings and a middleware without storage are refused with the fix named."""
    with pytest.raises(ValidationError, match="namespace"):
        IdempotencySettings(namespace="a/b")
    with pytest.raises(ValidationError, match="ttl_s"):
        IdempotencySettings(ttl_s=float("nan"))
    with pytest.raises(ValidationError, match="store="):
        Middleware(OrdersApp())


@pytest.mark.parametrize("where", ["store", "redis"])
async def test_restart_between_requests(
    children: Children, tmp_path: Path, request: pytest.FixtureRequest, where: str
) -> None:
    """The service is killed after answering; the retry to its restarted process is replayed."""
    store_url = f"sqlite:///{tmp_path / 'keel.db'}"
    env = {}
    if where == "redis":
        env["KEEL_TEST_REDIS"] = request.getfixturevalue("redis_server").url
    ledger = tmp_path / "ledger.txt"
    headers = key()
    answers = []
    async with asyncio.timeout(60):
        for _ in range(2):
            child = await children.start("tests.idempotency._child", store_url, ledger, env=env)
            (port,) = await child.expect("READY")
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
                answers.append(await http.post("/orders", content=b"sku-9", headers=headers))
            child.kill9()
            await child.wait()
    assert [a.status_code for a in answers] == [201, 201]
    assert answers[1].headers["idempotent-replayed"] == "true"
    assert answers[1].content == answers[0].content
    assert ledger.read_text().splitlines() == ["sku-9"]


async def test_crashed_first_request_frees_its_key(children: Children, tmp_path: Path) -> None:
    """A process killed mid-request holds its key only until lease_s; then a retry runs."""
    store_url = f"sqlite:///{tmp_path / 'keel.db'}"
    ledger = tmp_path / "ledger.txt"
    headers = key()
    async with asyncio.timeout(60):
        hung = await children.start("tests.idempotency._child", store_url, ledger, 1, "hang")
        (port,) = await hung.expect("READY")
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as http:
            pending = asyncio.ensure_future(http.post("/orders", content=b"o", headers=headers))
            await hung.expect("STARTED")
            busy = await http.post("/orders", content=b"o", headers=headers)
            assert busy.status_code == 409  # the first one is still running
            hung.kill9()
            await hung.wait()
            with pytest.raises(httpx.TransportError):
                await pending
        child = await children.start("tests.idempotency._child", store_url, ledger, 1)
        (port,) = await child.expect("READY")
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
            while True:
                answer = await http.post("/orders", content=b"o", headers=headers)
                if answer.status_code != 409:
                    break
                await asyncio.sleep(0.2)  # the dead process's lease runs out in the store
    assert answer.status_code == 201 and ledger.read_text().splitlines() == ["o"]
