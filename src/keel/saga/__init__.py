"""Sagas: steps with compensations, and the sub-transaction barrier for participants.

- :mod:`keel.saga.barrier`: ``async with barrier.guard(conn, saga_id, step, op)``
  applies a participant's write once per saga call (duplicates, null
  compensation and hanging handled in the participant's own transaction).
"""

from keel.saga import barrier

__all__ = ["barrier"]
