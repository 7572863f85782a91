"""Defaults of keel.grpc.Channel: one frozen settings object, validated on creation."""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

import grpc

from keel.balance import OutlierSettings
from keel.errors import ValidationError
from keel.registry import Discovery
from keel.resilience import BreakerSettings, RetryBudgetSettings, RetrySettings
from keel.store import Store

__all__ = ["ChannelSettings", "check_arguments"]

# "/package.Service/Method", as generated stubs name methods.
_METHOD_RE = re.compile(r"/[A-Za-z_][\w.]*/[A-Za-z_]\w*")

# A discovery-fed client learns from the registry whether an instance is
# gone; grpc's default reconnect backoff (up to 120 s) would keep a returned
# instance idle for minutes.
_DEFAULT_OPTIONS: tuple[tuple[str, int | str], ...] = (
    ("grpc.initial_reconnect_backoff_ms", 200),
    ("grpc.min_reconnect_backoff_ms", 200),
    ("grpc.max_reconnect_backoff_ms", 2000),
)


@dataclass(frozen=True, slots=True, kw_only=True)
class ChannelSettings:
    """How :class:`~keel.grpc.Channel` calls a service by name.

    Attributes:
        timeout_s: deadline of a unary call when neither the caller's
            ``timeout=`` nor an enclosing keel deadline is shorter (all attempts
            and backoff included). ``None``: no default deadline.
        stream_timeout_s: the same for streaming calls (``None`` by default:
            streams often live long).
        retry: attempts and backoff of unary calls. A call is retried on another
            instance only when the request never left (UNAVAILABLE while
            connecting), or after any UNAVAILABLE for ``idempotent_methods``.
        budget: the retry budget shared by every call of the channel.
        breaker: the circuit breaker kept per instance.
        outlier: ejection of instances that keep failing.
        idempotent_methods: full method names (``/pkg.Service/Method``) safe to
            send twice; a call can also say so with ``idempotent=True`` (see
            :class:`~keel.grpc.Channel`).
        close_grace_s: how long a sub-channel of an instance that left
            discovery keeps serving the calls already on it before they are
            cancelled.
        credentials: TLS credentials for instances registered with scheme
            ``grpcs`` (``grpc.ssl_channel_credentials(...)``); without them such
            instances are skipped.
        options: grpc channel arguments of every sub-channel (the defaults
            shorten grpc's reconnect backoff; yours are added after them).
    """

    timeout_s: float | None = 10.0
    stream_timeout_s: float | None = None
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
    idempotent_methods: frozenset[str] = frozenset()
    close_grace_s: float = 30.0
    credentials: grpc.ChannelCredentials | None = None
    options: Sequence[tuple[str, int | str]] = ()

    def __post_init__(self) -> None:
        for name in ("timeout_s", "stream_timeout_s"):
            value = getattr(self, name)
            if value is not None and not (
                isinstance(value, int | float) and value > 0 and math.isfinite(value)
            ):
                raise ValidationError(
                    f"{name} must be None or a finite number of seconds > 0, got {value!r}"
                )
        if not (isinstance(self.close_grace_s, int | float) and 0 <= self.close_grace_s < 3600):
            raise ValidationError(
                f"close_grace_s must be seconds from 0 to 3600, got {self.close_grace_s!r}"
            )
        for name, kind in (
            ("retry", RetrySettings),
            ("budget", RetryBudgetSettings),
            ("breaker", BreakerSettings),
            ("outlier", OutlierSettings),
        ):
            if not isinstance(getattr(self, name), kind):
                raise ValidationError(f"{name}= takes a {kind.__name__}(...)")
        if isinstance(self.idempotent_methods, str):
            raise ValidationError("idempotent_methods takes a set of method names, not one string")
        object.__setattr__(self, "idempotent_methods", frozenset(self.idempotent_methods))
        bad = sorted(m for m in self.idempotent_methods if not _METHOD_RE.fullmatch(str(m)))
        if bad:
            raise ValidationError(
                f"idempotent_methods {bad!r}: name full methods as '/package.Service/Method'"
            )
        if self.credentials is not None and not isinstance(
            self.credentials, grpc.ChannelCredentials
        ):
            raise ValidationError(
                "credentials must be grpc.ChannelCredentials (grpc.ssl_channel_credentials())"
            )
        object.__setattr__(self, "options", tuple(self.options))
        if not all(
            isinstance(o, tuple) and len(o) == 2 and isinstance(o[0], str) for o in self.options
        ):
            raise ValidationError("options must be (name, value) pairs of grpc channel arguments")

    def channel_options(self) -> tuple[tuple[str, int | str], ...]:
        """The grpc channel arguments of a sub-channel: keel's defaults, then yours."""
        return _DEFAULT_OPTIONS + tuple(self.options)


def check_arguments(source: object, settings: object, balancer: object, hash_key: object) -> None:
    """Refuse arguments of the wrong kind with one error naming the fix."""
    if isinstance(source, str):
        raise ValidationError(
            f"Channel({source!r}, ...): pass an open store (async with keel.connect(url) "
            f"as store) or a Discovery, not a URL"
        )
    if source is not None and not isinstance(source, Store | Discovery):
        raise ValidationError(
            f"Channel's first argument is a {type(source).__name__}: pass a store, "
            f"a Discovery, or None with target_override='host:port'"
        )
    if settings is not None and not isinstance(settings, ChannelSettings):
        raise ValidationError("settings= takes a keel.grpc.ChannelSettings(...)")
    if balancer is not None and not callable(balancer):
        raise ValidationError("balancer= takes a balancer class or factory, e.g. RoundRobin")
    if hash_key is not None and (
        not isinstance(hash_key, str) or not hash_key or hash_key != hash_key.lower()
    ):
        raise ValidationError(f"hash_key {hash_key!r}: give a lower-case metadata key")
