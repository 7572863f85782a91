"""The store contract: the abstract :class:`Store` (its :class:`Watch` is in ``_watch``).

The MUST rules every backend follows are written here once, on the public
methods. Public methods check their input (so bad input is refused the same
way on every backend, before anything is written) and then call the
backend's ``_do_*`` hook.
"""

from __future__ import annotations

import abc
from collections.abc import Awaitable, Sequence
from time import perf_counter
from types import TracebackType
from typing import Final, Self, TypeVar

from keel.errors import StoreClosedError, ValidationError, ValueTooLargeError
from keel.observe._store_metrics import OpSeries, store_metrics
from keel.observe.spans import GATE, end_span, store_span, tracing_on
from keel.store._checks import check_key, check_root
from keel.store._types import (
    Compare,
    Delete,
    Get,
    KeyValue,
    Lease,
    LeaseInfo,
    Op,
    Put,
    Range,
    StoreStatus,
    TxnResult,
)
from keel.store._watch import Watch

__all__ = ["DEFAULT_MAX_VALUE_BYTES", "DEFAULT_ROOT", "MAX_LEASE_TTL", "Store", "Watch"]

DEFAULT_ROOT: Final = "/keel/"
DEFAULT_MAX_VALUE_BYTES: Final = 1024 * 1024
MAX_LEASE_TTL: Final = 9_000_000_000  # etcd's MaxLeaseTTL
MAX_TXN_OPS: Final = 128  # etcd's default --max-txn-ops

T = TypeVar("T")


def _timed(series: OpSeries, call: Awaitable[T], store: str, op: str) -> Awaitable[T]:
    """Count and time one call of a rare operation (leases, compaction, status)."""
    series.calls += 1
    return _observed(series, call, store, op, None)


async def _observed(
    series: OpSeries, call: Awaitable[T], store: str, op: str, key: str | None
) -> T:
    """Await a backend call, counting it in ``series`` (and tracing it when tracing is on).

    Whether an SDK was installed since is asked again every 64 calls of an
    operation (asking costs more than the rest of the bookkeeping).
    """
    traced = GATE.on or (not series.calls & 63 and tracing_on())
    span = store_span(store, op, key) if traced else None
    started = perf_counter()
    try:
        result = await call
    except BaseException as exc:
        series.failed(exc, perf_counter() - started)
        end_span(span, exc)
        raise
    series.observe(perf_counter() - started)
    if span is not None:
        span.end()
    return result


