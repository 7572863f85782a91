"""``keel.connect(url)``: open the backend a store URL names.

The URL forms are documented in :mod:`keel.store._url` and ``docs/store.md``.
Backends are imported only when their scheme is used, so ``memory://`` needs
neither grpc nor sqlite.
"""

from __future__ import annotations

import os
from typing import Any

from keel._aio import Opening
from keel.errors import StoreNotFoundError
from keel.store import Store, StoreURL, default_url, parse_url

__all__ = ["connect"]


def _check_exists(url: StoreURL) -> None:
    """Refuse a SQLite file that is not there (``create=False``)."""
    if url.scheme != "sqlite":
        return  # memory:// is always new; an etcd cluster is there or unreachable
    path = os.path.abspath(url.path)
    if not os.path.isfile(path):
        raise StoreNotFoundError(
            f"no store at {path}: the file does not exist; check the path, "
            f"or run a command that writes to create it"
        )


async def _open(url: StoreURL, extra: dict[str, Any]) -> Store:
    if url.scheme == "memory":
        from keel.backends.memory import open_memory

        return await open_memory(url, **extra)
    if url.scheme == "sqlite":
        from keel.backends.sqlite import open_sqlite

        return await open_sqlite(url, **extra)
    from keel.backends.etcd import open_etcd

    return await open_etcd(url, **extra)


def connect(url: str | None = None, *, create: bool = True, **options: Any) -> Opening[Store]:
    """Open the store a URL names: ``store = await keel.connect(url)``.

    Also an async context manager that closes the store on exit:
    ``async with keel.connect("sqlite://") as store: ...``.

    Args:
        url: ``memory://``, ``sqlite:///path.db`` or ``etcd://host:port,...``;
            None: ``KEEL_STORE``, else ``sqlite://`` (``.keel/keel.db``).
        create: False: a SQLite file that does not exist is an error instead of
            a new empty store (what read-only tools want: a typo in the path
            must not look like an empty store). No effect on memory and etcd.
        **options: backend keyword options (``clock=`` for memory and sqlite,
            ``timeout_s=`` for etcd...).

    Raises:
        InvalidURLError: the URL is malformed (checked before anything opens).
        StoreNotFoundError: ``create=False`` and the SQLite file is not there.
        StoreUnavailableError: the store cannot be reached.
    """
    parsed = parse_url(url or default_url())

    async def open_() -> Store:
        if not create:
            _check_exists(parsed)
        return await _open(parsed, options)

    return Opening(open_, lambda store: store.close())
