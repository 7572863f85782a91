"""``keel.connect(url)``: open the backend a store URL names.

The URL forms are documented in :mod:`keel.store._url` and ``docs/store.md``.
Backends are imported only when their scheme is used, so ``memory://`` needs
neither grpc nor sqlite.
"""

from __future__ import annotations

from typing import Any

from keel._aio import Opening
from keel.store import Store, StoreURL, default_url, parse_url

__all__ = ["connect"]


async def _open(url: StoreURL, extra: dict[str, Any]) -> Store:
    if url.scheme == "memory":
        from keel.backends.memory import open_memory

        return await open_memory(url, **extra)
    if url.scheme == "sqlite":
        from keel.backends.sqlite import open_sqlite

        return await open_sqlite(url, **extra)
    from keel.backends.etcd import open_etcd

    return await open_etcd(url, **extra)


def connect(url: str | None = None, **options: Any) -> Opening[Store]:
    """Open the store a URL names: ``store = await keel.connect(url)``.

    Also an async context manager that closes the store on exit:
    ``async with keel.connect("sqlite://") as store: ...``.

    Args:
        url: ``memory://``, ``sqlite:///path.db`` or ``etcd://host:port,...``;
            None: ``KEEL_STORE``, else ``sqlite://`` (``.keel/keel.db``).
        **options: backend keyword options (``clock=`` for memory and sqlite,
            ``timeout_s=`` for etcd...).

    Raises:
        InvalidURLError: the URL is malformed (checked before anything opens).
        StoreUnavailableError: the store cannot be reached.
    """
    parsed = parse_url(url or default_url())
    return Opening(lambda: _open(parsed, options), lambda store: store.close())
