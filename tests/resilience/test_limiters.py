"""Local rate limiters: conformance to their formulas, waits, per-key LRU, the shaper."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from keel.errors import RateLimitedError, ValidationError
from keel.resilience import (
    GCRA,
    KeyedLimiter,
    LeakyBucket,
    LeakyBucketShaper,
    SlidingWindow,
    TokenBucket,
)
from keel.testing import FakeClock

Factory = Callable[[float, float, FakeClock], TokenBucket | LeakyBucket | GCRA]
FACTORIES: dict[str, Factory] = {
    "token_bucket": lambda rate, burst, clock: TokenBucket(rate, burst, clock=clock),
    "leaky_bucket": lambda rate, burst, clock: LeakyBucket(rate, burst, clock=clock),
    "gcra": lambda rate, burst, clock: GCRA(rate, burst, clock=clock),
}
arrivals = st.lists(
    st.tuples(st.floats(0.0, 0.5, allow_nan=False), st.integers(1, 3)), min_size=1, max_size=60
)


@pytest.mark.parametrize("kind", sorted(FACTORIES))
@settings(max_examples=60, deadline=None)
@given(rate=st.floats(0.5, 50.0), burst=st.integers(3, 20), events=arrivals)
def test_never_more_than_burst_plus_rate_times_t(
    kind: str, rate: float, burst: int, events: list[tuple[float, int]]
) -> None:
    """In every window of length t, admitted permits <= burst + rate * t."""
    clock = FakeClock()
    limiter = FACTORIES[kind](rate, burst, clock)
    admitted: list[tuple[float, int]] = []
    for gap, n in events:
        clock.advance(gap)
        if limiter.try_acquire(n):
            admitted.append((clock.monotonic(), n))
    for i, (start, _) in enumerate(admitted):
        total = 0
        for end, n in admitted[i:]:
            total += n
            assert total <= burst + rate * (end - start) + 1e-6


@pytest.mark.parametrize("kind", sorted(FACTORIES))
def test_full_burst_then_steady_rate(kind: str) -> None:
    """A fresh limiter admits a full burst at once, then one permit per 1/rate seconds."""
    clock = FakeClock()
    limiter = FACTORIES[kind](10.0, 5, clock)
    assert [limiter.try_acquire() for _ in range(6)] == [True] * 5 + [False]
    assert limiter.retry_after() == pytest.approx(0.1)
    clock.advance(0.1)
    assert limiter.try_acquire()
    assert not limiter.try_acquire()
    assert limiter.statistics().rejected == 2


async def test_acquire_waits_on_the_clock() -> None:
    """acquire() sleeps exactly until the permits are there."""
    clock = FakeClock(autojump=True)
    bucket = TokenBucket(2.0, 2, clock=clock)
    async with asyncio.timeout(5):
        await bucket.acquire(2)
        await bucket.acquire(1)
    assert clock.monotonic() == pytest.approx(0.5)
    assert bucket.statistics().waited_s == pytest.approx(0.5)


async def test_acquire_timeout_raises_with_retry_after() -> None:
    """A wait longer than timeout_s raises RateLimitedError carrying retry_after_s."""
    clock = FakeClock(autojump=True)
    bucket = TokenBucket(1.0, 1, clock=clock)
    bucket.try_acquire()
    async with asyncio.timeout(5):
        with pytest.raises(RateLimitedError) as caught:
            await bucket.acquire(1, timeout_s=0.5)
        with pytest.raises(RateLimitedError):
            await bucket.acquire(2)  # more than the burst: never
    assert caught.value.retry_after_s == pytest.approx(1.0)


async def test_run_fails_fast_when_limited() -> None:
    """As a pipeline step a limiter refuses at once instead of waiting."""
    bucket = GCRA(1.0, 1, clock=FakeClock())

    async def work() -> int:
        return 1

    assert await bucket.run(work) == 1
    with pytest.raises(RateLimitedError):
        await bucket.run(work)


def test_sliding_window_weights_the_previous_window() -> None:
    """The estimate is previous * overlap + current (Cloudflare)."""
    clock = FakeClock()
    window = SlidingWindow(10, 1.0, clock=clock)
    assert sum(window.try_acquire() for _ in range(12)) == 10
    clock.advance(1.5)  # previous = 10 weighted by 0.5 -> 5 used
    assert sum(window.try_acquire() for _ in range(10)) == 5
    assert 0 < window.retry_after() <= 0.5
    clock.advance(2.0)
    assert sum(window.try_acquire() for _ in range(12)) == 10


def test_keyed_limiter_is_bounded_lru() -> None:
    """Per-key limiters never exceed max_keys; the least recently used key goes first."""
    clock = FakeClock()
    keyed: KeyedLimiter[TokenBucket] = KeyedLimiter(
        lambda: TokenBucket(1.0, 1, clock=clock), max_keys=3
    )
    for key in ("a", "b", "c"):
        assert keyed.try_acquire(key)
    assert not keyed.try_acquire("a")  # a is now the most recent
    for i in range(100):
        keyed.try_acquire(f"ip-{i}")
        assert len(keyed) <= 3
    assert keyed.statistics().evictions == 100
    assert keyed.try_acquire("a")  # evicted, so it starts full again


async def test_shaper_spaces_calls_at_the_rate() -> None:
    """The shaper delays each call to its slot and rejects beyond max_delay_s."""
    clock = FakeClock()
    shaper = LeakyBucketShaper(10.0, max_delay_s=0.25, clock=clock)
    assert [shaper.reserve() for _ in range(4)] == pytest.approx([0.0, 0.1, 0.2, None])
    with pytest.raises(RateLimitedError):
        await shaper.acquire()
    assert not shaper.try_acquire()
    clock.advance(0.3)
    assert shaper.try_acquire()


def test_limiter_arguments_are_validated() -> None:
    """Zero or infinite rates and bursts are a ValidationError."""
    with pytest.raises(ValidationError):
        TokenBucket(0, 1)
    with pytest.raises(ValidationError):
        GCRA(1, 0.5)
    with pytest.raises(ValidationError):
        SlidingWindow(0, 1.0)
    with pytest.raises(ValidationError):
        KeyedLimiter(lambda: TokenBucket(1, 1), max_keys=0)
