"""The no-op twin of every policy: same surface, admits everything, costs one await.

Use them to switch a policy off without changing the code around it (a
pipeline loaded from config with the policy disabled), and in tests.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from typing import ParamSpec, TypeVar

__all__ = [
    "NoBulkhead",
    "NoCircuitBreaker",
    "NoFallback",
    "NoHedge",
    "NoRateLimiter",
    "NoRetry",
    "NoTicket",
    "NoTimeout",
]

P = ParamSpec("P")
T = TypeVar("T")


class _Passthrough:
    __slots__ = ()

    async def run(self, fn: Callable[P, Awaitable[T]], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """Await ``fn(*args, **kwargs)`` unchanged."""
        return await fn(*args, **kwargs)

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class NoTimeout(_Passthrough):
    """Twin of :class:`~keel.resilience.Timeout`: no budget."""

    __slots__ = ()


class NoRetry(_Passthrough):
    """Twin of :class:`~keel.resilience.Retry`: one attempt, errors pass through."""

    __slots__ = ()


class NoFallback(_Passthrough):
    """Twin of :class:`~keel.resilience.Fallback`: errors pass through."""

    __slots__ = ()


class NoHedge(_Passthrough):
    """Twin of :class:`~keel.resilience.Hedge`: one attempt, never a second."""

    __slots__ = ()


class NoTicket:
    """The ticket of :class:`NoCircuitBreaker`: outcomes are ignored."""

    __slots__ = ()

    def succeeded(self) -> None:
        """Ignore."""

    def failed(self) -> None:
        """Ignore."""

    def cancelled(self) -> None:
        """Ignore."""


class NoCircuitBreaker(_Passthrough):
    """Twin of :class:`~keel.resilience.CircuitBreaker`: always closed."""

    __slots__ = ()

    def allow(self) -> NoTicket:
        """Always admit."""
        return NoTicket()

    async def call(self, fn: Callable[P, Awaitable[T]], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """Await ``fn`` unchanged."""
        return await fn(*args, **kwargs)


class NoRateLimiter(_Passthrough):
    """Twin of the rate limiters: every permit is free."""

    __slots__ = ()

    def try_acquire(self, n: int = 1) -> bool:
        """Always admit."""
        return True

    def retry_after(self, n: int = 1) -> float:
        """Never a wait."""
        return 0.0

    async def acquire(self, n: int = 1, timeout_s: float | None = None) -> None:
        """Return at once."""


class NoBulkhead(_Passthrough):
    """Twin of :class:`~keel.resilience.Bulkhead`: no concurrency limit."""

    __slots__ = ()
    limit = math.inf

    def try_acquire(self) -> bool:
        """Always admit."""
        return True

    async def acquire(self, timeout_s: float | None = None) -> None:
        """Return at once."""

    def release(self) -> None:
        """Nothing to release."""
