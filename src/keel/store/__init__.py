"""The store contract: the one small API every capability of keel is built on.

The data model is etcd v3's: string keys relative to a root prefix, bytes
values, one global revision, leases, transactions with compares, and watches
that replay history. See ``docs/store.md`` for the rules and each backend's
guarantees; obtain a store with :func:`keel.connect`.
"""

from keel.store._base import DEFAULT_MAX_VALUE_BYTES, DEFAULT_ROOT, MAX_LEASE_TTL, Store, Watch
from keel.store._merge import merged
from keel.store._types import (
    Compare,
    CompareOp,
    CompareTarget,
    Delete,
    Event,
    EventType,
    Get,
    KeyValue,
    Lease,
    LeaseInfo,
    Op,
    OpResult,
    Put,
    Range,
    StoreStatus,
    TxnResult,
)
from keel.store._url import (
    DEFAULT_SQLITE_PATH,
    DEFAULT_URL,
    StoreURL,
    default_url,
    parse_url,
    redact_url,
)

__all__ = [
    "DEFAULT_MAX_VALUE_BYTES",
    "DEFAULT_ROOT",
    "DEFAULT_SQLITE_PATH",
    "DEFAULT_URL",
    "MAX_LEASE_TTL",
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
    "Store",
    "StoreStatus",
    "StoreURL",
    "TxnResult",
    "Watch",
    "default_url",
    "merged",
    "parse_url",
    "redact_url",
]
