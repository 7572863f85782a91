"""The Pipeline: order, decorator, from_config, no-op twins, metrics and the public names."""

from __future__ import annotations

import asyncio
import inspect
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

import keel.observe
import keel.resilience
from keel.errors import (
    CircuitOpenError,
    DeadlineExceededError,
    RateLimitedError,
    StoreUnavailableError,
    ValidationError,
)
from keel.observe import PrometheusListener
from keel.resilience import (
    AdaptiveBreaker,
    BreakerSettings,
    Bulkhead,
    CircuitBreaker,
    Fallback,
    NoBulkhead,
    NoCircuitBreaker,
    NoFallback,
    NoHedge,
    NoRateLimiter,
    NoRetry,
    NoTimeout,
    Pipeline,
    Retry,
    RetrySettings,
    Timeout,
    TokenBucket,
    remaining,
)
from keel.testing import FakeClock


class Recorder:
    """A policy that records the order policies are entered in."""

    def __init__(self, name: str, log: list[str]) -> None:
        self.name, self.log = name, log

    async def run(self, fn: Any, /, *args: Any, **kwargs: Any) -> Any:
        self.log.append(self.name)
        return await fn(*args, **kwargs)


async def test_policies_apply_first_outermost() -> None:
    """Pipeline(a, b, c) enters a, then b, then c, then calls fn with its arguments."""
    log: list[str] = []
    pipeline = Pipeline(Recorder("a", log), Recorder("b", log), Recorder("c", log))

    async def add(x: int, *, y: int) -> int:
        log.append("fn")
        return x + y

    assert await pipeline.run(add, 1, y=2) == 3
    assert log == ["a", "b", "c", "fn"]
    assert await Pipeline().run(add, 2, y=2) == 4


async def test_decorator_keeps_the_function() -> None:
    """@pipeline wraps an async function and keeps its name and docstring."""
    clock = FakeClock(autojump=True)
    attempts = 0
    pipeline = Pipeline(Retry(RetrySettings(max_attempts=3), clock=clock))

    @pipeline
    async def fetch(key: str) -> str:
        """Fetch a key."""
        nonlocal attempts
        attempts += 1
        if attempts < 3:
            raise StoreUnavailableError("flaky")
        return key.upper()

    async with asyncio.timeout(5):
        assert await fetch("k") == "K"
    assert fetch.__name__ == "fetch"
    assert fetch.__doc__ == "Fetch a key."


async def test_full_pipeline_retries_through_breaker_and_limiter() -> None:
    """Timeout, retry, breaker, limiter and bulkhead work together on the success path."""
    clock = FakeClock(autojump=True)
    breaker = CircuitBreaker(BreakerSettings(minimum_calls=100), clock=clock)
    pipeline = Pipeline(
        Timeout(10, clock=clock),
        Retry(RetrySettings(max_attempts=5), clock=clock),
        breaker,
        TokenBucket(1.0, 1, clock=clock),
        Bulkhead(2, clock=clock),
    )
    calls = 0

    async def work() -> float:
        nonlocal calls
        calls += 1
        return remaining()

    async with asyncio.timeout(5):
        assert await pipeline.run(work) <= 10
        # The bucket is empty: the limiter refuses, Retry honours its Retry-After.
        assert await pipeline.run(work) <= 10
    assert calls == 2
    assert breaker.statistics().calls == 2  # the refusals were not recorded


async def test_open_breaker_is_not_retried() -> None:
    """Retry outside an open breaker fails at once with CircuitOpenError."""
    clock = FakeClock()
    breaker = CircuitBreaker(BreakerSettings(minimum_calls=1), clock=clock)
    breaker.allow().failed()
    pipeline = Pipeline(Retry(clock=clock), breaker)

    async def work() -> None:
        raise AssertionError("must not run")

    with pytest.raises(CircuitOpenError):
        await pipeline.run(work)


async def test_from_config_builds_the_canonical_order() -> None:
    """from_config builds each section in the documented order, skipping disabled ones."""
    pipeline = Pipeline.from_config(
        {
            "bulkhead": {"max_concurrent": 4, "max_queue": 8},
            "rate_limiter": {"kind": "gcra", "rate": 100, "burst": 10},
            "retry": {"max_attempts": 2, "jitter": "decorrelated"},
            "retry_budget": {"ratio": 0.2},
            "timeout": {"seconds": 2.0},
            "circuit_breaker": {"window": "time", "window_size": 30},
            "hedge": {"enabled": False},
            "attempt_timeout": {"seconds": 0.5},
        },
        name="orders",
    )
    kinds = [type(p).__name__ for p in pipeline.policies]
    assert kinds == ["Timeout", "Retry", "CircuitBreaker", "GCRA", "Bulkhead", "Timeout"]

    async def ok() -> str:
        return "ok"

    assert await pipeline.run(ok) == "ok"
    adaptive = Pipeline.from_config({"circuit_breaker": {"adaptive": True, "k": 2.0}})
    assert isinstance(adaptive.policies[0], AdaptiveBreaker)
    vegas = Pipeline.from_config({"bulkhead": {"adaptive": {"initial": 5}}})
    assert isinstance(vegas.policies[0], Bulkhead)
    assert vegas.policies[0].limit == 5


