"""Adaptive circuit breaker: Google SRE client-side throttling.

From "Site Reliability Engineering" (Beyer et al., 2016), chapter 21
"Handling Overload", section "Client-side throttling": over a rolling window a
client counts ``requests`` (attempted by the application) and ``accepts``
(answered by the backend); it rejects locally with probability

    p = max(0, (requests - K * accepts) / (requests + 1))

``K`` (the multiplier) trades load on the backend for quickness: 2 lets the
backend see up to twice the requests it accepts; go-zero's ``googlebreaker``
uses 1.5 and we do too. As go-zero does, a ``protection`` of a few requests is
subtracted so a handful of failures on a quiet client never throttles.
Locally rejected requests still count as requests, as in the book.
"""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import ParamSpec, TypeVar

from keel.clock import SYSTEM_CLOCK, Clock
from keel.errors import CircuitOpenError, ValidationError
from keel.observe.metrics import ResilienceListener, policy_listener

__all__ = [
    "AdaptiveBreaker",
    "AdaptiveBreakerSettings",
    "AdaptiveStatistics",
    "AdaptiveTicket",
    "drop_probability",
]

P = ParamSpec("P")
T = TypeVar("T")


def drop_probability(requests: int, accepts: int, k: float, protection: int = 0) -> float:
    """The SRE client-side throttling probability.

    Args:
        requests: requests attempted in the window.
        accepts: requests the backend accepted in the window.
        k: the multiplier ``K`` (> 1 to allow some overshoot).
        protection: requests subtracted first (go-zero's ``protection``).

    Returns:
        the probability in ``[0, 1)`` of rejecting the next request locally.
    """
    return max(0.0, (requests - protection - k * accepts) / (requests + 1))


@dataclass(frozen=True, slots=True, kw_only=True)
class AdaptiveBreakerSettings:
    """Tuning of the SRE throttle.

    Attributes:
        k: accepts multiplier ``K``.
        window_s: the rolling window.
        buckets: how many buckets the window is cut into.
        protection: requests that never count toward throttling.
    """

    k: float = 1.5
    window_s: float = 10.0
    buckets: int = 40
    protection: int = 5

    def __post_init__(self) -> None:
        if not self.k >= 1:
            raise ValidationError(f"k must be >= 1, got {self.k!r}")
        if not self.window_s > 0:
            raise ValidationError(f"window_s must be > 0, got {self.window_s!r}")
        if self.buckets < 1:
            raise ValidationError(f"buckets must be >= 1, got {self.buckets!r}")
        if self.protection < 0:
            raise ValidationError(f"protection must be >= 0, got {self.protection!r}")


@dataclass(frozen=True, slots=True)
class AdaptiveStatistics:
    """A snapshot of an :class:`AdaptiveBreaker`."""

    requests: int
    accepts: int
    drop_probability: float
    rejected: int


class AdaptiveTicket:
    """One admitted call of an :class:`AdaptiveBreaker`."""

    __slots__ = ("_breaker", "_done")

    def __init__(self, breaker: AdaptiveBreaker) -> None:
        self._breaker = breaker
        self._done = False

    def succeeded(self) -> None:
        """The backend accepted the request."""
        if not self._done:
            self._done = True
            self._breaker._add(1, 1)

    def failed(self) -> None:
        """The backend refused or failed the request."""
        if not self._done:
            self._done = True
            self._breaker._add(1, 0)

    def cancelled(self) -> None:
        """Abandoned: record nothing."""
        self._done = True


class AdaptiveBreaker:
    """A breaker without states: it sheds a share of the load the backend refuses.

    Args:
        settings: ``K``, window and protection.
        name: label for metrics and ``repr``.
        clock: time source.
        rng: random source (seeded in tests).
        listener: metrics hook.
    """

    def __init__(
        self,
        settings: AdaptiveBreakerSettings | None = None,
        *,
        name: str = "adaptive",
        clock: Clock = SYSTEM_CLOCK,
        rng: random.Random | None = None,
        listener: ResilienceListener | None = None,
    ) -> None:
        self.settings = s = settings or AdaptiveBreakerSettings()
        self.name = name
        self._clock = clock
        self._random = (rng or random.Random()).random
        self._listener = policy_listener(listener)
        self._width = s.window_s / s.buckets
        self._req = [0] * s.buckets
        self._acc = [0] * s.buckets
        self._last = int(clock.monotonic() / self._width)
        self.requests = self.accepts = 0
        self._rejected = 0

    def _roll(self) -> int:
        index = int(self._clock.monotonic() / self._width)
        last, n = self._last, self.settings.buckets
        if index > last:
            for i in range(last + 1, min(index, last + n) + 1):
                b = i % n
                self.requests -= self._req[b]
                self.accepts -= self._acc[b]
                self._req[b] = self._acc[b] = 0
            self._last = index
        return index % n

    def _add(self, requests: int, accepts: int) -> None:
        b = self._roll()
        self._req[b] += requests
        self._acc[b] += accepts
        self.requests += requests
        self.accepts += accepts

    def drop_probability(self) -> float:
        """The current probability of rejecting a request."""
        self._roll()
        s = self.settings
        return drop_probability(self.requests, self.accepts, s.k, s.protection)

    def allow(self) -> AdaptiveTicket:
        """Admit one call, or shed it.

        Returns:
            a ticket to report the outcome on.

        Raises:
            CircuitOpenError: the request was shed locally.
        """
        p = self.drop_probability()
        if p > 0 and self._random() < p:
            self._add(1, 0)
            self._rejected += 1
            if self._listener is not None:
                self._listener.on_rejected("adaptive_breaker", self.name, "throttled")
            raise CircuitOpenError(
                f"adaptive breaker {self.name!r} shed the call (drop probability {p:.2f})"
            )
        return AdaptiveTicket(self)

    async def run(self, fn: Callable[P, Awaitable[T]], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """Await ``fn(*args, **kwargs)`` unless shed; every exception is a failure.

        Raises:
            CircuitOpenError: the request was shed locally.
        """
        ticket = self.allow()
        try:
            result = await fn(*args, **kwargs)
        except Exception:
            ticket.failed()
            raise
        ticket.succeeded()
        return result

    call = run

    def statistics(self) -> AdaptiveStatistics:
        """Window counts, current drop probability and rejections."""
        p = self.drop_probability()
        return AdaptiveStatistics(self.requests, self.accepts, p, self._rejected)

    def __repr__(self) -> str:
        return (
            f"AdaptiveBreaker(name={self.name!r}, k={self.settings.k:g}, "
            f"requests={self.requests}, accepts={self.accepts}, rejected={self._rejected})"
        )
