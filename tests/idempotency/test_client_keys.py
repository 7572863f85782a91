"""keel.http.Client gives each retried POST one Idempotency-Key across its attempts."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

import keel
from keel.http import Client, ClientSettings
from keel.idempotency import IdempotencySettings, Middleware
from keel.observe import HttpMetrics
from keel.service import Service, ServiceSettings
from keel.store import Store

FAST = ServiceSettings(drain_delay_s=0.05, grace_s=1.0)
Message = MutableMapping[str, Any]


class FlakyApp:
    """Answers 503 to the first attempt of each call, then 201; records the keys it saw."""

    def __init__(self) -> None:
        self.keys: list[str | None] = []

    async def __call__(
        self,
        scope: MutableMapping[str, Any],
        receive: Callable[[], Awaitable[Message]],
        send: Callable[[Message], Awaitable[None]],
    ) -> None:
        if scope["type"] != "http":
            return
        headers = dict(scope["headers"])
        key = headers.get(b"idempotency-key")
        self.keys.append(key.decode() if key else None)
        status = 503 if len(self.keys) % 2 else 201
        await send({"type": "http.response.start", "status": status, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})


@pytest.fixture
async def mem() -> AsyncIterator[Store]:
    """A memory store shared by the service and the client."""
    async with keel.connect("memory://") as store:
        yield store


@pytest.mark.parametrize("keys_on", [True, False])
async def test_retried_post_keeps_its_key(mem: Store, keys_on: bool) -> None:
    """With idempotency_keys a POST is retried with one key; without, it is not retried."""
    app = FlakyApp()
    wrapped = Middleware(app, store=mem, settings=IdempotencySettings(namespace="pay"))
    settings = ClientSettings(idempotency_keys=keys_on)
    async with (
        asyncio.timeout(20),
        Service("pay", wrapped, store=mem, port=0, settings=FAST),
        Client(mem, settings=settings, metrics=HttpMetrics(CollectorRegistry())) as client,
    ):
        answer = await client.post("http://pay/charge", content=b"10")
        if keys_on:
            assert answer.status_code == 201
            assert len(app.keys) == 2 and app.keys[0] is not None and app.keys[0] == app.keys[1]
            await client.post("http://pay/charge", content=b"10")
            assert len(set(app.keys)) == 2  # a new call, a new key
        else:
            assert answer.status_code == 503 and app.keys == [None]
