"""Limits: bursts refused with Retry-After, keys independent, concurrency, Redis fallback."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from keel.gateway._auth import Consumer
from keel.gateway._limits import Limits, retry_after_header
from keel.gateway._policy import RateLimit, RouteLimits
from keel.testing import FakeClock

ALICE = Consumer("alice", "jwt")
BOB = Consumer("bob", "jwt")


def _limits(*rates: dict[str, object], concurrency: int | None = None) -> RouteLimits:
    return RouteLimits.model_validate({"rate": list(rates), "concurrency": concurrency})


async def _admitted(limits: Limits, route: RouteLimits, n: int, **kw: object) -> int:
    consumer = kw.get("consumer")
    client = str(kw.get("client", "1.1.1.1"))
    count = 0
    for _ in range(n):
        admission = await limits.admit("r", route, consumer, client)  # type: ignore[arg-type]
        count += admission.allowed
    return count


async def test_burst_beyond_the_rate_is_refused_with_retry_after() -> None:
    """10/s with burst 5: 5 pass at once, the 6th gets 429 material: reason and Retry-After."""
    clock = FakeClock()
    limits = Limits(clock=clock)
    route = _limits({"requests": 10, "per_s": 1, "burst": 5})
    assert await _admitted(limits, route, 5) == 5
    refused = await limits.admit("r", route, None, "1.1.1.1")
    assert not refused.allowed and refused.reason == "route"
    assert refused.retry_after_s == 1
    clock.advance(0.1)
    assert (await limits.admit("r", route, None, "1.1.1.1")).allowed


async def test_retry_after_rounds_up_to_whole_seconds() -> None:
    """1 request per 10 s: the refusal says 10 s; partial seconds round up, never 0."""
    limits = Limits(clock=FakeClock())
    route = _limits({"requests": 1, "per_s": 10})
    assert await _admitted(limits, route, 1) == 1
    assert (await limits.admit("r", route, None, "x")).retry_after_s == 10
    assert [retry_after_header(s) for s in (0.0, 0.001, 1.0, 1.2)] == [1, 1, 1, 2]


async def test_consumer_and_client_keys_are_independent() -> None:
    """Per-consumer and per-client budgets do not share: one exhausted, the others pass."""
    limits = Limits(clock=FakeClock())
    by_consumer = _limits({"requests": 2, "by": "consumer"})
    assert await _admitted(limits, by_consumer, 5, consumer=ALICE) == 2
    assert await _admitted(limits, by_consumer, 5, consumer=BOB) == 2
    refusal = await limits.admit("r", by_consumer, ALICE, "1.1.1.1")
    assert refusal.reason == "consumer"
    by_client = _limits({"requests": 2, "by": "client"})
    assert await _admitted(limits, by_client, 5, client="1.1.1.1") == 2
    assert await _admitted(limits, by_client, 5, client="2.2.2.2") == 2
    # an anonymous caller of a per-consumer limit is counted by address
    assert await _admitted(limits, by_consumer, 5, client="3.3.3.3") == 2


async def test_client_limit_is_checked_before_the_route_budget() -> None:
    """A client over its own limit does not spend the route's shared budget."""
    limits = Limits(clock=FakeClock())
    route = _limits({"requests": 3, "by": "route"}, {"requests": 1, "by": "client"})
    assert await _admitted(limits, route, 10, client="1.1.1.1") == 1
    assert await _admitted(limits, route, 1, client="2.2.2.2") == 1
    assert await _admitted(limits, route, 1, client="3.3.3.3") == 1
    last = await limits.admit("r", route, None, "4.4.4.4")
    assert (last.allowed, last.reason) == (False, "route")


async def test_concurrency_limit_and_release() -> None:
    """Concurrency 2: a third request waits for a release; release is idempotent."""
    limits = Limits()
    route = _limits(concurrency=2)
    first = await limits.admit("r", route, None, "x")
    second = await limits.admit("r", route, None, "x")
    third = await limits.admit("r", route, None, "x")
    assert (first.allowed, second.allowed, third.allowed) == (True, True, False)
    assert third.reason == "concurrency" and third.retry_after_s >= 1
    first.release()
    first.release()
    assert limits.in_flight("r") == 1
    assert (await limits.admit("r", route, None, "x")).allowed


async def test_rate_refusal_gives_back_the_concurrency_slot() -> None:
    """A request refused by a rate limit does not hold a concurrency slot."""
    limits = Limits(clock=FakeClock())
    route = _limits({"requests": 1}, concurrency=5)
    ok = await limits.admit("r", route, None, "x")
    assert not (await limits.admit("r", route, None, "x")).allowed
    assert limits.in_flight("r") == 1
    ok.release()
    assert limits.in_flight("r") == 0


async def test_state_survives_an_unchanged_republish() -> None:
    """An equal limit object from a new publish keeps the counts; a changed one starts fresh."""
    limits = Limits(clock=FakeClock())
    assert await _admitted(limits, _limits({"requests": 2}), 2) == 2
    assert await _admitted(limits, _limits({"requests": 2}), 1) == 0
    assert await _admitted(limits, _limits({"requests": 3}), 3) == 3


async def test_shared_limit_without_redis_counts_locally() -> None:
    """shared: true with no redis_url behaves as a local limit."""
    limits = Limits(clock=FakeClock())
    assert await _admitted(limits, _limits({"requests": 2, "shared": True}), 5) == 2


async def test_shared_limit_degrades_to_local_when_redis_is_down() -> None:
    """An unreachable Redis: decisions are made locally (never an error, never unlimited)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    async with Limits(redis_url=f"redis://127.0.0.1:{port}/0") as limits:
        route = _limits({"requests": 3, "per_s": 60, "shared": True})
        assert await _admitted(limits, route, 6) == 3
        assert limits.statistics()["degraded"] == 1


def test_limit_settings_are_validated() -> None:
    """Zero rates, two limits of one kind, zero concurrency are refused."""
    for bad in (
        {"rate": {"requests": 0}},
        {"rate": {"requests": 1, "per_s": 0}},
        {"rate": [{"requests": 1}, {"requests": 2}]},
        {"rate": {"requests": 1, "by": "user"}},
        {"concurrency": 0},
    ):
        with pytest.raises(ValidationError):
            RouteLimits.model_validate(bad)
    assert RateLimit(requests=10, per_s=2).rate == 5.0
