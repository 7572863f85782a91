"""Circuit breaker state machine (count and time windows) and the adaptive SRE throttle."""

from __future__ import annotations

import contextlib
import random

import pytest

from keel.errors import CircuitOpenError, RateLimitedError, ValidationError
from keel.resilience import (
    AdaptiveBreaker,
    AdaptiveBreakerSettings,
    BreakerSettings,
    BreakerState,
    BreakerStateChanged,
    CircuitBreaker,
    drop_probability,
)
from keel.testing import FakeClock

OPEN, CLOSED, HALF_OPEN = BreakerState.OPEN, BreakerState.CLOSED, BreakerState.HALF_OPEN


def outcomes(breaker: CircuitBreaker, pattern: str) -> None:
    """Feed outcomes: ``s`` success, ``f`` failure."""
    for c in pattern:
        ticket = breaker.allow()
        if c == "s":
            ticket.succeeded()
        else:
            ticket.failed()


def test_count_window_opens_at_failure_rate_after_minimum_calls() -> None:
    """Below minimum_calls nothing opens; at the threshold rate it opens."""
    b = CircuitBreaker(
        BreakerSettings(window_size=10, minimum_calls=4, failure_rate_threshold=0.5),
        clock=FakeClock(),
    )
    outcomes(b, "fff")
    assert b.state is CLOSED
    outcomes(b, "s")
    assert b.state is OPEN  # 3 of 4 failed
    with pytest.raises(CircuitOpenError):
        b.allow()
    assert b.statistics().rejected == 1


def test_count_window_forgets_old_outcomes() -> None:
    """Only the last window_size calls count."""
    b = CircuitBreaker(
        BreakerSettings(window_size=4, minimum_calls=4, failure_rate_threshold=0.75),
        clock=FakeClock(),
    )
    outcomes(b, "ffssssf")  # window now s s s f -> 25%
    assert b.state is CLOSED
    outcomes(b, "ff")  # s f f f... last four: s f f f -> 75%
    assert b.state is OPEN


def test_slow_calls_open_the_breaker() -> None:
    """Successful but slow calls trip the slow-call rate."""
    clock = FakeClock()
    b = CircuitBreaker(
        BreakerSettings(minimum_calls=3, slow_call_duration_s=1.0, slow_call_rate_threshold=0.6),
        clock=clock,
    )
    for duration in (0.1, 2.0, 2.0):
        ticket = b.allow()
        clock.advance(duration)
        ticket.succeeded()
    assert b.state is OPEN
    assert b.statistics().slow_calls == 2  # the window keeps what opened it until it closes


def test_time_window_ages_out_failures() -> None:
    """In a time window, failures older than window_size seconds no longer count."""
    clock = FakeClock()
    b = CircuitBreaker(BreakerSettings(window="time", window_size=10, minimum_calls=4), clock=clock)
    outcomes(b, "ff")
    clock.advance(11)
    outcomes(b, "ssf")
    assert b.state is CLOSED
    assert b.statistics().calls == 3
    outcomes(b, "f")  # 2 of 4 within the window
    assert b.state is OPEN


def test_half_open_admits_limited_probes_then_closes() -> None:
    """After open_duration, exactly half_open_max_calls probes; all good closes it."""
    clock = FakeClock()
    events: list[BreakerStateChanged] = []
    b = CircuitBreaker(
        BreakerSettings(minimum_calls=2, open_duration_s=5, half_open_max_calls=2),
        clock=clock,
        on_state_change=events.append,
    )
    outcomes(b, "ff")
    clock.advance(4.9)
    with pytest.raises(CircuitOpenError):
        b.allow()
    clock.advance(0.1)
    probes = [b.allow(), b.allow()]
    assert b.state is HALF_OPEN
    with pytest.raises(CircuitOpenError):
        b.allow()
    for p in probes:
        p.succeeded()
    assert b.state is CLOSED
    assert [(e.old, e.new) for e in events] == [
        (CLOSED, OPEN),
        (OPEN, HALF_OPEN),
        (HALF_OPEN, CLOSED),
    ]


def test_half_open_failures_reopen() -> None:
    """Probes failing at the threshold rate send the breaker back to open."""
    clock = FakeClock()
    b = CircuitBreaker(
        BreakerSettings(minimum_calls=2, open_duration_s=1, half_open_max_calls=2), clock=clock
    )
    outcomes(b, "ff")
    clock.advance(1)
    outcomes(b, "sf")
    assert b.state is OPEN


