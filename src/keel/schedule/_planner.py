"""The elected planner: one per group turns triggers into execution records.

It campaigns in ``Election(session, "schedule/<group>")``; while it leads it
keeps one wheel timer per job at ``next fire - lookahead``, and when timers
fire it writes those jobs' new executions, up to ``MAX_RECORDS`` records
per transaction, each transaction guarded by its leadership and creating
each record only if absent. So:

- a deposed leader writes nothing (the guard fails);
- a new leader resumes after each job's newest scheduled run (the progress,
  which retention never deletes; a resume mark in ``jobs/<job>/planned`` may
  move it later) and applies the misfire policy to the fires it finds missed
  (:func:`plan_fires`);
- the same fire is never written twice: each record is created only if absent.

Dispatch: a run of an ``overlap="allow"`` job whose routing picked a live
worker is assigned to that worker in the same transaction: one key per
worker and transaction (``jobs/_dispatch/<term>-<n>``) attached to that
worker's session lease holds all its runs there, so the worker runs them
without a claim transaction of its own, and if it dies the key ends with its
lease and the runs are claimed elsewhere. The key's create_revision is their
fencing token.

Planning ``lookahead_s`` ahead lets workers see a run before it is due and
start it on time, so lateness does not include the planner's write.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from dataclasses import dataclass
from datetime import datetime

from keel.clock import SYSTEM_CLOCK, Clock, wait_event
from keel.coord import Election, Leadership, Session
from keel.errors import (
    KeelError,
    NotLeaderError,
    SessionLostError,
    ValidationError,
)
from keel.observe import capability_metrics
from keel.registry import Discovery, Instance
from keel.schedule._batch import Batcher
from keel.schedule._codec import decode_planned, job_decoder, read, run_decoder
from keel.schedule._feed import Feed, FeedGate
from keel.schedule._history import apply_retention
from keel.schedule._members import handlers_of, lease_of, worker_service
from keel.schedule._model import (
    JOBS_PREFIX,
    Execution,
    Status,
    parse_key,
    scheduled_fire,
)
from keel.schedule._plan_writer import (
    MAX_RECORDS,
    JobState,
    PlanItem,
    PlanWriter,
    advance,
    chunked,
)
from keel.schedule._policies import Plan, plan_fires
from keel.schedule._records import plan_records
from keel.schedule.wheel import TimingWheel
from keel.store import Event, EventType, KeyValue

__all__ = ["Planner", "PlannerStatistics"]

log = logging.getLogger("keel.schedule.planner")


@dataclass(frozen=True, slots=True)
class PlannerStatistics:
    """Counters of one planner.

    Attributes:
        leading: whether it leads its group now.
        terms: how many times it became leader.
        jobs: jobs of its group it follows.
        planned: executions written.
        skipped: missed fires recorded SKIPPED.
        dropped: missed fires beyond ``misfire_limit``.
        conflicts: planning txns that failed their compares.
    """

    leading: bool
    terms: int
    jobs: int
    planned: int
    skipped: int
    dropped: int
    conflicts: int


class Planner:
    """Campaigns for its group and, while leading, plans executions.

    Args:
        session: the session its candidacy lives on.
        group: the scheduler group.
        lookahead_s: write executions this long before they are due. Not a
            whole number of seconds by default: jobs firing on whole seconds
            (most cron jobs) are then planned between their fires, not at the
            instant a second's runs start in the same process.
        grace_s: a fire missed by less than this is still run on time.
        retention_every_s: how often the leader trims finished runs.
        node_id: the value it proclaims as leader.
        feed: a source of the changes under ``jobs/`` already watched in this
            process (a :class:`Worker`'s ``listen``); None: watch them itself.
        clock: time source.
    """

    def __init__(
        self,
        session: Session,
        *,
        group: str = "default",
        lookahead_s: float = 1.5,
        grace_s: float = 1.0,
        retention_every_s: float = 30.0,
        node_id: str | None = None,
        feed: Feed | None = None,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        if lookahead_s < 0 or grace_s < 0:
            raise ValidationError("lookahead_s and grace_s must be >= 0 seconds")
        self.session = session
        self.store = session.store
        self.group = group
        self.lookahead_s = lookahead_s
        self.grace_s = grace_s
        self.retention_every_s = retention_every_s
        self.node_id = node_id or f"{socket.gethostname()}-{os.getpid()}"
        self._clock = clock
        self._feed = feed
        self._jobs: dict[str, JobState] = {}
        self._wheel = TimingWheel[str](tick_s=0.01, start=clock.time())
        self._batcher = Batcher(self.store)
        self._wake = asyncio.Event()
        self._workers: tuple[Instance, ...] = ()
        self._by_handler: dict[str, list[str]] = {}
        self._leadership: Leadership | None = None
        self.leading = asyncio.Event()
        """Set while this planner leads its group."""
        self._counts = dict.fromkeys(("terms", "planned", "skipped", "dropped", "conflicts"), 0)
        self._writer = PlanWriter(self._batcher, group, self._counts)
        capability_metrics().planner(self)  # fire counts read at scrape time

    async def run(self) -> None:
        """Campaign, lead until leadership is lost, campaign again; until cancelled.

        Raises:
            SessionLostError: the session is lost (open a new one and run again).
        """
        election = Election(self.session, f"schedule/{self.group}")
        while True:
            async with election.campaign(self.node_id) as leadership:
                self._leadership = leadership
                self._counts["terms"] += 1
                self.leading.set()
                log.info("planner %s leads group %r", self.node_id, self.group)
                try:
                    await _until_lost(self._lead(leadership), leadership)
                except NotLeaderError as exc:
                    log.warning("planner %s: %s", self.node_id, exc)
                finally:
                    self.leading.clear()
                    self._leadership = None
                    self._reset()
            if self.session.lost.is_set():
                raise SessionLostError(f"planner session lost: {self.session.lost.reason}")

    def _reset(self) -> None:
        for job in self._jobs.values():
            if job.timer is not None:
                job.timer.cancel()
        self._jobs.clear()

    async def _lead(self, leadership: Leadership) -> None:
        gate = FeedGate(self._apply) if self._feed is not None else None
        unlisten = self._feed(gate) if self._feed is not None and gate is not None else None
        try:
            kvs, revision = await self.store.range(JOBS_PREFIX)
            for kv in kvs:
                self._apply_put(kv, initial=True)
            kvs.clear()  # this frame lives as long as the lead: do not keep the listing
            if gate is not None:
                gate.open(revision)
            for name in list(self._jobs):
                self._arm(name, at=0.0)
            async with asyncio.TaskGroup() as tg, Discovery(self.store, clock=self._clock) as disc:
                tasks = [
                    tg.create_task(self._batcher.run()),
                    tg.create_task(self._members(disc)),
                    tg.create_task(self._retention()),
                ]
                if gate is None:
                    tasks.append(tg.create_task(self._follow(revision + 1)))
                try:
                    await self._drive(leadership)
                finally:
                    for task in tasks:
                        task.cancel()
        finally:
            if unlisten is not None:
                unlisten()

    # -- following definitions and progress -----------------------------------

    async def _follow(self, start: int) -> None:
        async with self.store.watch(JOBS_PREFIX, prefix=True, start_revision=start) as events:
            async for event in events:
                self._apply(event)

    async def _members(self, discovery: Discovery) -> None:
        async for members in discovery.subscribe(worker_service(self.group)):
            self._workers = members
            self._by_handler.clear()
            self._writer.leases = {
                m.id: lease for m in members if (lease := lease_of(m)) is not None
            }

    def _handlers(self, handler: str) -> list[str]:
        """Ids of the live workers that have ``handler`` (indexed once per membership change)."""
        if not self._by_handler and self._workers:
            for w in self._workers:
                for name in handlers_of(w):
                    self._by_handler.setdefault(name, []).append(w.id)
        return self._by_handler.get(handler, [])

    def _apply(self, event: Event) -> None:
        if event.type is EventType.PUT:
            self._apply_put(event.kv)
            return
        parsed = parse_key(event.kv.key)
        if parsed and parsed[1] == "def" and parsed[0] in self._jobs:
            job = self._jobs.pop(parsed[0])
            if job.timer is not None:
                job.timer.cancel()

    def _apply_put(self, kv: KeyValue, *, initial: bool = False) -> None:
        parsed = parse_key(kv.key)
        if parsed is None:
            return
        name, kind, rest = parsed
        if kind == "def":
            self._apply_def(name, kv, initial=initial)
        elif kind == "planned":  # a resume mark: fires before it are not run
            known = self._jobs.get(name)
            mark = read(kv.key, kv.value, decode_planned) if known is not None else None
            if known is not None and mark is not None and kv.mod_revision > known.planned_mod:
                known.planned_mod = kv.mod_revision
                advance(known, mark.fire)
        elif kind == "runs" and name in self._jobs:
            job = self._jobs[name]
            fire = scheduled_fire(rest)
            if not (job.defn.routing == "least_busy" or (initial and fire is not None)):
                return
            rec = read(kv.key, kv.value, run_decoder(kv.key))
            if rec is None:
                return
            if initial and fire is not None:  # the progress: the newest scheduled run
                advance(job, fire)
            self._track_busy(job, f"{name}/{rest}", rec)

    def _apply_def(self, name: str, kv: KeyValue, *, initial: bool) -> None:
        """A definition was written: follow the job, or stop if it left the group or is invalid."""
        defn = read(kv.key, kv.value, job_decoder(name))
        if defn is None or defn.group != self.group:
            job = self._jobs.pop(name, None)  # planned again once the record is valid
            if job is not None and job.timer is not None:
                job.timer.cancel()
            return
        job = self._jobs.setdefault(name, JobState(defn))
        job.defn = defn
        job.trigger = defn.make_trigger()
        if not initial:
            self._arm(name, at=0.0)

    def _track_busy(self, job: JobState, run_id: str, rec: Execution) -> None:
        if job.defn.routing != "least_busy":
            return
        if rec.status is Status.RUNNING or (rec.dispatch and not rec.status.final):
            job.running[run_id] = rec.worker
        else:
            job.running.pop(run_id, None)

    # -- planning -------------------------------------------------------------

    def _arm(self, name: str, *, at: float) -> None:
        job = self._jobs.get(name)
        if job is None:
            return
        if job.timer is not None:
            job.timer.cancel()
            job.timer = None
        if job.defn.paused or not job.defn.trigger:
            return
        job.timer = self._wheel.add(at, name)
        self._wake.set()

    async def _drive(self, leadership: Leadership) -> None:
        while True:
            due = [
                (n, j) for n in self._wheel.advance(self._clock.time()) if (j := self._jobs.get(n))
            ]
            if due:
                with contextlib.suppress(NotLeaderError):  # flagged on leadership.lost
                    await self._plan_due(due, leadership)
            nxt = self._wheel.next_deadline()
            wait = 0.5 if nxt is None else min(0.5, max(0.001, nxt - self._clock.time()))
            self._wake.clear()
            await wait_event(self._wake, wait, self._clock)

    async def _plan_due(self, due: list[tuple[str, JobState]], leadership: Leadership) -> None:
        """Plan the jobs due together: their records go out in a few shared transactions."""
        now = self._clock.now()
        small: list[PlanItem] = []
        large: list[tuple[JobState, list[PlanItem]]] = []
        for n, (name, job) in enumerate(due, 1):
            job.timer = None
            if n % 64 == 0:  # hundreds due at once: let runs starting now go first
                await asyncio.sleep(0)
            trigger = job.trigger
            if trigger is None or job.defn.paused:
                continue
            plan = plan_fires(
                trigger,
                last=job.last,
                now=now,
                lookahead_s=self.lookahead_s,
                grace_s=self.grace_s,
                misfire=job.defn.misfire,
                misfire_limit=job.defn.misfire_limit,
            )
            if plan.dropped:
                self._counts["dropped"] += plan.dropped
                log.warning(
                    "job %s: %d missed fires beyond misfire_limit dropped", name, plan.dropped
                )
            if plan.last is None:  # nothing to write; wait for the next fire
                self._armed(job, plan.next_fire)
                continue
            items = [
                PlanItem(job, fire, recs, plan.next_fire) for fire, recs in self._records(job, plan)
            ]
            if sum(len(i.records) for i in items) <= MAX_RECORDS:
                small += items
            else:
                large.append((job, items))
        async with asyncio.TaskGroup() as tg:
            for chunk in chunked(small):
                tg.create_task(self._write_and_arm(chunk, leadership))
            for job, items in large:
                tg.create_task(self._write_large(job, items, leadership))

    async def _write_large(
        self, job: JobState, items: list[PlanItem], leadership: Leadership
    ) -> None:
        """A job with many records at once (misfires, shards): in fire order, chunk by chunk."""
        chunk: list[PlanItem] = []
        for item in items:
            if chunk and sum(len(i.records) for i in chunk) + len(item.records) > MAX_RECORDS:
                if not await self._write_and_arm(chunk, leadership, arm=False):
                    return
                chunk = []
            chunk.append(item)
        await self._write_and_arm(chunk, leadership)

    def _armed(self, job: JobState, next_fire: datetime | None) -> None:
        if next_fire is not None:
            self._arm(job.defn.name, at=next_fire.timestamp() - self.lookahead_s)

    async def _write_and_arm(
        self, chunk: list[PlanItem], leadership: Leadership, *, arm: bool = True
    ) -> bool:
        """Write one chunk; re-arm its jobs (soon again after a failure). True if written."""
        try:
            ok = await self._writer.write(chunk, leadership)
        except NotLeaderError:
            raise
        except KeelError as exc:
            log.warning("planning %d jobs failed, will retry: %s", len(chunk), exc)
            ok = False
        for item in chunk:
            if not ok:
                self._arm(item.job.defn.name, at=self._clock.time() + 0.2)
            elif arm:
                self._armed(item.job, item.next_fire)
        return ok

    def _records(self, job: JobState, plan: Plan) -> list[tuple[datetime, list[Execution]]]:
        busy: dict[str, int] = {}
        for worker in job.running.values():
            busy[worker] = busy.get(worker, 0) + 1
        out, job.counter = plan_records(
            job.defn,
            plan,
            workers=self._handlers(job.defn.handler),
            counter=job.counter,
            busy=busy,
            now=self._clock.time(),
        )
        return out

    async def _retention(self) -> None:
        while True:
            await self._clock.sleep(self.retention_every_s)
            for job in list(self._jobs.values()):
                with contextlib.suppress(KeelError):
                    await apply_retention(self.store, job.defn, now=self._clock.time())

    def statistics(self) -> PlannerStatistics:
        """A snapshot of the counters."""
        return PlannerStatistics(
            leading=self.leading.is_set(), jobs=len(self._jobs), **self._counts
        )

    def __repr__(self) -> str:
        state = "leading" if self.leading.is_set() else "candidate"
        return f"<Planner group={self.group!r} {state} jobs={len(self._jobs)} node={self.node_id}>"


async def _until_lost(work: object, leadership: Leadership) -> None:
    """Run ``work`` until it ends or leadership is lost (then cancel it)."""
    assert asyncio.iscoroutine(work)
    task = asyncio.ensure_future(work)
    lost = asyncio.ensure_future(leadership.lost.wait())
    try:
        await asyncio.wait([task, lost], return_when=asyncio.FIRST_COMPLETED)
    finally:
        lost.cancel()
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    if task.done() and not task.cancelled():
        task.result()
