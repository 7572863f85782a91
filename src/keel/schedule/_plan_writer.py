"""Writing a plan: chunks of execution records, each one transaction, runs dispatched.

The planner decides which fires to record (:mod:`._policies`, :mod:`._records`);
this writes them. Jobs due together share transactions of up to
``MAX_RECORDS`` records, each guarded by the leadership and by an absent
compare per record. A run whose routing picked a live worker is dispatched
to it in the same transaction (see the planner module).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

from keel.coord import Leadership
from keel.errors import LeaseNotFoundError, NotLeaderError
from keel.observe.spans import fire_span
from keel.schedule._batch import Batcher
from keel.schedule._codec import encode_dispatch
from keel.schedule._history import last_planned
from keel.schedule._model import Execution, JobDef, Status, dispatch_key
from keel.schedule._triggers import Trigger
from keel.schedule.wheel import Timer
from keel.store import Compare, Op, Put

__all__ = ["MAX_RECORDS", "JobState", "PlanItem", "PlanWriter", "advance", "chunked"]

MAX_RECORDS = 96  # per txn: with their compares and dispatch keys, under the store's 128
_MAX_DISPATCH = 16  # workers assigned runs in one txn; the rest are claimed as usual


@dataclass
class JobState:
    """What the leading planner keeps of one job."""

    defn: JobDef
    trigger: Trigger | None = None
    planned_mod: int = 0
    last: datetime | None = None
    timer: Timer[str] | None = None
    counter: int = 0
    running: dict[str, str] = field(default_factory=dict)


@dataclass
class PlanItem:
    """The records of one fire of a job, on their way to the store."""

    job: JobState
    fire: datetime
    records: list[Execution]
    next_fire: datetime | None


def advance(job: JobState, fire: float) -> None:
    """Move the job's progress to ``fire`` (epoch seconds) if that is later."""
    moment = datetime.fromtimestamp(fire, UTC)
    if job.last is None or moment > job.last:
        job.last = moment


def chunked(items: list[PlanItem]) -> list[list[PlanItem]]:
    """Bin items in order into chunks of at most ``MAX_RECORDS`` records (an item stays whole)."""
    chunks: list[list[PlanItem]] = []
    size = MAX_RECORDS
    for item in items:
        if size + len(item.records) > MAX_RECORDS:
            chunks.append([])
            size = 0
        chunks[-1].append(item)
        size += len(item.records)
    return chunks


class PlanWriter:
    """Writes chunks of a leader's plan through its group committer.

    Args:
        batcher: the planner's group committer.
        group: the scheduler group (for messages).
        counts: the planner's counters (``planned``, ``skipped``, ``conflicts``).
    """

    def __init__(self, batcher: Batcher, group: str, counts: dict[str, int]) -> None:
        self._batcher = batcher
        self.store = batcher.store
        self.group = group
        self.leases: dict[str, int] = {}
        """Live worker id -> its session lease (dispatch goes only to these)."""
        self._dispatched = 0
        self._counts = counts

    def _dispatch(
        self, chunk: list[PlanItem], leadership: Leadership
    ) -> tuple[list[Op], list[Put]]:
        """Assign each run whose owner is known to it: one dispatch key per owner, on its lease.

        Returns:
            the dispatch puts (first, so a worker sees its dispatch before the
            runs) and the record puts.
        """
        per_owner: dict[str, int] = {}  # runs assigned to each worker in this chunk
        keys: dict[str, str] = {}  # and its dispatch key
        puts: list[Put] = []
        for item in chunk:
            for i, rec in enumerate(item.records):
                owner = rec.hint
                if (
                    owner in self.leases
                    and rec.overlap == "allow"
                    and rec.status is Status.PENDING
                    and (owner in per_owner or len(per_owner) < _MAX_DISPATCH)
                ):
                    if owner not in per_owner:
                        self._dispatched += 1
                        per_owner[owner] = 0
                        keys[owner] = dispatch_key(leadership.fencing_token, self._dispatched)
                    per_owner[owner] += 1
                    rec = rec.with_changes(dispatch=keys[owner], worker=owner, attempt=1)
                    item.records[i] = rec
                puts.append(Put(rec.key, rec.encode()))
        claims: list[Op] = [
            Put(keys[owner], encode_dispatch(owner, count), lease=self.leases[owner])
            for owner, count in per_owner.items()
        ]
        return claims, puts

    async def write(self, chunk: list[PlanItem], leadership: Leadership) -> bool:
        """Write the records of a chunk in one transaction; False when a compare failed."""
        compares = [leadership.guard()]
        for item in chunk:
            compares += [Compare.absent(rec.key) for rec in item.records]
        claims, puts = self._dispatch(chunk, leadership)
        try:
            result = await self._batcher.submit(compares, [*claims, *puts])
        except LeaseNotFoundError:  # a worker's lease ended: leave its runs to be claimed
            self.leases.clear()
            for item in chunk:
                item.records = [
                    r.with_changes(dispatch="", worker="", attempt=0) for r in item.records
                ]
            result = await self._batcher.submit(
                compares, [Put(r.key, r.encode()) for i in chunk for r in i.records]
            )
        if result.succeeded:
            for item in chunk:
                advance(item.job, item.fire.timestamp())
                for rec in item.records:
                    self._counts["skipped" if rec.status is Status.SKIPPED else "planned"] += 1
                if item.records:
                    first = item.records[0]
                    skipped = first.status is Status.SKIPPED
                    fire_span(self.group, first.job, first.fire, len(item.records), skipped)
            return True
        self._counts["conflicts"] += 1
        await self._reload(chunk, leadership)
        return False

    async def _reload(self, chunk: list[PlanItem], leadership: Leadership) -> None:
        """After a failed compare: still leading? Then re-read the chunk's jobs' progress."""
        mine = await self.store.get(leadership.key)
        if mine is None or mine.create_revision != leadership.fencing_token:
            leadership.lost.set("leader key is gone")
            raise NotLeaderError(f"lost the lead of schedule/{self.group}")
        for job in {id(i.job): i.job for i in chunk}.values():
            job.last = await last_planned(self.store, job.defn.name)
