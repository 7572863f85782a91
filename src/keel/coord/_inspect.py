"""Read-only views of the coordination state: who holds which lock, who leads.

Used by ``keel locks``, ``keel leader`` and ``keel up``; pure grouping over
records, plus two one-range readers.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

from keel.store import KeyValue, Store

__all__ = ["KINDS", "LineState", "group_lines", "read_lines"]

KINDS: dict[str, str] = {
    "locks/": "lock",
    "semaphores/": "semaphore",
    "rwlocks/": "rwlock",
    "elections/": "election",
}


@dataclass(frozen=True, slots=True)
class LineState:
    """One lock, semaphore, rwlock or election as the store shows it.

    Attributes:
        kind: ``lock``, ``semaphore``, ``rwlock`` or ``election``.
        name: its name.
        line: every contender's record, oldest first (the first owns or leads).
    """

    kind: str
    name: str
    line: tuple[KeyValue, ...]

    @property
    def owner(self) -> KeyValue | None:
        """The first contender: the lock owner or the leader."""
        return self.line[0] if self.line else None

    @property
    def fencing_token(self) -> int:
        """The owner's create_revision (0 when nobody holds it)."""
        return self.line[0].create_revision if self.line else 0

    @property
    def waiters(self) -> int:
        """Contenders after the first."""
        return max(0, len(self.line) - 1)


def group_lines(kvs: Iterable[KeyValue]) -> list[LineState]:
    """Group coordination keys into lines by kind and name, each sorted by creation."""
    groups: dict[tuple[str, str], list[KeyValue]] = defaultdict(list)
    for kv in kvs:
        for prefix, kind in KINDS.items():
            if kv.key.startswith(prefix):
                name, sep, _ = kv.key[len(prefix) :].rpartition("/")
                if sep:
                    groups[(kind, name)].append(kv)
                break
    return [
        LineState(kind, name, tuple(sorted(line, key=lambda kv: kv.create_revision)))
        for (kind, name), line in sorted(groups.items())
    ]


async def read_lines(store: Store, kinds: Iterable[str] = KINDS) -> list[LineState]:
    """Read every line of the given kind prefixes (``locks/``, ``elections/``...)."""
    kvs: list[KeyValue] = []
    for prefix in kinds:
        found, _ = await store.range(prefix)
        kvs.extend(found)
    return group_lines(kvs)
