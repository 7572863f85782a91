"""The SQLite backend: one file shared by many processes on one host.

``keel.connect("sqlite:///path/to.db")`` opens it; see ``docs/store-sqlite.md``
for the schema, durability, retention and tuning. The package is split by
concern: the schema, one write transaction, reads, leases (and their clock),
the fair write gate, the worker threads, the group-committing writer, the
watch poller and the store.
"""

from __future__ import annotations

from typing import Any

from keel.backends.sqlite._store import SqliteOptions, SqliteStore
from keel.clock import SYSTEM_CLOCK, Clock
from keel.errors import ValidationError
from keel.store import StoreURL

__all__ = ["SqliteOptions", "SqliteStore", "open_sqlite"]

_OVERRIDES = frozenset({"synchronous", "retention", "busy_timeout_s"})


async def open_sqlite(url: StoreURL, *, clock: Clock = SYSTEM_CLOCK, **options: Any) -> SqliteStore:
    """Open a SQLite store for a parsed ``sqlite://`` URL (used by :func:`keel.connect`).

    Args:
        url: the parsed URL; its ``synchronous``, ``retention`` and
            ``busy_timeout_s`` query options tune the store.
        clock: the clock of lease deadlines (tests only; see ``_leases``).
        **options: the same tuning options as keywords, overriding the URL's.

    Raises:
        ValidationError: an unknown or bad option.
        StoreUnavailableError: the file cannot be created or opened.
    """
    unknown = set(options) - _OVERRIDES
    if unknown:
        raise ValidationError(
            f"unknown sqlite option(s) {', '.join(sorted(unknown))}: use "
            f"{', '.join(sorted(_OVERRIDES))} or clock"
        )
    query = dict(url.options)
    query.update({name: str(value) for name, value in options.items()})
    store = SqliteStore(
        url.path,
        root=url.root,
        max_value_bytes=url.max_value_bytes,
        options=SqliteOptions.from_query(query),
        clock=clock,
    )
    return await store.start()
