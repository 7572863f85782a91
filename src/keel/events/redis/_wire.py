"""The events engine's short path to one Redis server (see :mod:`keel._redis_wire`).

XADD, XREADGROUP and XACK go over it: an event costs three such commands
(append, read, ack), so redis-py's per-command overhead would be most of the
engine's own cost.
"""

from __future__ import annotations

from typing import Any

from redis.asyncio import Redis

from keel._redis_wire import Wire, write_timeout

__all__ = ["MAX_IDLE", "Wire", "wire_for"]

MAX_IDLE = 16
"""Connections kept checked out between commands (publishers and readers run at once)."""


def wire_for(client: Any) -> Wire | None:
    """A :class:`Wire` on ``client``'s pool, or None (cluster or single-connection clients)."""
    if not isinstance(client, Redis) or client.single_connection_client:
        return None
    return Wire(client.connection_pool, write_timeout(client), max_idle=MAX_IDLE)
