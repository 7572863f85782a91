"""Resilience policies: timeouts and deadlines, retry, breakers, limiters, bulkheads, hedging.

Each policy is an object with an async ``run(fn, *args, **kwargs)``; a
:class:`Pipeline` composes them (first outermost) and doubles as a decorator.
Decision logic is synchronous and takes an injected :class:`~keel.clock.Clock`;
only waiting and Redis I/O are async. Every policy has a no-op twin
(``NoRetry``, ``NoCircuitBreaker``...). See ``docs/resilience.md``.

This package imports nothing of keel but ``keel.clock``, ``keel.errors`` and
``keel.observe`` (for the metrics hook protocol).
"""

from keel.resilience._adaptive import (
    AdaptiveBreaker,
    AdaptiveBreakerSettings,
    AdaptiveStatistics,
    AdaptiveTicket,
    drop_probability,
)
from keel.resilience._breaker import (
    BreakerSettings,
    BreakerState,
    BreakerStateChanged,
    BreakerStatistics,
    BreakerTicket,
    CircuitBreaker,
)
from keel.resilience._budget import (
    BudgetStatistics,
    NoRetryBudget,
    RetryBudget,
    RetryBudgetSettings,
)
from keel.resilience._bulkhead import Bulkhead, BulkheadStatistics, VegasLimit, VegasSettings
from keel.resilience._deadline import (
    Deadline,
    DeadlineScope,
    Timeout,
    current_deadline,
    deadline,
    remaining,
)
from keel.resilience._fallback import Fallback
from keel.resilience._hedge import Hedge, HedgeSettings, HedgeStatistics
from keel.resilience._keyed import KeyedLimiter, KeyedStatistics, LeakyBucketShaper, LocalLimiter
from keel.resilience._limiters import (
    GCRA,
    LeakyBucket,
    LimiterStatistics,
    SlidingWindow,
    TokenBucket,
)
from keel.resilience._noop import (
    NoBulkhead,
    NoCircuitBreaker,
    NoFallback,
    NoHedge,
    NoRateLimiter,
    NoRetry,
    NoTicket,
    NoTimeout,
)
from keel.resilience._pipeline import Pipeline, Policy
from keel.resilience._redis_limiter import RedisGCRA, RedisLimiterStatistics, RedisSlidingWindow
from keel.resilience._retry import (
    Jitter,
    Retry,
    RetrySettings,
    RetryStatistics,
    backoff_delay,
    default_retry_on,
)

__all__ = [
    "GCRA",
    "AdaptiveBreaker",
    "AdaptiveBreakerSettings",
    "AdaptiveStatistics",
    "AdaptiveTicket",
    "BreakerSettings",
    "BreakerState",
    "BreakerStateChanged",
    "BreakerStatistics",
    "BreakerTicket",
    "BudgetStatistics",
    "Bulkhead",
    "BulkheadStatistics",
    "CircuitBreaker",
    "Deadline",
    "DeadlineScope",
    "Fallback",
    "Hedge",
    "HedgeSettings",
    "HedgeStatistics",
    "Jitter",
    "KeyedLimiter",
    "KeyedStatistics",
    "LeakyBucket",
    "LeakyBucketShaper",
    "LimiterStatistics",
    "LocalLimiter",
    "NoBulkhead",
    "NoCircuitBreaker",
    "NoFallback",
    "NoHedge",
    "NoRateLimiter",
    "NoRetry",
    "NoRetryBudget",
    "NoTicket",
    "NoTimeout",
    "Pipeline",
    "Policy",
    "RedisGCRA",
    "RedisLimiterStatistics",
    "RedisSlidingWindow",
    "Retry",
    "RetryBudget",
    "RetryBudgetSettings",
    "RetrySettings",
    "RetryStatistics",
    "SlidingWindow",
    "Timeout",
    "TokenBucket",
    "VegasLimit",
    "VegasSettings",
    "backoff_delay",
    "current_deadline",
    "deadline",
    "default_retry_on",
    "drop_probability",
    "remaining",
]
