"""With Redis, 3 gateway processes share one rate limit (GCRA in Redis)."""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path

import httpx
import pytest

import keel
from keel.testing import RedisServer
from tests._procs import Children
from tests.gateway._security_child import publish_routes, start_gateway
from tests.gateway._upstream_app import upstream

pytestmark = pytest.mark.slow

GATEWAYS = 3
REQUESTS = 25  # per gateway, sent at once
LIMIT, PER_S = 20, 60.0  # a burst of 20, then one every 3 s
TOLERANCE = 1  # a request admitted on the slot that opens while the burst runs


async def test_three_gateways_share_one_limit(
    tmp_path: Path, children: Children, redis_server: RedisServer
) -> None:
    """78 requests over 3 gateways: at most burst + rate * elapsed (+1) pass; the rest get 429."""
    store_url = f"sqlite:///{tmp_path / 'keel.db'}"
    route = f"shared-{uuid.uuid4().hex[:8]}"  # a fresh Redis key for this run
    document = {
        "routes": [
            {"id": "open", "match": {"path": "/open/"}, "forward": {"service": "users"}},
            {
                "id": route,
                "match": {"path": "/limited/"},
                "forward": {"service": "users"},
                "limits": {"rate": {"requests": LIMIT, "per_s": PER_S, "shared": True}},
            },
        ]
    }
    async with keel.connect(store_url) as store, upstream(store, "users"):
        await publish_routes(store, document)
        started = await asyncio.gather(
            *(start_gateway(children, store_url, redis_url=redis_server.url) for _ in range(3))
        )
        urls = [url for _, url in started]
        clients = [httpx.AsyncClient(base_url=url, timeout=10) for url in urls]
        try:
            for client in clients:  # every gateway routes to the upstream
                async with asyncio.timeout(10):
                    for _ in range(500):
                        if (await client.get("/open/x")).status_code == 200:
                            break
                        await asyncio.sleep(0.02)
            start = time.monotonic()
            # one request each first: every gateway has its Redis connection and script
            warm = [await client.get("/limited/x") for client in clients]
            responses = await asyncio.gather(
                *(client.get("/limited/x") for client in clients for _ in range(REQUESTS))
            )
            elapsed = time.monotonic() - start
        finally:
            for client in clients:
                await client.aclose()
    assert [r.status_code for r in warm] == [200] * GATEWAYS
    statuses = [r.status_code for r in responses]
    admitted = GATEWAYS + statuses.count(200)
    allowance = LIMIT + int(elapsed * LIMIT / PER_S)
    print(
        f"shared limit: {admitted} of {GATEWAYS + len(statuses)} admitted across "
        f"{GATEWAYS} gateways in {elapsed:.2f} s (allowance {allowance} + tolerance {TOLERANCE})"
    )
    assert set(statuses) <= {200, 429}
    assert LIMIT <= admitted <= allowance + TOLERANCE
    refused = [r for r in responses if r.status_code == 429]
    assert all(int(r.headers["retry-after"]) >= 1 for r in refused)
    # without sharing, each gateway alone would have admitted LIMIT: 3x as many
    per_gateway = [
        sum(r.status_code == 200 for r in responses[i * REQUESTS : (i + 1) * REQUESTS])
        for i in range(GATEWAYS)
    ]
    assert GATEWAYS + sum(per_gateway) == admitted < GATEWAYS * LIMIT
