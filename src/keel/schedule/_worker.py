"""The worker: follows executions, claims due ones under its session lease, runs them.

Every change of a run is one transaction with compares (built in
``_transitions``): a claim creates the claim key on our session lease, and its
create_revision is the run's fencing token; the outcome is written only if the
claim still has that token, so a worker that lost its lease (killed, or
SIGSTOPped past its TTL) never writes a stale outcome. A dead worker's claim
ends with its lease, and the run is claimed again elsewhere with a new token.

Who claims first: each due execution has an owner among the live workers
having its handler (the scheduler's routing hint if that worker is alive,
else rendezvous hashing); the owner claims at once, the others only after
``steal_after_s``, so workers rarely race, and a stalled owner is covered.

Dispatched runs: the planner may assign a run to its owner as it writes it
(``Execution.dispatch`` names a key on the owner's lease, see the planner).
The owner then runs it when due without claiming: the dispatch key is its
claim and that key's create_revision its fencing token. It finishes the run
with a compare on that token, and deletes the key once every run it holds
is finished. If the owner dies, the key ends with its lease and the runs are
claimed (with a claim key of their own) by the others.

Claiming ahead: the owner claims a run of an ``overlap="allow"`` job up to
``preclaim_s`` before it is due and then starts the handler on its own timer,
so the store's write latency is not part of the run's lateness. A run claimed
ahead is RUNNING with no ``started_at`` until it finishes; if its worker dies
before the start, the claim ends with the lease and another worker runs it.
(Runs of ``forbid``/``replace`` jobs are claimed when due: claiming earlier
would test for overlap against a run that may still end in time.)
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import socket
import uuid
from collections import deque
from collections.abc import Callable, Coroutine
from types import TracebackType
from typing import Any, Self

from keel.clock import SYSTEM_CLOCK, Clock, wait_event
from keel.coord import Session
from keel.errors import KeelError, ValidationError
from keel.observe import capability_metrics
from keel.schedule._batch import Batcher
from keel.schedule._codec import read, run_decoder
from keel.schedule._context import Handler
from keel.schedule._execute import Ended, HandlerRuns
from keel.schedule._members import owner_of, registered_members
from keel.schedule._model import DISPATCH_PREFIX, JOBS_PREFIX, Execution, Status, parse_key
from keel.schedule._outcome import COUNTERS, WorkerStatistics, outcome_record
from keel.schedule._table import RunTable, claim_run
from keel.schedule._transitions import (
    Txn,
    claim_txn,
    dispatch_end_txn,
    finish_txn,
    release_txn,
    replace_target,
    replace_txn,
    skip_txn,
)
from keel.schedule.wheel import Timer, TimingWheel
from keel.store import Event, EventType, KeyValue

__all__ = ["Worker"]

log = logging.getLogger("keel.schedule.worker")
_TIMEOUT = "\x00timeout "  # wheel items: run keys, or this prefix + run key for a timeout
_STOP_GRACE_S = 5.0  # how long a stopping worker waits for cancelled runs to clean up
_START_EARLY_S = 0.05  # a dispatched run's task starts this early and sleeps until due


class Worker:
    """Runs executions of ``group`` whose handler it has; ``async with Worker(...)``.

    Args:
        session: the session whose lease carries claims and the registration.
        handlers: handler name → async function taking a :class:`JobContext`.
        group: the scheduler group.
        worker_id: a unique id (default: host-pid-random).
        max_concurrency: handlers running at once at most.
        steal_after_s: how long a non-owner waits before claiming a due run.
        preclaim_s: how long before it is due the owner claims a run (0: when due).
        log_limit: characters of captured log kept per run.
        clock: time source.
    """

    def __init__(
        self,
        session: Session,
        handlers: dict[str, Handler],
        *,
        group: str = "default",
        worker_id: str | None = None,
        max_concurrency: int = 64,
        steal_after_s: float = 1.0,
        preclaim_s: float = 1.0,
        log_limit: int = 16_384,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        if max_concurrency < 1:
            raise ValidationError(f"max_concurrency {max_concurrency!r}: use at least 1")
        self.session = session
        self.store = session.store
        self.handlers = dict(handlers)
        self.group = group
        self.id = worker_id or f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.max_concurrency = max_concurrency
        self.steal_after_s = steal_after_s
        self.preclaim_s = max(0.0, preclaim_s)
        self.log_limit = log_limit
        self._clock = clock
        self._rng = random.Random()
        self._table = RunTable(self.id)
        self._runs = self._table.runs  # run key -> (mod_revision, record)
        self._timers = TimingWheel[str](tick_s=0.005, start=clock.time())
        self._timer_of: dict[str, Timer[str]] = {}
        self._ready: deque[str] = deque()
        self._busy: set[str] = set()  # run keys being claimed or run here
        self._cool: dict[str, float] = {}  # run key -> not before (after a fruitless attempt)
        self._handler_runs = HandlerRuns(
            self.id,
            self.handlers,
            self.store,
            log_limit=log_limit,
            clock=clock,
            arm_timeout=self._arm_timeout,
        )
        self._running = self._handler_runs.running
        self._own: list[asyncio.Task[None]] = []
        self._attempts: set[asyncio.Task[None]] = set()  # runs, and writes no run waits for
        self._batcher = Batcher(self.store)
        self._live: tuple[str, ...] = ()
        self._tasks: asyncio.TaskGroup | None = None
        self._wake = asyncio.Event()
        self._listeners: list[Callable[[Event], None]] = []
        self.loaded = asyncio.Event()
        """Set once the initial listing of executions is loaded."""
        self._counts = dict.fromkeys(COUNTERS, 0)

    # -- lifetime ------------------------------------------------------------

    async def __aenter__(self) -> Self:
        self._tasks = asyncio.TaskGroup()
        await self._tasks.__aenter__()
        self._own = [
            self._tasks.create_task(self._batcher.run(), name=f"keel-worker-commits-{self.id}"),
            self._tasks.create_task(self._membership(), name=f"keel-worker-members-{self.id}"),
            self._tasks.create_task(self._follow(), name=f"keel-worker-follow-{self.id}"),
            self._tasks.create_task(self._drive(), name=f"keel-worker-timers-{self.id}"),
        ]
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._tasks is None:
            return
        # Runs are cancelled once and given a moment to finish their clean-up
        # (a handler's fenced write in a ``finally`` is then refused by the
        # store, not cut off); they live outside the task group, so a failing
        # sibling (the registration, when the session is lost) cannot cancel
        # them a second time.
        attempts = list(self._attempts)
        for task in [*self._own, *attempts]:
            task.cancel()
        try:
            if attempts:
                await asyncio.wait(attempts, timeout=_STOP_GRACE_S)
        finally:
            await self._tasks.__aexit__(None, None, None)
            self._tasks = None

    # -- membership ----------------------------------------------------------

    async def _membership(self) -> None:
        """Register in the registry and keep the list of live peers."""
        async for live in registered_members(
            self.session, self.group, self.id, self.handlers, self._clock
        ):
            self._live = live
            self._wake.set()

    def _owner(self, execution: Execution, key: str) -> str:
        return owner_of(key, execution.hint, self._live, self.id)

    # -- following the store -------------------------------------------------

    def listen(self, callback: Callable[[Event], None]) -> Callable[[], None]:
        """Also pass every change under ``jobs/`` this worker sees to ``callback``.

        A planner in the same process follows the jobs through this instead of
        a watch of its own, so each change is received and decoded once.

        Returns:
            a function that stops the calls.
        """
        self._listeners.append(callback)
        return lambda: self._listeners.remove(callback)

    async def _follow(self) -> None:
        """List every execution and claim, then apply each change as it happens."""
        kvs, revision = await self.store.range(JOBS_PREFIX)
        for kv in kvs:
            self._apply_put(kv)
        kvs.clear()  # this frame lives as long as the watch: do not keep the listing
        self.loaded.set()
        async with self.store.watch(
            JOBS_PREFIX, prefix=True, start_revision=revision + 1
        ) as events:
            async for event in events:
                self._apply(event)
                while (more := events.get_nowait()) is not None:
                    self._apply(more)

    def _apply(self, event: Event) -> None:
        self._apply_own(event)
        for listener in self._listeners:
            listener(event)

    def _apply_own(self, event: Event) -> None:
        if event.type is EventType.PUT:
            self._apply_put(event.kv)
            return
        key = event.kv.key
        parsed = parse_key(key)
        if parsed is None:
            return
        _, kind, _ = parsed
        if kind == "runs":
            entry = self._runs.get(key)
            if entry is not None and self._table.held(entry[1]) and key not in self._busy:
                self._done_with(entry[1].dispatch)  # deleted before it ran
            self._forget(key)
        elif kind == "claims" or key.startswith(DISPATCH_PREFIX):
            for run in self._table.drop_claim(key):
                self._schedule(run)  # orphaned, or waiting on an overlap

    def _apply_put(self, kv: KeyValue) -> None:
        parsed = parse_key(kv.key)
        if parsed is None:
            return
        _, kind, _ = parsed
        if kind == "claims" or kv.key.startswith(DISPATCH_PREFIX):
            for run in self._table.put_claim(kv, dispatch=kind != "claims"):
                self._schedule(run)
            return
        if kind != "runs":
            return
        rec = read(kv.key, kv.value, run_decoder(kv.key))
        if rec is None:  # rejected (and reported): forget what it was, until it is valid again
            self._forget(kv.key)
            return
        if rec.status.final or rec.handler not in self.handlers:
            if self._table.held(rec):
                self._release(kv.key, kv.mod_revision, rec)
            self._forget(kv.key)
            return
        self._table.track(kv.key, kv.mod_revision, rec)
        if rec.cancel:
            self._handler_runs.replace(kv.key)
        self._schedule(kv.key)

    def _forget(self, key: str) -> None:
        self._table.forget(key)
        self._cool.pop(key, None)
        timer = self._timer_of.pop(key, None)
        if timer is not None:
            timer.cancel()

    def _schedule(self, key: str) -> None:
        """Arm the run's timer for when this worker should try to claim it."""
        entry = self._runs.get(key)
        old = self._timer_of.pop(key, None)
        if old is not None:
            old.cancel()
        if entry is None or key in self._busy:
            return
        rec = entry[1]
        at = max(rec.due, self._cool.pop(key, 0.0))
        if self._table.held(rec):
            at -= _START_EARLY_S
        elif not self._table.claimable(rec):
            return
        elif rec.status is Status.PENDING:
            if self._owner(rec, key) != self.id:
                at += self.steal_after_s
            elif rec.overlap == "allow":
                at -= self.preclaim_s
        self._timer_of[key] = self._timers.add(at, key)
        self._wake.set()

    # -- timers and claiming -------------------------------------------------

    async def _drive(self) -> None:
        """Advance the wheel on the clock; start due claims as capacity allows."""
        assert self._tasks is not None
        while True:
            for key in self._timers.advance(self._clock.time()):
                if key.startswith(_TIMEOUT):
                    self._handler_runs.expire(key.removeprefix(_TIMEOUT))
                    continue
                self._timer_of.pop(key, None)
                self._ready.append(key)
            while self._ready and len(self._busy) < self.max_concurrency:
                key = self._ready.popleft()
                if key in self._runs and key not in self._busy:
                    self._busy.add(key)
                    self._spawn(self._attempt(key))
            nxt = self._timers.next_deadline()
            wait = 0.25 if nxt is None else min(0.25, max(0.0, nxt - self._clock.time()))
            self._wake.clear()
            await wait_event(self._wake, wait if wait > 0 else 0.001, self._clock)

    def _arm_timeout(self, at: float, key: str) -> Timer[str]:
        timer = self._timers.add(at, _TIMEOUT + key)
        self._wake.set()
        return timer

    async def _attempt(self, key: str) -> None:
        try:
            entry = self._runs.get(key)
            if entry is not None and self._table.held(entry[1]):
                rec = entry[1]
                early = rec.due - self._clock.time()
                if early > 0:  # a sleep is a precise loop timer
                    await self._clock.sleep(early)
                await self._run(key, rec, self._table.token(rec))
            elif entry is not None and self._table.claimable(entry[1]):
                await self._claim_and_run(key, *entry)
        except (KeelError, OSError) as exc:
            log.warning("worker %s: execution %s: %s", self.id, key, exc)
            self._cool_down(key)
        finally:
            self._busy.discard(key)
            self._running.pop(key, None)
            self._schedule(key)
            self._wake.set()  # capacity freed: start what is ready

    async def _claim_and_run(self, key: str, mod_revision: int, rec: Execution) -> None:
        (compares, ops), running, reads = claim_txn(
            key,
            mod_revision,
            rec,
            worker=self.id,
            lease=self.session.lease_id,
            now=self._clock.time(),
        )
        result = await self._batcher.submit(compares, ops, reads)
        if not result.succeeded:
            self._counts["claim_conflicts"] += 1
            # what changed reaches us through the watch (a new record, the claim's
            # deletion), and that re-arms the run at once; until then, no retry storm
            self._cool_down(key)
            held = result.results[0]
            holder = claim_run(held) if isinstance(held, KeyValue) else ""
            if holder != "" and holder != rec.name:
                await self._overlap(key, mod_revision, rec, holder)
            return
        self._counts["claims"] += 1
        token = result.revision
        self._table.track(key, result.revision, running)
        early = rec.due - self._clock.time()
        if early > 0:  # claimed ahead: start on time (a sleep is a precise loop timer)
            await self._clock.sleep(early)
        await self._run(key, running, token)

    def _cool_down(self, key: str) -> None:
        """Try ``key`` again only after ``steal_after_s`` unless its record or claim changes."""
        self._cool[key] = self._clock.time() + max(0.1, self.steal_after_s)

    async def _overlap(
        self, key: str, mod_revision: int, rec: Execution, holder: str | None
    ) -> None:
        """Run ``holder`` (None: unreadable) holds the shard: skip this run (forbid) or replace."""
        if rec.overlap == "forbid" and rec.status is Status.PENDING:
            now = self._clock.time()
            holder = holder or "a run whose claim cannot be read"
            done = await self.store.txn(*skip_txn(key, mod_revision, rec, holder, now))
            self._counts["skipped"] += done.succeeded
        elif rec.overlap == "replace" and holder is not None:
            other_key = replace_target(key, holder)
            other = self._runs.get(other_key)
            if other is not None and not other[1].cancel:
                await self.store.txn(*replace_txn(other_key, *other))

    async def _run(self, key: str, rec: Execution, token: int) -> None:
        ended = await self._handler_runs.run(key, rec, token)
        # Runs due at the same instant wake in one loop turn: let them all start
        # before this one spends time on its outcome (a handler that returned at
        # once would otherwise delay the start of every run behind it).
        await asyncio.sleep(0)
        await self._finish(key, ended, token)

    async def _finish(self, key: str, ended: Ended, token: int) -> None:
        rec = ended.record
        final, counter = outcome_record(
            rec,
            token=token,
            outcome=ended.outcome,
            error=ended.error,
            trace=ended.traceback,
            captured=ended.log,
            now=self._clock.time(),
            rng=self._rng,
        )
        txn, final = finish_txn(key, rec, final, token)
        result = await self._batcher.submit(*txn)
        if result.succeeded and key in self._runs:  # not to be started again meanwhile
            self._table.track(key, result.revision, final)
        if rec.dispatch:
            self._done_with(rec.dispatch)
        metrics = capability_metrics()
        if result.succeeded:
            self._counts[counter] += 1
            metrics.run_finished(rec.job, self.group, counter, final.lateness_s, final.duration_s)
        else:
            self._counts["fenced"] += 1
            metrics.run_finished(rec.job, self.group, "fenced", None, None)
            log.warning(
                "worker %s: outcome %s of %s not written: its claim (token %d) is gone",
                self.id,
                ended.outcome.value,
                rec.id,
                token,
            )

    # -- dispatched runs ------------------------------------------------------

    def _done_with(self, dispatch: str) -> None:
        """One run of our dispatch is over; delete the key after the last one."""
        token = self._table.done_with(dispatch)
        if token is not None:
            self._submit_quietly(dispatch_end_txn(dispatch, token))

    def _release(self, key: str, mod_revision: int, rec: Execution) -> None:
        """A run dispatched to us that we cannot run (no handler): hand it back to be claimed."""
        txn = release_txn(key, mod_revision, rec, self._table.token(rec))
        self._done_with(rec.dispatch)
        self._submit_quietly(txn)

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        """Start a run attempt or a write no run waits for (see ``__aexit__``)."""
        task = asyncio.ensure_future(work)
        self._attempts.add(task)
        task.add_done_callback(self._spawned_done)

    def _spawned_done(self, task: asyncio.Task[None]) -> None:
        self._attempts.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("worker %s: %r", self.id, task.exception(), exc_info=task.exception())

    def _submit_quietly(self, txn: Txn) -> None:
        """Send a write nobody waits for (cancelled with the worker, like the runs)."""

        async def send() -> None:
            try:
                await self._batcher.submit(*txn)
            except (KeelError, OSError) as exc:
                log.warning("worker %s: %s", self.id, exc)

        if self._tasks is not None:
            self._spawn(send())

    # -- reporting -----------------------------------------------------------

    def statistics(self) -> WorkerStatistics:
        """A snapshot of the counters."""
        return WorkerStatistics(
            worker_id=self.id,
            tracked=len(self._runs),
            running=len(self._running),
            **self._counts,
        )

    def __repr__(self) -> str:
        return (
            f"<Worker {self.id} group={self.group!r} handlers={len(self.handlers)} "
            f"tracked={len(self._runs)} running={len(self._running)} live={len(self._live)}>"
        )
