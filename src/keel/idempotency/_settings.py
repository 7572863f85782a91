"""Settings of the Idempotency-Key middleware: one frozen object, validated on creation."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from keel.errors import ValidationError

__all__ = ["IdempotencySettings"]

_NAMESPACE_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


@dataclass(frozen=True, slots=True, kw_only=True)
class IdempotencySettings:
    """How :class:`~keel.idempotency.Middleware` treats keyed requests.

    Attributes:
        namespace: separates the keys of services sharing a store or Redis
            (records live under ``idempotency/<namespace>/``).
        methods: methods whose ``Idempotency-Key`` is honoured; others pass through.
        required: refuse (400) a request of ``methods`` without a key; by
            default such a request passes through unchanged.
        ttl_s: how long a completed response is kept for replay.
        lease_s: life of the in-progress marker, renewed every third of it while
            the request runs; after a crash the key is free again this late.
        max_body_bytes: largest response body stored. Above it the response
            still reaches the client, but only its status is kept: a retry
            gets 409 (it is never run twice).
        max_request_bytes: largest request body accepted with a key (it is
            read whole to fingerprint it); above it: 413.
        fingerprint_headers: request headers that are part of the fingerprint
            besides method, path, query and body.
        max_key_length: longest key accepted (400 above).
    """

    namespace: str = "default"
    methods: frozenset[str] = frozenset({"POST", "PATCH"})
    required: bool = False
    ttl_s: float = 24 * 3600.0
    lease_s: float = 60.0
    max_body_bytes: int = 1 << 20
    max_request_bytes: int = 10 << 20
    fingerprint_headers: tuple[str, ...] = ("content-type",)
    max_key_length: int = 255

    def __post_init__(self) -> None:
        if not isinstance(self.namespace, str) or not _NAMESPACE_RE.fullmatch(self.namespace):
            raise ValidationError(
                f"namespace {self.namespace!r} is not valid: use up to 64 letters, digits, "
                "'.', '_' or '-' (the service's name is a good choice)"
            )
        for name in ("ttl_s", "lease_s"):
            value = getattr(self, name)
            if isinstance(value, bool) or not (isinstance(value, int | float) and value > 0
                                               and math.isfinite(value)):  # fmt: skip
                raise ValidationError(
                    f"{name} must be a finite number of seconds > 0, got {value!r}"
                )
        for name in ("max_body_bytes", "max_request_bytes", "max_key_length"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValidationError(f"{name} must be an int >= 1, got {value!r}")
        if not self.methods or any(m != m.upper() for m in self.methods):
            raise ValidationError(f"methods must be upper-case HTTP methods, got {self.methods!r}")
