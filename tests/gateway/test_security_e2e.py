"""Security and limits through a real gateway process, in front of a real upstream."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

import keel
from keel.gateway._apikeys import add_key, remove_key
from tests._procs import Children
from tests.gateway._security_child import publish_routes, start_gateway
from tests.gateway._upstream_app import upstream

pytestmark = pytest.mark.slow

KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
SPOOFS = [b"x-consumer", b"X-Consumer", b"X-CONSUMER", b"x-CoNsUmEr"]


def _document(pem: Path) -> dict[str, Any]:
    forward = {"service": "users"}
    return {
        "consumer_header": "x-consumer",
        "cors": {
            "allow_origins": ["https://app.example"],
            "allow_methods": ["GET", "PUT"],
            "allow_headers": ["content-type"],
        },
        "jwt": {
            "main": {
                "algorithms": ["RS256"],
                "audience": "shop",
                "issuer": "https://id.example",
                "key_file": str(pem),
            }
        },
        "routes": [
            {
                "id": "keys",
                "match": {"path": "/keys/"},
                "forward": forward,
                "auth": {"api_key": True, "required": False},
            },
            {
                "id": "jwt",
                "match": {"path": "/jwt/"},
                "forward": forward,
                "auth": {"jwt": "main"},
            },
            {
                "id": "jwt-kept",
                "match": {"path": "/jwt-kept/"},
                "forward": forward,
                "auth": {"jwt": "main", "forward_token": False},
            },
            {"id": "cors", "match": {"path": "/cors/"}, "forward": forward, "cors": True},
            {
                "id": "limited",
                "match": {"path": "/limited/"},
                "forward": forward,
                "limits": {"rate": {"requests": 3, "per_s": 60, "burst": 3}},
            },
        ],
    }


class Setup:
    """The gateway's URL and the shared store."""

    def __init__(self, url: str, store: keel.Store) -> None:
        self.url = url
        self.store = store