def test_cancelled_probe_frees_its_slot() -> None:
    """A probe abandoned with cancelled() lets another probe in."""
    clock = FakeClock()
    b = CircuitBreaker(
        BreakerSettings(minimum_calls=1, open_duration_s=1, half_open_max_calls=1), clock=clock
    )
    outcomes(b, "f")
    clock.advance(1)
    b.allow().cancelled()
    b.allow().succeeded()
    assert b.state is CLOSED


def test_stale_outcomes_are_ignored() -> None:
    """A call admitted before the breaker opened cannot close it afterwards."""
    clock = FakeClock()
    b = CircuitBreaker(
        BreakerSettings(minimum_calls=2, open_duration_s=1, half_open_max_calls=1), clock=clock
    )
    late = b.allow()
    outcomes(b, "ff")
    clock.advance(1)
    probe = b.allow()
    late.succeeded()
    assert b.state is HALF_OPEN
    probe.failed()
    assert b.state is OPEN


def test_a_ticket_reports_once() -> None:
    """A second report of the same ticket changes nothing, on the fast path and off it."""
    clock = FakeClock()
    b = CircuitBreaker(BreakerSettings(window_size=10, minimum_calls=2), clock=clock)
    good = b.allow()
    good.succeeded()
    good.succeeded()
    good.failed()
    slow = b.allow()
    clock.advance(b.settings.slow_call_duration_s)
    slow.succeeded()
    slow.failed()
    stats = b.statistics()
    assert (stats.calls, stats.failures, stats.slow_calls) == (2, 0, 1)


async def test_call_with_fallback_and_is_failure() -> None:
    """call() uses the fallback on failure and on rejection; is_failure filters errors."""
    b = CircuitBreaker(BreakerSettings(minimum_calls=1), clock=FakeClock())

    async def boom() -> str:
        raise KeyError("missing")

    async def cached(exc: Exception) -> str:
        return f"cached after {type(exc).__name__}"

    with pytest.raises(KeyError):
        await b.call(boom, is_failure=lambda e: not isinstance(e, KeyError))
    assert b.state is CLOSED
    assert await b.call(boom, fallback=cached) == "cached after KeyError"
    assert b.state is OPEN
    assert await b.call(boom, fallback=cached) == "cached after CircuitOpenError"


async def test_refusals_of_other_policies_are_not_failures() -> None:
    """A RateLimitedError from an inner policy does not count against the backend."""
    b = CircuitBreaker(BreakerSettings(minimum_calls=1), clock=FakeClock())

    async def limited() -> None:
        raise RateLimitedError("inner limiter")

    for _ in range(5):
        with pytest.raises(RateLimitedError):
            await b.run(limited)
    assert b.state is CLOSED
    assert b.statistics().calls == 0
    assert "state=closed" in repr(b)


def test_breaker_settings_are_validated() -> None:
    """Out-of-range thresholds are a ValidationError naming the field."""
    with pytest.raises(ValidationError, match="failure_rate_threshold"):
        BreakerSettings(failure_rate_threshold=1.5)
    with pytest.raises(ValidationError, match="window"):
        BreakerSettings(window="sliding")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("requests", "accepts", "expected"),
    [(0, 0, 0.0), (100, 100, 0.0), (100, 50, (100 - 75) / 101), (100, 0, 100 / 101)],
)
def test_sre_drop_probability_formula(requests: int, accepts: int, expected: float) -> None:
    """p = max(0, (requests - K * accepts) / (requests + 1)) with K = 1.5."""
    assert drop_probability(requests, accepts, 1.5) == pytest.approx(expected)


def test_adaptive_breaker_sheds_the_predicted_share() -> None:
    """With the backend refusing everything the shed share tracks the formula."""
    clock = FakeClock()
    b = AdaptiveBreaker(AdaptiveBreakerSettings(protection=0), clock=clock, rng=random.Random(7))
    shed = 0
    for _ in range(2000):
        try:
            b.allow().failed()
        except CircuitOpenError:
            shed += 1
    # With no accepts, p -> requests / (requests + 1): nearly everything is shed.
    assert shed > 1900
    assert b.statistics().drop_probability > 0.99


def test_adaptive_breaker_lets_healthy_traffic_through_and_recovers() -> None:
    """Healthy traffic is never shed, and the window forgets an outage."""
    clock = FakeClock()
    b = AdaptiveBreaker(AdaptiveBreakerSettings(window_s=10), clock=clock, rng=random.Random(1))
    for _ in range(1000):
        b.allow().succeeded()
    assert b.drop_probability() == 0.0
    for _ in range(1000):
        with contextlib.suppress(CircuitOpenError):
            b.allow().failed()
    assert 0.1 < b.drop_probability() < 0.5  # half accepted: (2000 - 5 - 1500) / 2001
    clock.advance(10.5)
    assert b.drop_probability() == 0.0
