"""``await keel.events.connect(url)``: a bus on the engine a URL names."""

from __future__ import annotations

from typing import Any

from keel._connect import connect as connect_store
from keel.events._bus import Bus

__all__ = ["REDIS_SCHEMES", "connect"]

REDIS_SCHEMES = ("redis://", "rediss://", "redis+cluster://", "rediss+cluster://")


async def connect(url: str | None = None, **options: Any) -> Bus:
    """Open a bus: Redis Streams for ``redis://``-style URLs, else the store at ``url``.

    Args:
        url: ``redis://host:port``, ``rediss://…``, ``redis+cluster://h:p,h:p``
            (Redis engine), or any store URL (``sqlite:///…``, ``etcd://…``,
            ``memory://``; None: the default store, ``KEEL_STORE``).
        options: :class:`Bus` options (``partitions``, ``retention``...).

    Returns:
        A bus that closes its engine (and the store it opened) on ``aclose``.

    Raises:
        InvalidURLError: a malformed URL.
        StoreUnavailableError: the engine did not answer.
    """
    if url is not None and url.startswith(REDIS_SCHEMES):
        from keel.events.redis import RedisEngine

        engine = await RedisEngine.connect(url)
        bus = Bus(engine, **options)
        bus._owns_engine = True
        return bus
    store = await connect_store(url)
    bus = Bus(store, **options)
    bus._owned_store = store
    return bus