@pytest.mark.parametrize(
    ("config", "match"),
    [
        ({"retries": {}}, "unknown pipeline section"),
        ({"retry": {"attempts": 3}}, "retry"),
        ({"rate_limiter": {"kind": "magic"}}, "kind"),
        ({"timeout": 5}, "must be a mapping"),
        ({"circuit_breaker": {"failure_rate_threshold": 2}}, "failure_rate_threshold"),
    ],
)
def test_from_config_rejects_bad_documents(config: dict[str, Any], match: str) -> None:
    """A bad document is a ValidationError naming the section or field."""
    with pytest.raises(ValidationError, match=match):
        Pipeline.from_config(config)


async def test_noop_twins_pass_everything_through() -> None:
    """Every no-op twin admits and returns the function's result."""

    async def ok(x: int) -> int:
        return x

    twins = [NoTimeout(), NoRetry(), NoCircuitBreaker(), NoRateLimiter(), NoBulkhead(), NoHedge()]
    assert await Pipeline(*twins).run(ok, 7) == 7
    assert NoRateLimiter().try_acquire(10**9)
    assert NoBulkhead().try_acquire()
    NoCircuitBreaker().allow().failed()
    assert repr(NoRetry()) == "NoRetry()"


async def test_prometheus_listener_counts_calls_rejections_and_states() -> None:
    """The metrics hook records calls, rejections by reason, and breaker state."""
    registry = CollectorRegistry()
    listener = PrometheusListener(registry)
    clock = FakeClock()
    breaker = CircuitBreaker(
        BreakerSettings(minimum_calls=1), name="db", clock=clock, listener=listener
    )
    bucket = TokenBucket(1.0, 1, clock=clock, name="api", listener=listener)

    async def fail() -> None:
        raise StoreUnavailableError("down")

    with pytest.raises(StoreUnavailableError):
        await breaker.call(fail)
    with pytest.raises(CircuitOpenError):
        await breaker.call(fail)
    bucket.try_acquire()
    with pytest.raises(RateLimitedError):
        await bucket.run(fail)

    def value(metric: str, **labels: str) -> float | None:
        return registry.get_sample_value(metric, labels)

    assert value("keel_resilience_calls_total", policy="breaker", name="db", outcome="failure")
    assert value("keel_resilience_rejections_total", policy="breaker", name="db", reason="open")
    assert value("keel_resilience_state", policy="breaker", name="db") == 2.0
    assert value(
        "keel_resilience_rejections_total", policy="token_bucket", name="api", reason="limited"
    )
    assert keel.observe.default_listener() is keel.observe.default_listener()
    pipeline = Pipeline.from_config({"retry": {"max_attempts": 1}}, name="p", listener=listener)
    with pytest.raises(StoreUnavailableError):
        await pipeline.run(fail)
    assert value("keel_resilience_calls_total", policy="pipeline", name="p", outcome="failure")
    assert "Pipeline(name='p'" in repr(pipeline)


async def test_timeout_inside_pipeline_is_a_deadline_error() -> None:
    """A per-attempt timeout in a pipeline surfaces as DeadlineExceededError after retries."""
    clock = FakeClock(autojump=True)
    pipeline = Pipeline(
        Retry(RetrySettings(max_attempts=2, jitter="none"), clock=clock),
        Timeout(0.1, clock=clock),
    )
    async with asyncio.timeout(5):
        with pytest.raises(DeadlineExceededError):
            await pipeline.run(asyncio.Event().wait)


def _isort_key(name: str) -> tuple[int, str]:
    kind = 0 if name.isupper() and len(name) > 1 else 1 if name[:1].isupper() else 2
    return kind, name


@pytest.mark.parametrize("module", [keel.resilience, keel.observe])
def test_all_is_sorted_and_complete(module: Any) -> None:
    """__all__ lists every public name once, in isort order (constants, classes, functions)."""
    names = module.__all__
    assert names == sorted(names, key=_isort_key)
    public = {
        n for n, v in vars(module).items() if not n.startswith("_") and not inspect.ismodule(v)
    }
    public |= set(getattr(module, "_LAZY", {}))  # names loaded on first use
    assert set(names) == public


async def test_fallback_answers_for_handled_errors_only() -> None:
    """Fallback replaces the result for errors `on` accepts and lets others through."""

    async def cached(exc: Exception) -> str:
        return f"cached ({type(exc).__name__})"

    async def down() -> str:
        raise StoreUnavailableError("down")

    async def bad() -> str:
        raise ValueError("bad input")

    fallback = Fallback(cached, on=lambda exc: isinstance(exc, StoreUnavailableError))
    pipeline = Pipeline(fallback, Retry(RetrySettings(max_attempts=1)))
    assert await pipeline.run(down) == "cached (StoreUnavailableError)"
    with pytest.raises(ValueError):
        await pipeline.run(bad)
    assert fallback.used == 1
    with pytest.raises(StoreUnavailableError):
        await NoFallback().run(down)
