"""Retry with exponential backoff, jitter, a retry budget and deadline awareness.

We write our own instead of wrapping tenacity for three reasons:

- budget and deadline: a retry must spend a shared :class:`RetryBudget` token
  and must not sleep past the caller's deadline (:func:`remaining`); tenacity's
  stop/wait strategies see neither without per-call closures;
- ``Retry-After``: a :class:`~keel.errors.RateLimitedError` names the earliest
  useful retry, which becomes a floor on the next delay;
- speed: tenacity's ``AsyncRetrying`` builds a ``RetryCallState`` and walks its
  action chain even when the first attempt succeeds (about 23 us here); the
  success path below is one ``await`` inside a ``try``.

Backoff formulas are those of the AWS Architecture Blog, "Exponential Backoff
And Jitter" (Marc Brooker, 2015): with ``cap`` the max delay, ``base`` the
first delay and ``n`` the retry number (0 for the first retry),

- none:          ``min(cap, base * multiplier**n)``
- full:          ``uniform(0, min(cap, base * multiplier**n))``
- equal:         ``v/2 + uniform(0, v/2)`` with ``v`` the value above
- decorrelated:  ``min(cap, uniform(base, previous * 3))``
"""

from __future__ import annotations

import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Literal, ParamSpec, TypeVar

from keel.clock import SYSTEM_CLOCK, Clock, SystemClock
from keel.errors import CircuitOpenError, RetryableError, ValidationError
from keel.observe.metrics import ResilienceListener, policy_listener
from keel.resilience._budget import NoRetryBudget, RetryBudget
from keel.resilience._deadline import remaining

__all__ = [
    "Jitter",
    "Retry",
    "RetrySettings",
    "RetryStatistics",
    "backoff_delay",
    "default_retry_on",
]

P = ParamSpec("P")
T = TypeVar("T")
Jitter = Literal["none", "full", "equal", "decorrelated"]
_JITTERS = ("none", "full", "equal", "decorrelated")


def default_retry_on(exc: BaseException) -> bool:
    """Retry keel's transient errors and the usual transient builtins.

    ``RetryableError`` (except ``CircuitOpenError``: the breaker stays open for
    its whole open duration, so retrying into it only burns the budget),
    ``ConnectionError`` and ``TimeoutError``.
    """
    if isinstance(exc, CircuitOpenError):
        return False
    return isinstance(exc, RetryableError | ConnectionError | TimeoutError)


@dataclass(frozen=True, slots=True, kw_only=True)
class RetrySettings:
    """How often and how patiently to retry.

    Attributes:
        max_attempts: total attempts including the first (1 = never retry).
        base_delay_s: the first backoff delay.
        max_delay_s: cap on any single delay.
        multiplier: growth factor per retry.
        jitter: ``none``, ``full``, ``equal`` or ``decorrelated``.
        max_elapsed_s: give up when the next sleep would end later than this
            after the first attempt started (``None``: no limit).
    """

    max_attempts: int = 3
    base_delay_s: float = 0.05
    max_delay_s: float = 2.0
    multiplier: float = 2.0
    jitter: Jitter = "full"
    max_elapsed_s: float | None = None

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValidationError(f"max_attempts must be >= 1, got {self.max_attempts!r}")
        if not 0 <= self.base_delay_s <= self.max_delay_s:
            raise ValidationError(
                "need 0 <= base_delay_s <= max_delay_s, got "
                f"{self.base_delay_s!r} and {self.max_delay_s!r}"
            )
        if self.multiplier < 1:
            raise ValidationError(f"multiplier must be >= 1, got {self.multiplier!r}")
        if self.jitter not in _JITTERS:
            raise ValidationError(f"jitter must be one of {_JITTERS}, got {self.jitter!r}")
        if self.max_elapsed_s is not None and self.max_elapsed_s <= 0:
            raise ValidationError(f"max_elapsed_s must be > 0, got {self.max_elapsed_s!r}")


def backoff_delay(
    settings: RetrySettings, retry: int, previous_s: float, rng: random.Random
) -> float:
    """The delay before retry number ``retry`` (0-based), per the formulas above.

    Args:
        settings: base, cap, multiplier and jitter kind.
        retry: 0 for the delay before the second attempt.
        previous_s: the previous delay (decorrelated jitter only; pass base first).
        rng: the random source.

    Returns:
        seconds to wait, within ``[0, max_delay_s]``.
    """
    base, cap = settings.base_delay_s, settings.max_delay_s
    if settings.jitter == "decorrelated":
        return min(cap, rng.uniform(base, max(base, previous_s) * 3.0))
    exp = min(cap, base * settings.multiplier ** min(retry, 1024))
    if settings.jitter == "full":
        return rng.uniform(0.0, exp)
    if settings.jitter == "equal":
        return exp / 2.0 + rng.uniform(0.0, exp / 2.0)
    return exp


