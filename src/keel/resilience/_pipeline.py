"""Policies composed into one call path, in code or from a config document.

``Pipeline(a, b, c).run(fn, *args)`` runs ``a(b(c(fn)))``: the first policy is
the outermost. The order :meth:`Pipeline.from_config` builds, and the one we
recommend (as Resilience4j does, with the timeout moved out so one budget
covers the backoff sleeps too), is::

    Timeout -> Retry -> CircuitBreaker -> RateLimiter -> Bulkhead
            -> attempt Timeout -> Hedge -> fn

- Timeout outermost: one deadline for the whole operation; Retry reads it
  (:func:`remaining`) and does not sleep past it.
- Retry outside the breaker: each attempt is judged by the breaker, and an
  open breaker fails the attempt at once (Retry does not retry it).
- Breaker outside limiter and bulkhead: while open it spends neither permits
  nor slots; their refusals are not recorded as backend failures.
- Attempt timeout inside the bulkhead: a slot is held at most that long.

Composition costs no closure per call: the policies' ``run`` methods are
chained by passing the rest of the chain as arguments, so the pipeline adds
one coroutine frame per policy.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, ParamSpec, Protocol, TypeVar

from keel.clock import SYSTEM_CLOCK, Clock
from keel.errors import ValidationError
from keel.observe.metrics import ResilienceListener
from keel.resilience._adaptive import AdaptiveBreaker, AdaptiveBreakerSettings
from keel.resilience._breaker import BreakerSettings, CircuitBreaker
from keel.resilience._budget import RetryBudget, RetryBudgetSettings
from keel.resilience._bulkhead import Bulkhead, VegasLimit, VegasSettings
from keel.resilience._deadline import Timeout
from keel.resilience._hedge import Hedge, HedgeSettings
from keel.resilience._keyed import LeakyBucketShaper
from keel.resilience._limiters import GCRA, LeakyBucket, SlidingWindow, TokenBucket
from keel.resilience._retry import Retry, RetrySettings

__all__ = ["Pipeline", "Policy"]

P = ParamSpec("P")
T = TypeVar("T")

# Canonical order of the config sections, outermost first.
SECTIONS = (
    "timeout",
    "retry",
    "circuit_breaker",
    "rate_limiter",
    "bulkhead",
    "attempt_timeout",
    "hedge",
)


class Policy(Protocol):
    """Anything with an async ``run(fn, *args, **kwargs)`` that awaits ``fn`` (or refuses)."""

    def run(
        self, fn: Callable[..., Awaitable[Any]], /, *args: Any, **kwargs: Any
    ) -> Awaitable[Any]:
        """Await ``fn(*args, **kwargs)`` under the policy."""
        ...


class Pipeline:
    """Policies applied around a call, the first outermost.

    Args:
        policies: outermost first, e.g. ``Timeout(2), Retry(), CircuitBreaker(),
            TokenBucket(100, 20), Bulkhead(10)``.
        name: label for metrics and ``repr``.
        listener: metrics hook; counts every call's outcome when given.
    """

    __slots__ = ("_listener", "_rest", "_runs", "name", "policies")

    def __init__(
        self, *policies: Policy, name: str = "pipeline", listener: ResilienceListener | None = None
    ) -> None:
        self.policies = policies
        self.name = name
        self._listener = listener
        runs = tuple(policy.run for policy in policies)
        self._runs = runs
        self._rest = runs[1:]

    async def run(self, fn: Callable[P, Awaitable[T]], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """Await ``fn(*args, **kwargs)`` through every policy.

        Raises:
            Exception: whatever ``fn`` or a policy raised (``CircuitOpenError``,
                ``RateLimitedError``, ``BulkheadFullError``, ``DeadlineExceededError``...).
        """
        if not self._runs:
            return await fn(*args, **kwargs)
        if self._listener is not None:
            return await self._run_counted(fn, *args, **kwargs)
        # runs[0](runs[1], ..., fn, *args): each run awaits its first argument
        # with the rest, so the chain unwinds without a closure per layer.
        result: T = await self._runs[0](*self._rest, fn, *args, **kwargs)
        return result

    async def _run_counted(
        self, fn: Callable[P, Awaitable[T]], /, *args: P.args, **kwargs: P.kwargs
    ) -> T:
        assert self._listener is not None
        try:
            result: T = await self._runs[0](*self._rest, fn, *args, **kwargs)
        except Exception:
            self._listener.on_call("pipeline", self.name, "failure")
            raise
        self._listener.on_call("pipeline", self.name, "success")
        return result

    def __call__(self, fn: Callable[P, Awaitable[T]]) -> Callable[P, Awaitable[T]]:
        """Use the pipeline as a decorator of an async function."""

        @functools.wraps(fn)
        async def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
            return await self.run(fn, *args, **kwargs)

        return wrapper

    @classmethod
    def from_config(
        cls,
        config: Mapping[str, Any],
        *,
        name: str = "pipeline",
        clock: Clock = SYSTEM_CLOCK,
        listener: ResilienceListener | None = None,
    ) -> Pipeline:
        """Build a pipeline from a plain document (JSON/YAML from the config center).

        Sections, each a mapping of the policy's settings, all optional and
        applied in the canonical order above: ``timeout`` (``seconds``),
        ``retry`` (:class:`RetrySettings` fields), ``retry_budget``
        (:class:`RetryBudgetSettings` fields, shared by retry and hedge),
        ``circuit_breaker`` (:class:`BreakerSettings` fields, or
        ``adaptive: true`` plus :class:`AdaptiveBreakerSettings` fields),
        ``rate_limiter`` (``kind``: token_bucket | leaky_bucket | gcra |
        sliding_window | shaper, plus its arguments), ``bulkhead``
        (``max_concurrent``, ``max_queue``, ``queue_timeout_s``, or
        ``adaptive``: :class:`VegasSettings` fields), ``attempt_timeout``
        (``seconds``), ``hedge`` (:class:`HedgeSettings` fields). A section
        with ``enabled: false`` is left out.

        Args:
            config: the document.
            name: prefix of the policies' names (for metrics).
            clock: the clock every policy uses.
            listener: the metrics hook every policy reports to.

        Returns:
            the pipeline.

        Raises:
            ValidationError: an unknown section or setting, or a bad value.
        """
        unknown = set(config) - {*SECTIONS, "retry_budget"}
        if unknown:
            raise ValidationError(
                f"unknown pipeline section(s) {sorted(unknown)}; "
                f"known: {[*SECTIONS, 'retry_budget']}"
            )
        builder = _Builder(config, name, clock, listener)
        policies = [
            builder.build(section)
            for section in SECTIONS
            if section in config and _options(config, section).get("enabled", True)
        ]
        return cls(*policies, name=name, listener=listener)

    def __repr__(self) -> str:
        inner = ", ".join(repr(p) for p in self.policies)
        return f"Pipeline(name={self.name!r}, policies=[{inner}])"


def _options(config: Mapping[str, Any], section: str) -> dict[str, Any]:
    options = config.get(section)
    if not isinstance(options, Mapping):
        raise ValidationError(f"pipeline section {section!r} must be a mapping, got {options!r}")
    return dict(options)


class _Builder:
    """Turns each config section into its policy (one small method per section)."""

    def __init__(
        self,
        config: Mapping[str, Any],
        name: str,
        clock: Clock,
        listener: ResilienceListener | None,
    ) -> None:
        self.config, self.name, self.clock, self.listener = config, name, clock, listener
        self.budget: RetryBudget | None = None
        if "retry_budget" in config:
            settings = _make(RetryBudgetSettings, _options(config, "retry_budget"), "retry_budget")
            self.budget = RetryBudget(settings, clock=clock)

    def build(self, section: str) -> Policy:
        options = _options(self.config, section)
        options.pop("enabled", None)
        method: Callable[[dict[str, Any]], Policy] = getattr(self, f"_{section}")
        try:
            return method(options)
        except TypeError as exc:
            raise ValidationError(f"pipeline section {section!r}: {exc}") from exc

    def _timeout(self, options: dict[str, Any]) -> Policy:
        return Timeout(options.pop("seconds"), clock=self.clock, **options)

    _attempt_timeout = _timeout

    def _retry(self, options: dict[str, Any]) -> Policy:
        settings = _make(RetrySettings, options, "retry")
        return Retry(
            settings,
            budget=self.budget,
            clock=self.clock,
            name=f"{self.name}.retry",
            listener=self.listener,
        )

    def _circuit_breaker(self, options: dict[str, Any]) -> Policy:
        common: dict[str, Any] = {
            "name": f"{self.name}.breaker",
            "clock": self.clock,
            "listener": self.listener,
        }
        if options.pop("adaptive", False):
            adaptive = _make(AdaptiveBreakerSettings, options, "circuit_breaker")
            return AdaptiveBreaker(adaptive, **common)
        return CircuitBreaker(_make(BreakerSettings, options, "circuit_breaker"), **common)

    def _rate_limiter(self, options: dict[str, Any]) -> Policy:
        kinds: dict[str, Callable[..., Policy]] = {
            "token_bucket": TokenBucket,
            "leaky_bucket": LeakyBucket,
            "gcra": GCRA,
            "sliding_window": SlidingWindow,
            "shaper": LeakyBucketShaper,
        }
        kind = options.pop("kind", "token_bucket")
        if kind not in kinds:
            raise ValidationError(f"rate_limiter kind must be one of {sorted(kinds)}, got {kind!r}")
        return kinds[kind](
            **options, clock=self.clock, name=f"{self.name}.limiter", listener=self.listener
        )

    def _bulkhead(self, options: dict[str, Any]) -> Policy:
        adaptive = options.pop("adaptive", None)
        vegas = None
        if adaptive:
            settings = dict(adaptive) if isinstance(adaptive, Mapping) else {}
            vegas = VegasLimit(_make(VegasSettings, settings, "bulkhead.adaptive"))
        return Bulkhead(
            **options,
            adaptive=vegas,
            clock=self.clock,
            name=f"{self.name}.bulkhead",
            listener=self.listener,
        )

    def _hedge(self, options: dict[str, Any]) -> Policy:
        return Hedge(
            _make(HedgeSettings, options, "hedge"),
            budget=self.budget,
            clock=self.clock,
            name=f"{self.name}.hedge",
            listener=self.listener,
        )


def _make(kind: Callable[..., T], options: Mapping[str, Any], section: str) -> T:
    try:
        return kind(**options)
    except TypeError as exc:
        raise ValidationError(f"pipeline section {section!r}: {exc}") from exc
