"""Defaults of keel.http.Client: one frozen settings object, validated on creation."""

from __future__ import annotations

from dataclasses import dataclass, field

from keel.balance import OutlierSettings
from keel.errors import ValidationError
from keel.resilience import BreakerSettings, RetryBudgetSettings, RetrySettings

__all__ = ["IDEMPOTENT_METHODS", "ClientSettings"]

# RFC 9110 §9.2.2: methods whose repetition has the effect of one request.
IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"})


@dataclass(frozen=True, slots=True, kw_only=True)
class ClientSettings:
    """How :class:`~keel.http.Client` calls services by name.

    Attributes:
        timeout_s: budget of one call to a service, all attempts and backoff
            included (an enclosing deadline can only shorten it).
        connect_timeout_s: TCP connect timeout of one attempt.
        retry: attempts and backoff; idempotent methods are retried on transport
            errors and ``retry_statuses``, other methods only when the request
            was never sent (connect errors).
        budget: the retry budget shared by every call of the client.
        breaker: the circuit breaker kept per instance.
        outlier: ejection of instances that keep failing.
        retry_statuses: statuses that make an idempotent call try another instance.
        idempotent_methods: methods safe to retry after sending.
        max_connections: connection pool size (all instances together).
        max_keepalive: idle connections kept open.
        idempotency_keys: give each POST and PATCH without an ``Idempotency-Key``
            header a random one (the same across its attempts) and retry it like
            an idempotent method; the service must honour the header
            (``keel.idempotency.Middleware``). Off by default.
    """

    timeout_s: float = 10.0
    connect_timeout_s: float = 2.0
    retry: RetrySettings = field(
        default_factory=lambda: RetrySettings(max_attempts=3, base_delay_s=0.01, max_delay_s=0.5)
    )
    budget: RetryBudgetSettings = field(default_factory=RetryBudgetSettings)
    breaker: BreakerSettings = field(
        default_factory=lambda: BreakerSettings(
            window_size=20, minimum_calls=5, open_duration_s=5.0, half_open_max_calls=1
        )
    )
    outlier: OutlierSettings = field(
        default_factory=lambda: OutlierSettings(
            consecutive_failures=5, base_ejection_s=10.0, max_ejection_percent=50.0
        )
    )
    retry_statuses: frozenset[int] = frozenset({502, 503})
    idempotent_methods: frozenset[str] = IDEMPOTENT_METHODS
    max_connections: int = 200
    max_keepalive: int = 100
    idempotency_keys: bool = False

    def __post_init__(self) -> None:
        for name in ("timeout_s", "connect_timeout_s"):
            value = getattr(self, name)
            if not 0 < value < float("inf"):
                raise ValidationError(
                    f"{name} must be a finite number of seconds > 0, got {value!r}"
                )
        if self.max_connections < 1 or self.max_keepalive < 0:
            raise ValidationError("max_connections must be >= 1 and max_keepalive >= 0")
        if any(not 100 <= s <= 599 for s in self.retry_statuses):
            raise ValidationError(
                f"retry_statuses must be HTTP statuses, got {self.retry_statuses!r}"
            )
