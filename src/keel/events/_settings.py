"""Settings of the bus and of subscriptions: frozen, keyword-only, checked up front."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from keel.errors import ValidationError
from keel.resilience import RetrySettings

__all__ = ["DEFAULT_RETRY", "Retention", "SubscribeSettings"]

DEFAULT_RETRY = RetrySettings(max_attempts=5, base_delay_s=0.1, max_delay_s=30.0)
"""Backoff between attempts of a failing event (its ``max_attempts`` is not used)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Retention:
    """How much of each partition to keep.

    Attributes:
        max_len: keep at most this many newest events per partition (None: no limit).
        max_age_s: delete events older than this (None: no limit).
        every_s: how often a partition's owner (and a publisher) trims.
    """

    max_len: int | None = 100_000
    max_age_s: float | None = 7 * 24 * 3600.0
    every_s: float = 30.0

    def __post_init__(self) -> None:
        if self.max_len is not None and self.max_len < 1:
            raise ValidationError(f"retention max_len must be >= 1 or None, got {self.max_len!r}")
        if self.max_age_s is not None and self.max_age_s <= 0:
            raise ValidationError(
                f"retention max_age_s must be > 0 or None, got {self.max_age_s!r}"
            )
        if self.every_s <= 0:
            raise ValidationError(f"retention every_s must be > 0, got {self.every_s!r}")


@dataclass(frozen=True, slots=True, kw_only=True)
class SubscribeSettings:
    """How a subscription consumes.

    Attributes:
        concurrency: events handed out and not yet acked, at most (events of
            one key are handed out one after another regardless).
        max_attempts: attempts of an event before it goes to ``<topic>.dead``.
        retry: the backoff between attempts (``keel.resilience`` formulas).
        start: where a *new* group starts: ``"new"`` (events published from
            now on) or ``"earliest"`` (every retained event).
        member_ttl_s: how long a silent member keeps its partitions; a
            crashed consumer's events resume after about this long.
        block_s: how long one read waits for new events.
        batch: events read per call.
        linger_s: after a read that found fewer than ``batch`` events, wait
            this long before the next read, so a steady trickle is read a few
            events per call rather than one (adds at most this much latency;
            0 reads again at once).
    """

    concurrency: int = 16
    max_attempts: int = 5
    retry: RetrySettings = field(default=DEFAULT_RETRY)
    start: Literal["new", "earliest"] = "new"
    member_ttl_s: float = 10.0
    block_s: float = 1.0
    batch: int = 100
    linger_s: float = 0.001

    def __post_init__(self) -> None:
        if not 1 <= self.concurrency <= 10_000:
            raise ValidationError(f"concurrency must be 1..10000, got {self.concurrency!r}")
        if not 1 <= self.max_attempts <= 1000:
            raise ValidationError(f"max_attempts must be 1..1000, got {self.max_attempts!r}")
        if self.start not in ("new", "earliest"):
            raise ValidationError(f"start must be 'new' or 'earliest', got {self.start!r}")
        if not 1.0 <= self.member_ttl_s <= 3600:
            raise ValidationError(f"member_ttl_s must be 1..3600 s, got {self.member_ttl_s!r}")
        if not 0 < self.block_s <= 60:
            raise ValidationError(f"block_s must be in (0, 60] s, got {self.block_s!r}")
        if not 1 <= self.batch <= 100:
            raise ValidationError(f"batch must be 1..100, got {self.batch!r}")
        if not 0 <= self.linger_s <= 1:
            raise ValidationError(f"linger_s must be 0..1 s, got {self.linger_s!r}")
