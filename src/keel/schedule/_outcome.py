"""What a worker writes when a run ends, and the counters it keeps."""

from __future__ import annotations

import random
from dataclasses import dataclass, fields
from typing import Final

from keel.schedule._model import Execution, Status
from keel.schedule._policies import retry_at

__all__ = ["COUNTERS", "WorkerStatistics", "outcome_record"]

_TRACEBACK_LIMIT = 8192


def outcome_record(
    rec: Execution,
    *,
    token: int,
    outcome: Status,
    error: str,
    trace: str,
    captured: str,
    now: float,
    rng: random.Random,
) -> tuple[Execution, str]:
    """The record to write for a run that ended with ``outcome`` (pure but for ``rng``).

    A failure or timeout with retries left becomes PENDING again with its next
    ``not_before``; the counter name says which (``succeeded``, ``retried``...).

    Returns:
        the new record and the name of the counter it adds to.
    """
    final = rec.with_changes(
        status=outcome,
        finished_at=now,
        token=token,
        error=error,
        traceback=trace[-_TRACEBACK_LIMIT:],
        log=captured,
    )
    counter = outcome.value.lower()
    if outcome in (Status.FAILED, Status.TIMED_OUT):
        final = final.with_changes(failures=rec.failures + 1)
        again = retry_at(final, now, rng)
        if again is not None:
            final = final.with_changes(status=Status.PENDING, not_before=again, hint="")
            counter = "retried"
    return final, counter


@dataclass(frozen=True, slots=True)
class WorkerStatistics:
    """Counters of one worker.

    Attributes:
        worker_id: its id.
        tracked: executions it may run that are not finished.
        running: handlers running now.
        claims, claim_conflicts: claim txns won and lost.
        succeeded, failed, timed_out, cancelled, retried, skipped: outcomes it wrote.
        fenced: outcomes refused because its claim was gone.
    """

    worker_id: str
    tracked: int
    running: int
    claims: int
    claim_conflicts: int
    succeeded: int
    failed: int
    timed_out: int
    cancelled: int
    retried: int
    skipped: int
    fenced: int


COUNTERS: Final = tuple(
    f.name for f in fields(WorkerStatistics) if f.name not in ("worker_id", "tracked", "running")
)
"""The counters a worker keeps, each a field of :class:`WorkerStatistics`."""
