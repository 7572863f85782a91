"""The value types of the store contract: records, compares, operations, results."""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal, NamedTuple, TypeAlias

__all__ = [
    "Compare",
    "CompareOp",
    "CompareTarget",
    "Delete",
    "Event",
    "EventType",
    "Get",
    "KeyValue",
    "Lease",
    "LeaseInfo",
    "Op",
    "OpResult",
    "Put",
    "Range",
    "StoreStatus",
    "TxnResult",
]


class KeyValue(NamedTuple):
    """One key's record, as etcd v3 keeps it (immutable).

    A named tuple rather than a dataclass: a range of 1,000 keys builds 1,000
    of them, and a tuple is built about four times faster.

    Attributes:
        key: the key, relative to the store's root.
        value: the stored bytes.
        create_revision: revision of the put that created the key (this incarnation).
        mod_revision: revision of the last put to the key.
        version: 1 on create, +1 on each put; a delete ends the incarnation.
        lease: id of the lease the key is attached to, 0 for none.
    """

    key: str
    value: bytes
    create_revision: int
    mod_revision: int
    version: int
    lease: int = 0


class EventType(enum.Enum):
    """What happened to a key."""

    PUT = "PUT"
    DELETE = "DELETE"


class Event(NamedTuple):
    """One change seen by a watch (immutable).

    For a DELETE, ``kv`` carries the key, ``mod_revision`` = the deleting
    revision, empty value and zero create_revision/version/lease (as etcd).

    Attributes:
        type: PUT or DELETE.
        kv: the key's record after the change.
        prev_kv: the record before the change, or None if the key did not exist.
    """

    type: EventType
    kv: KeyValue
    prev_kv: KeyValue | None = None

    @property
    def revision(self) -> int:
        """The revision at which the change happened."""
        return self.kv.mod_revision


CompareTarget = Literal["version", "create_revision", "mod_revision", "value", "lease"]
CompareOp = Literal["==", "!=", "<", ">"]
_TARGETS: frozenset[str] = frozenset(
    ("version", "create_revision", "mod_revision", "value", "lease")
)
_OPS: frozenset[str] = frozenset(("==", "!=", "<", ">"))


@dataclass(frozen=True, slots=True)
class Compare:
    """One condition of a transaction: ``<target of key> <op> <operand>``.

    A missing key compares as version 0, create_revision 0, mod_revision 0,
    lease 0; a value compare against a missing key is false (as etcd).
    Build them with the class methods: ``Compare.version("a", "==", 0)``.
    """

    key: str
    target: CompareTarget
    op: CompareOp
    operand: int | bytes

    def __post_init__(self) -> None:
        if self.target not in _TARGETS:
            raise ValueError(
                f"unknown compare target {self.target!r}: use one of {sorted(_TARGETS)}"
            )
        if self.op not in _OPS:
            raise ValueError(f"unknown compare operator {self.op!r}: use one of {sorted(_OPS)}")
        if self.target == "value":
            if not isinstance(self.operand, bytes):
                raise TypeError("a value compare takes bytes: encode the string first")
        elif not isinstance(self.operand, int) or isinstance(self.operand, bool):
            raise TypeError(f"a {self.target} compare takes an int")

    @classmethod
    def version(cls, key: str, op: CompareOp, operand: int) -> Compare:
        """Compare the key's version (0 when the key is absent)."""
        return cls(key, "version", op, operand)

    @classmethod
    def create_revision(cls, key: str, op: CompareOp, operand: int) -> Compare:
        """Compare the key's create_revision (0 when absent)."""
        return cls(key, "create_revision", op, operand)

    @classmethod
    def mod_revision(cls, key: str, op: CompareOp, operand: int) -> Compare:
        """Compare the key's mod_revision (0 when absent)."""
        return cls(key, "mod_revision", op, operand)

    @classmethod
    def value(cls, key: str, op: CompareOp, operand: bytes) -> Compare:
        """Compare the key's value bytewise (false when absent)."""
        return cls(key, "value", op, operand)

    @classmethod
    def lease(cls, key: str, op: CompareOp, operand: int) -> Compare:
        """Compare the key's lease id (0 when absent or not leased)."""
        return cls(key, "lease", op, operand)

    @classmethod
    def absent(cls, key: str) -> Compare:
        """True when the key does not exist (``create_revision == 0``)."""
        return cls(key, "create_revision", "==", 0)

    def holds(self, kv: KeyValue | None) -> bool:
        """Evaluate the compare against a key's current record (pure)."""
        if self.target == "value":
            if kv is None:
                return False
            left: int | bytes = kv.value
        elif kv is None:
            left = 0
        else:
            left = getattr(kv, self.target)
        right = self.operand
        if self.op == "==":
            return left == right
        if self.op == "!=":
            return left != right
        if self.op == "<":
            return left < right  # type: ignore[operator]  # same type by __post_init__
        return left > right  # type: ignore[operator]


@dataclass(frozen=True, slots=True)
class Put:
    """Set ``key`` to ``value``, attached to ``lease`` (0 / None: no lease)."""

    key: str
    value: bytes
    lease: int | None = None


@dataclass(frozen=True, slots=True)
class Get:
    """Read one key; its result is a :class:`KeyValue` or None."""

    key: str


@dataclass(frozen=True, slots=True)
class Range:
    """Read the keys under a prefix (or one key); its result is a list of records."""

    key: str
    prefix: bool = True
    limit: int | None = None


@dataclass(frozen=True, slots=True)
class Delete:
    """Delete a key (or every key under a prefix); its result is the count deleted."""

    key: str
    prefix: bool = False


Op: TypeAlias = Put | Get | Range | Delete
OpResult: TypeAlias = KeyValue | list[KeyValue] | int | None
"""Put → None, Get → KeyValue | None, Range → list[KeyValue], Delete → int."""


@dataclass(frozen=True, slots=True)
class TxnResult:
    """Outcome of :meth:`Store.txn`.

    Attributes:
        succeeded: whether every compare held (so the success ops ran).
        revision: the store's revision after the transaction.
        results: one result per op of the branch that ran, in order.
    """

    succeeded: bool
    revision: int
    results: Sequence[OpResult] = field(default_factory=tuple)


@dataclass(frozen=True, slots=True)
class Lease:
    """A granted lease: keys attached to it are deleted when it ends.

    Attributes:
        id: the lease id (positive int).
        ttl: the granted time to live, in whole seconds.
    """

    id: int
    ttl: int


@dataclass(frozen=True, slots=True)
class LeaseInfo:
    """What :meth:`Store.time_to_live` reports of a live lease.

    Attributes:
        id: the lease id.
        ttl: seconds left before it expires (whole seconds, as etcd).
        granted_ttl: the TTL it was granted with.
        keys: the keys attached to it, sorted.
    """

    id: int
    ttl: int
    granted_ttl: int
    keys: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class StoreStatus:
    """A summary of a store connection, for ``keel store status``.

    Attributes:
        backend: ``memory``, ``sqlite`` or ``etcd``.
        endpoint: where it is (path or host list), without credentials.
        root: the root prefix of this connection.
        revision: the current revision.
        compact_revision: the oldest revision still readable.
        keys: keys under the root.
        leases: live leases (whole store for etcd).
        size_bytes: on-disk or in-memory size of the database, if known.
        details: backend-specific facts (version, leader, journal mode...).
    """

    backend: str
    endpoint: str
    root: str
    revision: int
    compact_revision: int
    keys: int
    leases: int
    size_bytes: int | None = None
    details: dict[str, str] = field(default_factory=dict)
