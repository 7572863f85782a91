"""Coordination recipes over the store: Session, Lock, Semaphore, RWLock, Election.

Everything here is written against :mod:`keel.store` only, so it runs on every
backend. The recipes are etcd's (client/v3/concurrency): a key per contender
on the session lease, ordered by create_revision, each waiter watching only
the key it waits on, and the owner key's create_revision as the fencing token.
See ``docs/coordination.md``.
"""

from keel.coord._election import Election, Leader, Leadership
from keel.coord._flag import LossFlag
from keel.coord._inspect import LineState, group_lines, read_lines
from keel.coord._lock import HeldLock, Lock
from keel.coord._semaphore import HeldSlot, RWLock, Semaphore
from keel.coord._session import Session, SessionStatistics, next_step

__all__ = [
    "Election",
    "HeldLock",
    "HeldSlot",
    "Leader",
    "Leadership",
    "LineState",
    "Lock",
    "LossFlag",
    "RWLock",
    "Semaphore",
    "Session",
    "SessionStatistics",
    "group_lines",
    "next_step",
    "read_lines",
]