@pytest.fixture
async def setup(tmp_path: Path, children: Children) -> AsyncIterator[Setup]:
    store_url = f"sqlite:///{tmp_path / 'keel.db'}"
    pem = tmp_path / "public.pem"
    pem.write_bytes(
        KEY.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    async with keel.connect(store_url) as store, upstream(store, "users"):
        await publish_routes(store, _document(pem))
        _, url = await start_gateway(children, store_url)
        yield Setup(url, store)


def _seen(response: httpx.Response, name: str) -> list[str]:
    """Values of header ``name`` as the upstream received them (its echo)."""
    headers: list[list[str]] = response.json()["headers"]
    return [v for k, v in headers if k.lower() == name]


async def _until_status(
    call: Callable[[], Awaitable[httpx.Response]], status: int, timeout_s: float = 10
) -> float:
    """Call until the answer has ``status`` (bounded); return the seconds it took."""
    start = time.monotonic()
    async with asyncio.timeout(timeout_s):
        for _ in range(10_000):
            if (await call()).status_code == status:
                break
            await asyncio.sleep(0.02)
    return time.monotonic() - start


async def _until_routed(client: httpx.AsyncClient, path: str) -> None:
    await _until_status(lambda: client.get(path), 200)


async def test_client_consumer_header_never_reaches_the_upstream(setup: Setup) -> None:
    """Spoofed consumer headers (any case, duplicated) are dropped; only the gateway's arrives."""
    key_id, secret = await add_key(setup.store, "alice")
    token = jwt.encode(
        {"sub": "bob", "aud": "shop", "iss": "https://id.example", "exp": time.time() + 60},
        KEY,
        algorithm="RS256",
    )
    spoofed = [(name, b"admin") for name in SPOOFS]
    async with httpx.AsyncClient(base_url=setup.url, timeout=10) as client:
        await _until_routed(client, "/keys/x")
        anonymous = await client.get("/keys/x", headers=spoofed)
        assert anonymous.status_code == 200
        assert _seen(anonymous, "x-consumer") == []

        async def keyed() -> httpx.Response:
            return await client.get("/keys/x", headers=[*spoofed, (b"x-api-key", secret.encode())])

        with_key = await keyed()
        assert with_key.status_code == 200, with_key.text
        assert _seen(with_key, "x-consumer") == ["alice"]
        assert _seen(with_key, "x-api-key") == []  # the key stays between client and gateway
        as_bearer = [*spoofed, (b"authorization", f"Bearer {secret}".encode())]
        for answer in (  # a relayed GET, and a POST through the app
            await client.get("/keys/x", headers=as_bearer),
            await client.post("/keys/x", headers=as_bearer, content=b"{}"),
        ):
            assert answer.status_code == 200, answer.text
            assert _seen(answer, "x-consumer") == ["alice"]
            assert _seen(answer, "authorization") == []  # nor as a bearer token

        with_jwt = await client.get(
            "/jwt/x", headers=[*spoofed, (b"authorization", f"Bearer {token}".encode())]
        )
        assert with_jwt.status_code == 200, with_jwt.text
        assert _seen(with_jwt, "x-consumer") == ["bob"]
        assert _seen(with_jwt, "x-forwarded-for") == ["127.0.0.1"]
        assert _seen(with_jwt, "authorization") == [f"Bearer {token}"]  # a JWT travels on
        bearer = [(b"authorization", f"Bearer {token}".encode())]
        for kept in (  # unless the route says not to: relayed, and through the app
            await client.get("/jwt-kept/x", headers=bearer),
            await client.post("/jwt-kept/x", headers=bearer, content=b"{}"),
        ):
            assert kept.status_code == 200, kept.text
            assert _seen(kept, "x-consumer") == ["bob"]
            assert _seen(kept, "authorization") == []

        no_token = await client.get("/jwt/x", headers=spoofed)
        assert no_token.status_code == 401
        assert "www-authenticate" in no_token.headers

        assert await remove_key(setup.store, key_id)
        await _until_status(keyed, 401, timeout_s=5)  # revoked within the bound (about 1 s)


async def test_burst_gets_429_with_retry_after(setup: Setup) -> None:
    """3 per 60 s with burst 3: of a burst of 10, 3 pass and the rest get 429 + Retry-After."""
    async with httpx.AsyncClient(base_url=setup.url, timeout=10) as client:
        await _until_routed(client, "/keys/x")
        statuses = []
        retry_after = []
        for _ in range(10):
            response = await client.get("/limited/x")
            statuses.append(response.status_code)
            if response.status_code == 429:
                retry_after.append(response.headers.get("retry-after"))
        assert statuses.count(200) == 3 and statuses.count(429) == 7, statuses
        assert all(
            value is not None and value.isdigit() and int(value) >= 1 for value in retry_after
        )
        assert int(retry_after[0]) == 20  # 60 s / 3 requests: the next slot in 20 s


async def test_cors_through_the_gateway(setup: Setup) -> None:
    """Preflights are answered by the gateway (204/403); actual responses carry ACAO and Vary."""
    site = "https://app.example"
    ask = {"origin": site, "access-control-request-method": "PUT"}
    async with httpx.AsyncClient(base_url=setup.url, timeout=10) as client:
        await _until_routed(client, "/cors/x")
        allowed = await client.options("/cors/x", headers=ask)
        assert allowed.status_code == 204, allowed.text
        assert allowed.headers["access-control-allow-origin"] == site
        assert "PUT" in allowed.headers["access-control-allow-methods"]
        refused = await client.options("/cors/x", headers={**ask, "origin": "https://evil.example"})
        assert refused.status_code == 403
        assert "access-control-allow-origin" not in refused.headers
        actual = await client.get("/cors/x", headers={"origin": site})
        assert actual.status_code == 200
        assert actual.headers["access-control-allow-origin"] == site
        assert "Origin" in actual.headers.get_list("vary")