@dataclass(frozen=True, slots=True)
class RetryStatistics:
    """Counters of a :class:`Retry`."""

    calls: int
    retries: int
    gave_up: int
    budget_rejections: int


class Retry:
    """The retry policy.

    Args:
        settings: attempts and backoff (defaults: 3 attempts, full jitter).
        retry_on: which exceptions to retry (default :func:`default_retry_on`).
        budget: a :class:`RetryBudget` shared by the client's calls (default: none).
        clock: time and sleep.
        rng: random source for jitter (seeded in tests).
        name: label for metrics and ``repr``.
        listener: metrics hook.
    """

    __slots__ = (
        "_budget",
        "_calls",
        "_clock",
        "_deposit",
        "_gave_up",
        "_listener",
        "_now",
        "_retries",
        "_rng",
        "name",
        "retry_on",
        "settings",
    )

    def __init__(
        self,
        settings: RetrySettings | None = None,
        *,
        retry_on: Callable[[BaseException], bool] = default_retry_on,
        budget: RetryBudget | NoRetryBudget | None = None,
        clock: Clock = SYSTEM_CLOCK,
        rng: random.Random | None = None,
        name: str = "retry",
        listener: ResilienceListener | None = None,
    ) -> None:
        self.settings = settings or RetrySettings()
        self.retry_on = retry_on
        self._budget = budget if budget is not None else NoRetryBudget()
        self._deposit = None if budget is None else budget.deposit
        self._clock = clock
        self._now = time.monotonic if isinstance(clock, SystemClock) else clock.monotonic
        self._rng = rng or random.Random()
        self.name = name
        self._listener = policy_listener(listener)
        self._calls = self._retries = self._gave_up = 0

    @property
    def budget(self) -> RetryBudget | NoRetryBudget:
        """The retry budget this policy spends."""
        return self._budget

    def next_delay(
        self, attempts: int, exc: BaseException, elapsed_s: float, previous_s: float
    ) -> float | None:
        """Decide whether to retry after a failure (pure apart from the rng).

        Args:
            attempts: attempts made so far (>= 1).
            exc: what the last attempt raised.
            elapsed_s: seconds since the first attempt started.
            previous_s: the previous delay (the base before the first retry).

        Returns:
            the delay before the next attempt, or ``None`` to give up.
        """
        s = self.settings
        if attempts >= s.max_attempts or not self.retry_on(exc):
            return None
        delay = backoff_delay(s, attempts - 1, previous_s, self._rng)
        retry_after = getattr(exc, "retry_after_s", None)
        if isinstance(retry_after, int | float) and retry_after > delay:
            delay = float(retry_after)
        if s.max_elapsed_s is not None and elapsed_s + delay > s.max_elapsed_s:
            return None
        if delay >= remaining():
            return None  # the caller's deadline would pass while we sleep
        return delay

    async def run(self, fn: Callable[P, Awaitable[T]], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """Await ``fn(*args, **kwargs)``, retrying transient failures.

        Raises:
            Exception: the last attempt's exception when retries are exhausted,
                not allowed by ``retry_on``, the budget, or the deadline.
        """
        self._calls += 1
        if self._deposit is not None:
            self._deposit()
        now = self._now
        start = now()
        try:
            return await fn(*args, **kwargs)
        except Exception as exc:
            error: Exception = exc
        attempts, delay = 1, self.settings.base_delay_s
        while True:
            next_delay = self.next_delay(attempts, error, now() - start, delay)
            refused = next_delay is not None and not self._budget.try_withdraw()
            if next_delay is None or refused:
                self._gave_up += 1
                if self._listener is not None:
                    reason = "budget" if refused else "gave_up"
                    self._listener.on_rejected("retry", self.name, reason)
                raise error
            delay = next_delay
            await self._clock.sleep(delay)
            attempts += 1
            self._retries += 1
            if self._listener is not None:
                self._listener.on_call("retry", self.name, "retried")
            try:
                return await fn(*args, **kwargs)
            except Exception as exc:
                error = exc

    def statistics(self) -> RetryStatistics:
        """Calls, retries, calls given up, and budget rejections."""
        return RetryStatistics(
            self._calls, self._retries, self._gave_up, self._budget.statistics().rejections
        )

    def __repr__(self) -> str:
        s = self.settings
        return (
            f"Retry(name={self.name!r}, max_attempts={s.max_attempts}, jitter={s.jitter!r}, "
            f"calls={self._calls}, retries={self._retries}, budget={self._budget!r})"
        )
