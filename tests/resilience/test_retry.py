"""Retry: backoff formulas, retry decisions, budget and deadline integration."""

from __future__ import annotations

import asyncio
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from keel.errors import (
    CircuitOpenError,
    RateLimitedError,
    StoreUnavailableError,
    ValidationError,
)
from keel.resilience import (
    Retry,
    RetryBudget,
    RetryBudgetSettings,
    RetrySettings,
    backoff_delay,
    deadline,
)
from keel.testing import FakeClock


class Flaky:
    """Fails ``failures`` times with ``error``, then returns ``"ok"``."""

    def __init__(self, failures: int, error: Exception | None = None) -> None:
        self.failures = failures
        self.error = error or StoreUnavailableError("down")
        self.calls = 0

    async def __call__(self) -> str:
        self.calls += 1
        if self.calls <= self.failures:
            raise self.error
        return "ok"


def test_exponential_sequence_without_jitter() -> None:
    """With no jitter the delays are base * multiplier**n, capped."""
    s = RetrySettings(base_delay_s=0.1, max_delay_s=1.0, jitter="none", max_attempts=10)
    rng = random.Random(1)
    assert [backoff_delay(s, n, 0.0, rng) for n in range(6)] == pytest.approx(
        [0.1, 0.2, 0.4, 0.8, 1.0, 1.0]
    )


@given(retry=st.integers(0, 60), seed=st.integers(0, 2**32))
def test_full_and_equal_jitter_bounds(retry: int, seed: int) -> None:
    """Full jitter lies in [0, v] and equal jitter in [v/2, v], v the capped exponential."""
    rng = random.Random(seed)
    full = RetrySettings(base_delay_s=0.05, max_delay_s=3.0, jitter="full")
    equal = RetrySettings(base_delay_s=0.05, max_delay_s=3.0, jitter="equal")
    v = min(3.0, 0.05 * 2.0**retry)
    assert 0.0 <= backoff_delay(full, retry, 0.0, rng) <= v
    assert v / 2 <= backoff_delay(equal, retry, 0.0, rng) <= v


@given(previous=st.floats(0.0, 100.0), seed=st.integers(0, 2**32))
def test_decorrelated_jitter_bounds(previous: float, seed: int) -> None:
    """Decorrelated jitter lies in [base, min(cap, 3 * previous)] (AWS formula)."""
    s = RetrySettings(base_delay_s=0.05, max_delay_s=2.0, jitter="decorrelated")
    delay = backoff_delay(s, 3, previous, random.Random(seed))
    assert min(0.05, 2.0) <= delay <= min(2.0, max(0.05, previous) * 3)


async def test_retries_until_success() -> None:
    """Transient failures are retried with sleeps on the clock until the call succeeds."""
    clock = FakeClock(autojump=True)
    flaky = Flaky(2)
    retry = Retry(RetrySettings(max_attempts=3, jitter="none"), clock=clock)
    async with asyncio.timeout(5):
        assert await retry.run(flaky) == "ok"
    assert flaky.calls == 3
    assert clock.monotonic() == pytest.approx(0.05 + 0.1)
    assert retry.statistics().retries == 2


async def test_gives_up_after_max_attempts() -> None:
    """After max_attempts the last error propagates."""
    clock = FakeClock(autojump=True)
    flaky = Flaky(10)
    retry = Retry(RetrySettings(max_attempts=4), clock=clock)
    async with asyncio.timeout(5):
        with pytest.raises(StoreUnavailableError):
            await retry.run(flaky)
    assert flaky.calls == 4
    assert retry.statistics().gave_up == 1


async def test_non_retryable_errors_pass_at_once() -> None:
    """ValueError and CircuitOpenError are not retried by default."""
    clock = FakeClock(autojump=True)
    for error in (ValueError("bad"), CircuitOpenError("open")):
        flaky = Flaky(5, error)
        with pytest.raises(type(error)):
            await Retry(clock=clock).run(flaky)
        assert flaky.calls == 1


async def test_retry_after_is_a_floor_on_the_delay() -> None:
    """A RateLimitedError's retry_after_s lengthens the next delay."""
    clock = FakeClock(autojump=True)
    flaky = Flaky(1, RateLimitedError("slow down", retry_after_s=2.5))
    async with asyncio.timeout(5):
        assert await Retry(RetrySettings(jitter="none"), clock=clock).run(flaky) == "ok"
    assert clock.monotonic() == pytest.approx(2.5)


async def test_deadline_stops_retrying() -> None:
    """No retry sleeps past the caller's deadline."""
    clock = FakeClock(autojump=True)
    flaky = Flaky(10)
    settings = RetrySettings(max_attempts=10, base_delay_s=0.4, max_delay_s=10, jitter="none")
    async with asyncio.timeout(5), deadline(1.0, clock=clock):
        with pytest.raises(StoreUnavailableError):
            await Retry(settings, clock=clock).run(flaky)
    assert flaky.calls == 2  # 0.4 fits in 1 s, then 0.8 more would not
    assert clock.monotonic() <= 1.0


async def test_max_elapsed_stops_retrying() -> None:
    """max_elapsed_s bounds first attempt to last sleep's end."""
    clock = FakeClock(autojump=True)
    flaky = Flaky(10)
    settings = RetrySettings(
        max_attempts=10, base_delay_s=1.0, max_delay_s=10, jitter="none", max_elapsed_s=3.5
    )
    async with asyncio.timeout(5):
        with pytest.raises(StoreUnavailableError):
            await Retry(settings, clock=clock).run(flaky)
    assert flaky.calls == 3  # sleeps 1 and 2; 4 more would end at 7 > 3.5


async def test_budget_caps_retries_under_outage() -> None:
    """With a 10% budget and no floor, 100 failing calls make at most 10 retries."""
    clock = FakeClock(autojump=True)
    budget = RetryBudget(RetryBudgetSettings(ratio=0.1, min_retries_per_s=0), clock=clock)
    retry = Retry(RetrySettings(max_attempts=3), budget=budget, clock=clock)
    calls = 0

    async def down() -> None:
        nonlocal calls
        calls += 1
        raise StoreUnavailableError("down")

    async with asyncio.timeout(5):
        for _ in range(100):
            with pytest.raises(StoreUnavailableError):
                await retry.run(down)
    assert calls - 100 <= 10
    assert budget.statistics().rejections >= 90


def test_budget_floor_refills_with_time() -> None:
    """The min_retries_per_s floor allows retries without traffic, refilling over time."""
    clock = FakeClock()
    budget = RetryBudget(RetryBudgetSettings(ratio=0.0, min_retries_per_s=2), clock=clock)
    assert [budget.try_withdraw() for _ in range(3)] == [True, True, False]
    clock.advance(0.5)
    assert budget.try_withdraw()
    assert not budget.try_withdraw()
    assert "RetryBudget(" in repr(budget)


def test_settings_are_validated() -> None:
    """Nonsense settings are a ValidationError naming the field."""
    with pytest.raises(ValidationError, match="max_attempts"):
        RetrySettings(max_attempts=0)
    with pytest.raises(ValidationError, match="jitter"):
        RetrySettings(jitter="wild")  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match="ratio"):
        RetryBudgetSettings(ratio=-1)
