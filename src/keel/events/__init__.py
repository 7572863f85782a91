"""Publish/subscribe with consumer groups, retries, dead letters, per-key order and an outbox.

Two engines sit behind one contract (:class:`Engine`): the keel store
(memory, sqlite, etcd: the embedded default) and Redis Streams
(``keel.events.redis``). See ``docs/events.md``.
"""

from keel.events._engine import END, START, Engine, Entry, GroupLag

__all__ = ["END", "START", "Engine", "Entry", "GroupLag"]
