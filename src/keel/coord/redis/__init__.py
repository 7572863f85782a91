"""Redis locks, for users who already run Redis: :class:`RedisLock` and :class:`Redlock`.

- :class:`RedisLock` is a mutex on one Redis server: ``SET NX PX`` with a
  random owner value, compare-and-delete release, auto-extension, a fencing
  token from an ``INCR`` counter, and blocking acquire through ``BLPOP``.
- :class:`Redlock` is the published Redlock algorithm across N independent
  Redis servers: it holds while a majority holds, and survives a minority of
  servers being down.

Both mirror :class:`keel.coord.Lock` (``async with lock as held``,
``acquire(timeout_s=...)``, ``try_acquire()``, ``held.fencing_token``,
``held.lost``) so code can switch. Neither is as safe as the store-backed
``Lock`` when fencing matters: see ``docs/coordination.md``.
"""

from keel.coord.redis._lock import HeldRedisLock, RedisLock
from keel.coord.redis._redlock import HeldRedlock, Redlock

__all__ = ["HeldRedisLock", "HeldRedlock", "RedisLock", "Redlock"]
