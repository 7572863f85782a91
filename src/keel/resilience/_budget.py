"""Retry budget: retries may add at most a fixed fraction of load.

The model is Finagle's ``RetryBudget`` (``percentCanRetry`` plus a
``minRetriesPerSec`` floor) expressed as two token buckets, the same shape as
gRPC's retry throttling (gRFC A6, ``maxTokens``/``tokenRatio``): every first
attempt deposits ``ratio`` tokens, every retry or hedge withdraws one. Under a
full outage the retries therefore stop at ``ratio`` of the traffic instead of
multiplying it by the attempt count. The floor bucket refills at
``min_retries_per_s`` so that a client with little traffic can still retry.
"""

from __future__ import annotations

from dataclasses import dataclass

from keel.clock import SYSTEM_CLOCK, Clock
from keel.errors import ValidationError

__all__ = ["BudgetStatistics", "NoRetryBudget", "RetryBudget", "RetryBudgetSettings"]


@dataclass(frozen=True, slots=True, kw_only=True)
class RetryBudgetSettings:
    """How much extra load retries may add.

    Attributes:
        ratio: retries allowed per first attempt (0.1 = at most 10% extra load).
        min_retries_per_s: retries always allowed per second, whatever the traffic.
        max_balance: cap on saved ratio tokens, so a long quiet spell can't fund a storm.
    """

    ratio: float = 0.1
    min_retries_per_s: float = 10.0
    max_balance: float = 100.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.ratio <= 1000.0:
            raise ValidationError(f"ratio must be between 0 and 1000, got {self.ratio!r}")
        if self.min_retries_per_s < 0:
            raise ValidationError(f"min_retries_per_s must be >= 0, got {self.min_retries_per_s!r}")
        if self.max_balance < 1:
            raise ValidationError(f"max_balance must be >= 1, got {self.max_balance!r}")


@dataclass(frozen=True, slots=True)
class BudgetStatistics:
    """Counters of a :class:`RetryBudget`."""

    deposits: int
    withdrawals: int
    rejections: int
    balance: float


class RetryBudget:
    """A retry budget shared by every call of one client (pure, synchronous).

    Args:
        settings: the limits; keyword arguments build one when omitted.
        clock: time source for the floor bucket.
    """

    __slots__ = (
        "_balance",
        "_clock",
        "_deposits",
        "_floor",
        "_floor_at",
        "_rejections",
        "_withdrawals",
        "settings",
    )

    def __init__(
        self, settings: RetryBudgetSettings | None = None, *, clock: Clock = SYSTEM_CLOCK
    ) -> None:
        self.settings = settings or RetryBudgetSettings()
        self._clock = clock
        self._balance = 0.0
        self._floor = self.settings.min_retries_per_s
        self._floor_at = clock.monotonic()
        self._deposits = self._withdrawals = self._rejections = 0

    def deposit(self) -> None:
        """Record one first attempt: earns ``ratio`` retry tokens."""
        self._deposits += 1
        balance = self._balance + self.settings.ratio
        self._balance = (
            balance if balance < self.settings.max_balance else self.settings.max_balance
        )

    def try_withdraw(self) -> bool:
        """Spend one token for a retry or hedge.

        Returns:
            ``True`` if the retry may go ahead; ``False`` when the budget is spent.
        """
        now = self._clock.monotonic()
        rate = self.settings.min_retries_per_s
        self._floor = min(rate, self._floor + (now - self._floor_at) * rate)
        self._floor_at = now
        if self._floor >= 1.0:
            self._floor -= 1.0
        elif self._balance >= 1.0:
            self._balance -= 1.0
        else:
            self._rejections += 1
            return False
        self._withdrawals += 1
        return True

    def statistics(self) -> BudgetStatistics:
        """Deposits, withdrawals, rejections and the current ratio balance."""
        return BudgetStatistics(self._deposits, self._withdrawals, self._rejections, self._balance)

    def __repr__(self) -> str:
        return (
            f"RetryBudget(ratio={self.settings.ratio:g}, balance={self._balance:.2f}, "
            f"floor={self._floor:.2f}, rejections={self._rejections})"
        )


class NoRetryBudget:
    """The no-op twin: every retry is allowed."""

    __slots__ = ()

    def deposit(self) -> None:
        """Do nothing."""

    def try_withdraw(self) -> bool:
        """Always allow."""
        return True

    def statistics(self) -> BudgetStatistics:
        """Always empty."""
        return BudgetStatistics(0, 0, 0, 0.0)

    def __repr__(self) -> str:
        return "NoRetryBudget()"
