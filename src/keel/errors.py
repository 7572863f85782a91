"""The one exception tree of keel.

Every error keel raises derives from :class:`KeelError`. Errors that a caller
may retry (the store was briefly unreachable, a lease ran out under a pause)
also derive from :class:`RetryableError`. Where a builtin already carries the
meaning, the keel error subclasses it too, so ``except LookupError`` and
``except ValueError`` keep working.

Messages never carry a secret: a URL is quoted as ``user:***@host``.

Lower-layer exceptions (``sqlite3.OperationalError``, ``grpc.aio.AioRpcError``,
``redis.ConnectionError``) never escape: backends translate them with
``raise ... from exc``.

::

    KeelError
    ├── RetryableError
    │   ├── StoreUnavailableError
    │   ├── DeadlineExceededError      (also TimeoutError)
    │   ├── CircuitOpenError
    │   ├── RateLimitedError
    │   └── BulkheadFullError
    ├── CompactedError
    ├── LeaseError
    │   ├── LeaseNotFoundError         (also LookupError)
    │   └── LeaseExpiredError
    ├── SessionLostError
    ├── LockLostError
    ├── NotLeaderError
    ├── ConflictError
    ├── NotFoundError                  (also LookupError)
    │   ├── NoInstanceError
    │   └── StoreNotFoundError
    ├── ValidationError                (also ValueError)
    │   ├── InvalidKeyError
    │   ├── ValueTooLargeError
    │   └── InvalidURLError
    ├── AuthError                      (also PermissionError)
    └── StoreClosedError

The short names of ARCHITECTURE.md (``Compacted``, ``StoreUnavailable``...)
are aliases of these classes.
"""

from __future__ import annotations

__all__ = [
    "AuthError",
    "BulkheadFullError",
    "CircuitOpenError",
    "Compacted",
    "CompactedError",
    "ConflictError",
    "DeadlineExceeded",
    "DeadlineExceededError",
    "InvalidKeyError",
    "InvalidURLError",
    "KeelError",
    "LeaseError",
    "LeaseExpired",
    "LeaseExpiredError",
    "LeaseNotFoundError",
    "LockLost",
    "LockLostError",
    "NoInstanceError",
    "NotFoundError",
    "NotLeader",
    "NotLeaderError",
    "RateLimitedError",
    "RetryableError",
    "SessionLostError",
    "StoreClosedError",
    "StoreNotFoundError",
    "StoreUnavailable",
    "StoreUnavailableError",
    "ValidationError",
    "ValueTooLargeError",
]


class KeelError(Exception):
    """Root of every error keel raises."""


class RetryableError(KeelError):
    """A transient failure: the same call may succeed if tried again later."""


class StoreUnavailableError(RetryableError):
    """The store could not be reached or did not answer in time."""


class DeadlineExceededError(RetryableError, TimeoutError):
    """The call's deadline passed before it finished."""


class CircuitOpenError(RetryableError):
    """A circuit breaker is open and rejected the call without trying it."""


class RateLimitedError(RetryableError):
    """A rate limiter refused the call.

    Attributes:
        retry_after_s: seconds after which a retry may be admitted, if known.
    """

    def __init__(self, message: str, *, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class BulkheadFullError(RetryableError):
    """A bulkhead had no free slot and its wait queue was full or timed out."""


class CompactedError(KeelError):
    """A revision below the store's compaction point was asked for.

    Attributes:
        compact_revision: the oldest revision still readable; re-list and resume
            the watch from the list's revision.
    """

    def __init__(self, compact_revision: int, message: str | None = None) -> None:
        super().__init__(
            message
            or f"revision is compacted: the oldest revision still available is "
            f"{compact_revision}; list again and watch from the list's revision"
        )
        self.compact_revision = compact_revision


class LeaseError(KeelError):
    """A lease operation failed."""


class LeaseNotFoundError(LeaseError, LookupError):
    """The lease does not exist (never granted, revoked, or expired)."""


class LeaseExpiredError(LeaseError):
    """The lease expired before it could be kept alive."""


class SessionLostError(KeelError):
    """The session's lease was lost; what it owned has been released."""


class LockLostError(KeelError):
    """A lock held by this process was lost (its session's lease ended)."""


class NotLeaderError(KeelError):
    """An operation that needs leadership ran without it, or after losing it."""


class ConflictError(KeelError):
    """A compare-and-swap failed: someone else changed the thing first."""


class NotFoundError(KeelError, LookupError):
    """The named thing does not exist."""


class NoInstanceError(NotFoundError):
    """A balancer was asked to pick from an empty list of instances."""


class StoreNotFoundError(NotFoundError):
    """The store a URL names does not exist, and the caller asked not to create it.

    Raised by ``keel.connect(url, create=False)`` for a SQLite file that is not
    there (read-only commands use it, so a typo in a path is not a new store).
    """


class ValidationError(KeelError, ValueError):
    """Bad input: the message names the problem and the fix; nothing changed."""


class InvalidKeyError(ValidationError):
    """A key is empty, absolute, or otherwise outside the store's root."""


class ValueTooLargeError(ValidationError):
    """A value is larger than the store's configured limit."""


class InvalidURLError(ValidationError):
    """A store URL is malformed or names an unknown backend."""


class AuthError(KeelError, PermissionError):
    """The store refused the credentials or certificate."""


class StoreClosedError(KeelError):
    """The store connection was closed and cannot be used any more."""


# Short names used in ARCHITECTURE.md.
Compacted = CompactedError
StoreUnavailable = StoreUnavailableError
LeaseExpired = LeaseExpiredError
LockLost = LockLostError
NotLeader = NotLeaderError
DeadlineExceeded = DeadlineExceededError