class Store(abc.ABC):
    """A key-value store with revisions, leases, transactions and watches (etcd v3's model).

    Keys are ``str`` relative to the connection's root prefix; values are
    ``bytes``. Every write advances one global revision. Implementations:
    ``keel.backends.memory``, ``keel.backends.sqlite``, ``keel.backends.etcd``;
    obtain one with :func:`keel.connect`.
    """

    backend: str = "abstract"

    def __init__(self, *, root: str = DEFAULT_ROOT, max_value_bytes: int = DEFAULT_MAX_VALUE_BYTES):
        self.root = check_root(root)
        if max_value_bytes < 1:
            raise ValidationError("max_value_bytes must be at least 1")
        self.max_value_bytes = max_value_bytes
        self._closed = False
        self._series = store_metrics().series(self.backend)
        self._ops = ops = None if self._series is None else self._series.ops
        # the five frequent operations' series as attributes: one load on the hot path
        self._s_put = self._s_get = self._s_range = self._s_delete = self._s_txn = None
        if ops is not None:
            self._s_put, self._s_get = ops["put"], ops["get"]
            self._s_range, self._s_delete, self._s_txn = ops["range"], ops["delete"], ops["txn"]

    # -- input checks -------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise StoreClosedError(f"{self.backend} store is closed: connect again")

    def _check_value(self, key: str, value: object) -> bytes:
        if not isinstance(value, bytes | bytearray | memoryview):
            raise ValidationError(
                f"value for {key!r} must be bytes, not {type(value).__name__}: encode it first"
            )
        data = bytes(value)
        if len(data) > self.max_value_bytes:
            raise ValueTooLargeError(
                f"value for {key!r} is {len(data)} bytes, over the limit of "
                f"{self.max_value_bytes} bytes: store it elsewhere and keep a reference, "
                f"or raise max_value_bytes"
            )
        return data

    @staticmethod
    def _check_lease(lease: object) -> int:
        if lease is None:
            return 0
        if not isinstance(lease, int) or isinstance(lease, bool) or not 0 <= lease < 1 << 63:
            # etcd lease ids are int64; a larger one overflowed SQLite's INTEGER
            raise ValidationError(
                f"lease must be a lease id (an int from 0 to 2**63-1), not {lease!r}: "
                f"use the id 'keel store lease grant' printed"
            )
        return lease

    def _check_op(self, op: Op) -> Op:
        if isinstance(op, Put):
            check_key(op.key)
            return Put(op.key, self._check_value(op.key, op.value), self._check_lease(op.lease))
        if isinstance(op, Get):
            check_key(op.key)
            return op
        if isinstance(op, Range):
            check_key(op.key, allow_empty=op.prefix)
            if op.limit is not None and op.limit < 0:
                raise ValidationError("range limit must be >= 0 (0 or None: no limit)")
            return op
        if isinstance(op, Delete):
            check_key(op.key, allow_empty=op.prefix)
            return op
        raise ValidationError(f"unknown transaction op {op!r}: use Put, Get, Range or Delete")

    # -- the contract -------------------------------------------------------

    async def put(self, key: str, value: bytes, *, lease: int | None = None) -> int:
        """Set ``key`` to ``value``; return the new revision.

        Raises:
            LeaseNotFoundError: ``lease`` does not exist.
            ValidationError: bad key or value (nothing is written).
        """
        self._check_open()
        check_key(key)
        call = self._do_put(key, self._check_value(key, value), self._check_lease(lease))
        series = self._s_put
        if series is None:
            return await call
        calls = series.calls = series.calls + 1
        if calls & series.mask:  # counted, not timed (the mask is 0 while tracing is on)
            try:
                return await call
            except BaseException as exc:
                series.failed(exc)
                raise
        return await _observed(series, call, self.backend, "put", key)

    async def get(self, key: str) -> KeyValue | None:
        """Return the key's record, or None."""
        self._check_open()
        check_key(key)
        call = self._do_get(key)
        series = self._s_get
        if series is None:
            return await call
        calls = series.calls = series.calls + 1
        if calls & series.mask:  # counted, not timed (the mask is 0 while tracing is on)
            try:
                return await call
            except BaseException as exc:
                series.failed(exc)
                raise
        return await _observed(series, call, self.backend, "get", key)

    async def range(
        self,
        key: str = "",
        *,
        prefix: bool = True,
        limit: int | None = None,
        revision: int | None = None,
    ) -> tuple[list[KeyValue], int]:
        """Return the records under ``key`` (a prefix, or one key) sorted by key, and the revision.

        Args:
            key: the prefix ("" = everything under the root) or, with
                ``prefix=False``, one key.
            limit: at most this many records (None or 0: all).
            revision: read as of this past revision (MVCC); None: now.

        Raises:
            CompactedError: ``revision`` is below the compaction point.
            ValidationError: ``revision`` is in the future.
        """
        self._check_open()
        check_key(key, allow_empty=prefix)
        if limit is not None and limit < 0:
            raise ValidationError("range limit must be >= 0 (0 or None: no limit)")
        if revision is not None and revision < 0:
            raise ValidationError("revision must be >= 0 (0 or None: the current revision)")
        call = self._do_range(key, prefix, limit or None, revision or None)
        series = self._s_range
        if series is None:
            return await call
        calls = series.calls = series.calls + 1
        if calls & series.mask:  # counted, not timed (the mask is 0 while tracing is on)
            try:
                return await call
            except BaseException as exc:
                series.failed(exc)
                raise
        return await _observed(series, call, self.backend, "range", key)

    async def delete(self, key: str, *, prefix: bool = False) -> int:
        """Delete the key (or every key under the prefix); return how many were deleted."""
        self._check_open()
        check_key(key, allow_empty=prefix)
        call = self._do_delete(key, prefix)
        series = self._s_delete
        if series is None:
            return await call
        calls = series.calls = series.calls + 1
        if calls & series.mask:  # counted, not timed (the mask is 0 while tracing is on)
            try:
                return await call
            except BaseException as exc:
                series.failed(exc)
                raise
        return await _observed(series, call, self.backend, "delete", key)

    async def txn(
        self,
        compare: Sequence[Compare],
        success: Sequence[Op] = (),
        failure: Sequence[Op] = (),
    ) -> TxnResult:
        """Run ``success`` if every compare holds, else ``failure``, atomically.

        All writes of one transaction share one new revision (none if it
        writes nothing). A key may be written at most once per branch.

        Raises:
            ValidationError: a bad op, one key written twice, or more than 128
                compares or ops in a branch (etcd's ``--max-txn-ops``); nothing
                is written.
            LeaseNotFoundError: a Put names a lease that does not exist.
        """
        self._check_open()
        for c in compare:
            if not isinstance(c, Compare):
                raise ValidationError(f"compare must be a Compare, not {c!r}")
            check_key(c.key)
        if len(compare) > MAX_TXN_OPS:
            raise ValidationError(
                f"a transaction has {len(compare)} compares, over the limit of "
                f"{MAX_TXN_OPS}: split it"
            )
        checked = [tuple(self._check_op(op) for op in ops) for ops in (success, failure)]
        for ops in checked:
            self._check_no_overlap(ops)
            if len(ops) > MAX_TXN_OPS:
                raise ValidationError(
                    f"a transaction branch has {len(ops)} ops, over the limit of "
                    f"{MAX_TXN_OPS}: split it"
                )
        call = self._do_txn(tuple(compare), checked[0], checked[1])
        series = self._s_txn
        if series is None:
            return await call
        calls = series.calls = series.calls + 1
        if calls & series.mask:  # counted, not timed (the mask is 0 while tracing is on)
            try:
                return await call
            except BaseException as exc:
                series.failed(exc)
                raise
        return await _observed(series, call, self.backend, "txn", None)

    @staticmethod
    def _check_no_overlap(ops: Sequence[Op]) -> None:
        """Refuse a branch that writes a key twice; O(n) for exact keys, prefixes compared."""
        keys: set[str] = set()
        prefixes: list[str] = []
        for op in ops:
            if isinstance(op, Put) or (isinstance(op, Delete) and not op.prefix):
                key = op.key
                twice = key in keys or (bool(prefixes) and any(map(key.startswith, prefixes)))
                keys.add(key)
            elif isinstance(op, Delete):
                key = op.key
                twice = any(k.startswith(key) for k in keys) or any(
                    key.startswith(p) or p.startswith(key) for p in prefixes
                )
                prefixes.append(key)
            else:
                continue
            if twice:
                raise ValidationError(
                    f"a transaction writes {key!r} more than once: merge those ops into one"
                )

    async def grant(self, ttl: int) -> Lease:
        """Grant a lease of ``ttl`` whole seconds."""
        self._check_open()
        if not isinstance(ttl, int) or isinstance(ttl, bool) or not 1 <= ttl <= MAX_LEASE_TTL:
            raise ValidationError(f"lease ttl must be whole seconds from 1 to {MAX_LEASE_TTL}")
        call = self._do_grant(ttl)
        ops = self._ops
        return await (call if ops is None else _timed(ops["grant"], call, self.backend, "grant"))

    async def keepalive(self, lease_id: int) -> int:
        """Renew the lease to its full TTL; return that TTL.

        Raises:
            LeaseNotFoundError: the lease has expired or was revoked.
        """
        self._check_open()
        call = self._do_keepalive(self._check_lease(lease_id))
        ops = self._ops
        return await (
            call if ops is None else _timed(ops["keepalive"], call, self.backend, "keepalive")
        )

    async def revoke(self, lease_id: int) -> None:
        """End the lease now, deleting every key attached to it.

        Raises:
            LeaseNotFoundError: no such lease.
        """
        self._check_open()
        call = self._do_revoke(self._check_lease(lease_id))
        ops = self._ops
        await (call if ops is None else _timed(ops["revoke"], call, self.backend, "revoke"))

    async def time_to_live(self, lease_id: int) -> LeaseInfo | None:
        """Return the lease's remaining TTL and keys, or None if it does not exist."""
        self._check_open()
        call = self._do_time_to_live(self._check_lease(lease_id))
        ops = self._ops
        return await (
            call if ops is None else _timed(ops["time_to_live"], call, self.backend, "time_to_live")
        )

    async def leases(self) -> list[int]:
        """Return the ids of the live leases."""
        self._check_open()
        call = self._do_leases()
        ops = self._ops
        return await (call if ops is None else _timed(ops["leases"], call, self.backend, "leases"))

    def watch(
        self, key: str = "", *, prefix: bool = False, start_revision: int | None = None
    ) -> Watch:
        """Watch a key or prefix; see :class:`Watch` for the guarantees."""
        self._check_open()
        check_key(key, allow_empty=prefix)
        if start_revision is not None and start_revision < 0:
            raise ValidationError("start_revision must be >= 0 (None: changes after now)")
        watch = self._make_watch(key, prefix, start_revision or None)
        watch._series = self._series
        return watch

    async def compact(self, revision: int) -> None:
        """Forget history before ``revision`` (reads and watches below it raise Compacted).

        Raises:
            CompactedError: ``revision`` is already compacted.
            ValidationError: ``revision`` is in the future.
        """
        self._check_open()
        if not isinstance(revision, int) or revision < 1:
            raise ValidationError("compact revision must be an int >= 1")
        call = self._do_compact(revision)
        ops = self._ops
        await (call if ops is None else _timed(ops["compact"], call, self.backend, "compact"))

    async def status(self) -> StoreStatus:
        """Return a summary of the store: backend, revision, key count, size."""
        self._check_open()
        call = self._do_status()
        ops = self._ops
        return await (call if ops is None else _timed(ops["status"], call, self.backend, "status"))

    async def close(self) -> None:
        """Close the connection; live watches end (idempotent)."""
        if not self._closed:
            self._closed = True
            await self._do_close()

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._closed

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # -- backend hooks ------------------------------------------------------

    @abc.abstractmethod
    async def _do_put(self, key: str, value: bytes, lease: int) -> int: ...

    @abc.abstractmethod
    async def _do_get(self, key: str) -> KeyValue | None: ...

    @abc.abstractmethod
    async def _do_range(
        self, key: str, prefix: bool, limit: int | None, revision: int | None
    ) -> tuple[list[KeyValue], int]: ...

    @abc.abstractmethod
    async def _do_delete(self, key: str, prefix: bool) -> int: ...

    @abc.abstractmethod
    async def _do_txn(
        self, compare: tuple[Compare, ...], success: tuple[Op, ...], failure: tuple[Op, ...]
    ) -> TxnResult: ...

    @abc.abstractmethod
    async def _do_grant(self, ttl: int) -> Lease: ...

    @abc.abstractmethod
    async def _do_keepalive(self, lease_id: int) -> int: ...

    @abc.abstractmethod
    async def _do_revoke(self, lease_id: int) -> None: ...

    @abc.abstractmethod
    async def _do_time_to_live(self, lease_id: int) -> LeaseInfo | None: ...

    @abc.abstractmethod
    async def _do_leases(self) -> list[int]: ...

    @abc.abstractmethod
    def _make_watch(self, key: str, prefix: bool, start_revision: int | None) -> Watch: ...

    @abc.abstractmethod
    async def _do_compact(self, revision: int) -> None: ...

    @abc.abstractmethod
    async def _do_status(self) -> StoreStatus: ...

    @abc.abstractmethod
    async def _do_close(self) -> None: ...

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"<{type(self).__name__} root={self.root!r} {state}>"
