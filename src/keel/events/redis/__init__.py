"""The Redis Streams engine of keel.events, for production: :class:`RedisEngine`.

Each topic partition is a Redis stream keyed ``<prefix>{<topic>:<p>}`` (a
Redis Cluster hash tag, so partitions spread over a cluster's nodes), each
group a Redis consumer group; dead consumers' entries are taken over with
``XAUTOCLAIM``, retention is ``XTRIM MAXLEN`` / ``MINID``. Works on one
server (``redis://``, ``rediss://``) and on Redis Cluster
(``redis+cluster://host:port,host:port``). Needs Redis 6.2 or later (7 or
later recommended: it drops trimmed entries from pending lists and reports
group lag itself). See ``docs/events.md``.
"""

from keel.events.redis._engine import DEFAULT_PREFIX, RedisEngine

__all__ = ["DEFAULT_PREFIX", "RedisEngine"]
