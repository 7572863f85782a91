"""Weighted canary: the observed split over 1,000 requests, header/cookie overrides, sticky keys.

Tolerance: a 90/10 split sends each request to v2 with p = 0.1, so over n = 1,000
requests the v2 count is binomial with mean 100 and standard deviation
sqrt(1000 * 0.1 * 0.9) = 9.5; the test accepts 10% +- 3 points (70..130), 3.2
standard deviations, which a fair draw misses about once in 700 runs.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator

import httpx
import pytest

import keel
from tests.gateway._gw import gateway, publish
from tests.gateway._upstream_app import upstream

N = 1000
SPLIT = {
    "routes": [
        {
            "id": "canary",
            "match": {"path": "/"},
            "forward": {
                "service": "shop",
                "split": [
                    {"weight": 90, "version": "v1"},
                    {"weight": 10, "version": "v2", "when_header": {"x-canary": "always"}},
                    {"weight": 0, "labels": {"lane": "beta"}, "when_cookie": {"lane": "beta"}},
                ],
            },
        },
        {
            "id": "sticky",
            "match": {"path": "/sticky"},
            "forward": {
                "service": "shop",
                "sticky": "x-user",
                "split": [{"weight": 50, "version": "v1"}, {"weight": 50, "version": "v2"}],
            },
        },
    ]
}


@pytest.fixture
async def shop() -> AsyncIterator[str]:
    """Three instances of 'shop' (v1, v2, and a beta-labelled v1) behind a gateway; its URL."""
    async with keel.connect("memory://") as store:
        await publish(store, SPLIT)
        async with (
            upstream(store, "shop", version="v1", tag="v1"),
            upstream(store, "shop", version="v2", tag="v2"),
            upstream(store, "shop", version="v1", metadata={"lane": "beta"}, tag="beta"),
            gateway(store) as gw,
        ):
            yield gw.url


async def _tags(url: str, path: str, n: int, **headers: str) -> Counter[str]:
    seen: Counter[str] = Counter()
    limits = httpx.Limits(max_connections=8)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=10) as http:

        async def one() -> None:
            answer = await http.get(path, headers=headers)
            seen[answer.json()["tag"]] += 1

        for start in range(0, n, 50):
            await asyncio.gather(*(one() for _ in range(min(50, n - start))))
    return seen


@pytest.mark.slow
async def test_weighted_split_over_1000_requests(shop: str) -> None:
    """90/10 by version: v2 gets 10% +- 3 points; the weight-0 labelled share gets none."""
    seen = await _tags(shop, "/", N)
    assert sum(seen.values()) == N
    v1 = seen["v1"] + seen["beta"]  # the beta instance is a v1 too, so the v1 share may use it
    assert 70 <= seen["v2"] <= 130, seen
    assert v1 + seen["v2"] == N


async def test_header_and_cookie_overrides(shop: str) -> None:
    """A matching header or cookie picks its share whatever the weights."""
    assert await _tags(shop, "/", 40, **{"x-canary": "always"}) == Counter({"v2": 40})
    assert await _tags(shop, "/", 40, cookie="a=1; lane=beta") == Counter({"beta": 40})


async def test_sticky_key_keeps_its_version(shop: str) -> None:
    """The same sticky header value always lands on the same version; values spread over both."""
    versions = {}
    for user in range(40):
        seen = await _tags(shop, "/sticky", 5, **{"x-user": f"user-{user}"})
        picked = {"v2" if tag == "v2" else "v1" for tag in seen}  # 'beta' is a v1 instance
        assert len(picked) == 1, seen
        versions[user] = picked.pop()
    assert set(versions.values()) == {"v1", "v2"}


def test_a_zero_weight_share_is_reached_by_its_header_only() -> None:
    """All weight on v1 and a weight-0 v2 behind a header: the header still reaches v2."""
    from prometheus_client import CollectorRegistry

    from keel.gateway import GatewayDocument, GatewayMetrics
    from keel.gateway._match import Hit
    from keel.gateway._plan import compile_state

    split = [
        {"weight": 100, "version": "v1"},
        {"weight": 0, "version": "v2", "when_header": {"x-try": "v2"}},
    ]
    doc = GatewayDocument.model_validate(
        {
            "routes": [
                {"id": "r", "match": {"path": "/"}, "forward": {"service": "s", "split": split}}
            ]
        }
    )
    state = compile_state(doc, 1, metrics=GatewayMetrics(CollectorRegistry()))
    hit = state.router.match("GET", "", "/", None)
    assert isinstance(hit, Hit)
    plan = hit.rule.payload
    assert plan.pick(None, []).version == "v1"
    assert plan.pick(None, [(b"x-try", b"v2")]).version == "v2"
    assert {plan.pick(None, [(b"x-try", b"no")]).version for _ in range(20)} == {"v1"}
