"""``Scheduler``: jobs declared in code, and a process that runs a worker and a planner candidate.

::

    scheduler = Scheduler(store, group="default")

    @scheduler.job("reports.daily", cron="0 2 * * *", tz="Asia/Shanghai", shards=4, retries=3)
    async def daily(ctx: JobContext) -> None: ...

    await scheduler.run()          # until cancelled or SIGTERM

Each process that runs the scheduler is a worker for the handlers it has and
a candidate for planning its group; one of them plans, all of them work.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from datetime import datetime
from typing import Any

from keel._signals import on_stop_signal
from keel.clock import SYSTEM_CLOCK, Clock
from keel.coord import Session
from keel.errors import ConflictError, SessionLostError, ValidationError
from keel.resilience import RetrySettings
from keel.schedule._admin import enqueue, put_job
from keel.schedule._codec import job_decoder, read
from keel.schedule._context import Handler
from keel.schedule._model import JobDef, Misfire, Overlap, Routing, check_job_name, def_key
from keel.schedule._planner import Planner
from keel.schedule._triggers import CronTrigger, IntervalTrigger, date_trigger
from keel.schedule._worker import Worker
from keel.store import Store

__all__ = ["Scheduler"]

log = logging.getLogger("keel.schedule")


def make_trigger_dict(
    *,
    cron: str | None,
    tz: str,
    interval_s: float | None,
    start: datetime | None,
    end: datetime | None,
    jitter_s: float,
    at: datetime | str | float | None,
    name: str,
) -> dict[str, Any]:
    """The stored trigger form of the options given (at most one kind; none: run by hand only).

    Raises:
        ValidationError: more than one of cron, interval_s and at, or a bad one
            (an interval under the minimum, a cron that never fires, a naive ``at``...).
    """
    given = [
        k for k, v in (("cron", cron), ("interval_s", interval_s), ("at", at)) if v is not None
    ]
    if len(given) > 1:
        raise ValidationError(f"job {name!r}: give one of cron, interval_s, at; not {given}")
    if cron is not None:
        return CronTrigger(cron, tz).to_dict()
    if interval_s is not None:
        return IntervalTrigger(interval_s, start=start, end=end, jitter_s=jitter_s).to_dict()
    if at is not None:
        return date_trigger(at).to_dict()
    return {}


class Scheduler:
    """Jobs declared in code plus the process that runs them.

    Args:
        store: the store.
        group: the scheduler group (planned by one elected planner).
        ttl_s: session TTL: a dead worker's runs are re-run after this long.
        worker: run a worker in :meth:`run`.
        planner: stand for planner in :meth:`run`.
        lookahead_s, grace_s: see :class:`Planner`; the worker also claims its own runs
            up to ``lookahead_s`` before they are due (:class:`Worker` ``preclaim_s``).
        max_concurrency, steal_after_s: see :class:`Worker`.
        worker_id: this worker's id (default: host-pid-random).
        clock: time source.
    """

    def __init__(
        self,
        store: Store,
        *,
        group: str = "default",
        ttl_s: int = 10,
        worker: bool = True,
        planner: bool = True,
        lookahead_s: float = 1.5,
        grace_s: float = 1.0,
        max_concurrency: int = 64,
        steal_after_s: float = 1.0,
        worker_id: str | None = None,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self.store = store
        self.group = group
        self.ttl_s = ttl_s
        self._run_worker = worker
        self._run_planner = planner
        self._lookahead_s = lookahead_s
        self._grace_s = grace_s
        self._max_concurrency = max_concurrency
        self._steal_after_s = steal_after_s
        self._worker_id = worker_id
        self._clock = clock
        self.handlers: dict[str, Handler] = {}
        self.jobs: dict[str, JobDef] = {}
        self.worker: Worker | None = None
        self.planner: Planner | None = None
        self.ready = asyncio.Event()
        self._running: asyncio.Task[Any] | None = None
        self._stop_requested = False
        """Set once definitions are stored and the worker has loaded the runs."""

    def handler(self, name: str) -> Callable[[Handler], Handler]:
        """Register an async function as handler ``name`` (for delayed tasks and API-made jobs)."""
        check_job_name(name)

        def register(fn: Handler) -> Handler:
            self.handlers[name] = fn
            return fn

        return register

    def job(
        self,
        name: str,
        *,
        cron: str | None = None,
        tz: str = "UTC",
        interval_s: float | None = None,
        start: datetime | None = None,
        end: datetime | None = None,
        jitter_s: float = 0.0,
        at: datetime | str | float | None = None,
        shards: int = 1,
        shard_params: tuple[str, ...] = (),
        args: Any = None,
        retries: int = 0,
        backoff: RetrySettings | None = None,
        timeout_s: float | None = None,
        overlap: Overlap = "allow",
        misfire: Misfire = "once",
        misfire_limit: int = 100,
        routing: Routing = "round_robin",
        keep_last: int = 100,
        max_age_s: float | None = None,
    ) -> Callable[[Handler], Handler]:
        """Declare a job and its handler (stored when :meth:`run` starts).

        Give at most one of ``cron`` (with ``tz``), ``interval_s`` (with
        ``start``/``end``/``jitter_s``) and ``at`` (an aware datetime, an ISO
        8601 string with a zone, or Unix epoch seconds); none makes a job fired
        only by hand. ``interval_s`` is at least ``MIN_INTERVAL_S`` (0.1 s) and
        a cron must fire at some date. The other options are :class:`JobDef`'s.

        Raises:
            ValidationError: a bad option, naming it.
        """
        trigger = make_trigger_dict(
            cron=cron,
            tz=tz,
            interval_s=interval_s,
            start=start,
            end=end,
            jitter_s=jitter_s,
            at=at,
            name=name,
        )
        defn = JobDef(
            name=name,
            group=self.group,
            trigger=trigger,
            shards=shards,
            shard_params=shard_params,
            args=args,
            retries=retries,
            backoff=backoff or RetrySettings(),
            timeout_s=timeout_s,
            overlap=overlap,
            misfire=misfire,
            misfire_limit=misfire_limit,
            routing=routing,
            keep_last=keep_last,
            max_age_s=max_age_s,
        )

        def register(fn: Handler) -> Handler:
            self.jobs[name] = defn
            self.handlers[defn.handler] = fn
            return fn

        return register

    async def enqueue(
        self, handler: str, args: Any = None, *, delay_s: float = 0.0, **options: Any
    ) -> str:
        """Queue a delayed task; see :func:`keel.schedule.enqueue`. Returns the execution id."""
        return await enqueue(
            self.store, handler, args, delay_s=delay_s, clock=self._clock, **options
        )

    async def store_definitions(self) -> None:
        """Write the jobs declared in code (an unchanged definition is left as is, paused kept)."""
        for defn in self.jobs.values():
            for _ in range(10):  # processes starting together race; the last read wins
                kv = await self.store.get(def_key(defn.name))
                stored = None if kv is None else read(kv.key, kv.value, job_decoder(defn.name))
                wanted = defn  # a malformed stored definition is replaced by the code's
                if stored is not None:
                    wanted = defn.with_changes(paused=stored.paused)
                    if stored == wanted:
                        break
                try:
                    await put_job(self.store, wanted, expect_revision=kv.mod_revision if kv else 0)
                    break
                except ConflictError:
                    continue

    async def run(self, *, handle_signals: bool = True, handle_sigterm: bool | None = None) -> None:
        """Store the definitions, then work and stand for planner until stopped.

        Returns normally after :meth:`stop`, SIGTERM or SIGINT (running
        handlers are cancelled; their runs re-run elsewhere). The signals are
        shared with every other keel run loop of the process (a
        :class:`~keel.service.Service` beside it stops on the same signal).
        Cancelling the task that runs it still raises ``CancelledError``.

        A lost session (the store unreachable for longer than the TTL) is
        replaced by a new one: running handlers are cancelled (their runs
        re-run elsewhere), and the process goes on.

        Args:
            handle_signals: stop on SIGTERM and SIGINT (False: only on :meth:`stop`).
            handle_sigterm: the former name of ``handle_signals``.
        """
        if handle_sigterm is not None:
            handle_signals = handle_sigterm
        self._running = current = asyncio.current_task()
        self._stop_requested = False
        try:
            with contextlib.ExitStack() as signals:
                if handle_signals:
                    signals.enter_context(on_stop_signal(lambda _sig: self.stop()))
                await self.store_definitions()
                while True:
                    try:
                        await self._run_once()
                    except* SessionLostError as group:
                        log.warning(
                            "scheduler session lost, starting a new one: %s", group.exceptions
                        )
                    await self._clock.sleep(0.5)
        except asyncio.CancelledError:
            if not self._stop_requested or current is None:
                raise
            current.uncancel()  # the cancellation was our own stop: end cleanly
            log.info("scheduler %s stopped", self.group)
        finally:
            self._running = None

    def stop(self) -> None:
        """Ask :meth:`run` to end (what SIGTERM and SIGINT do); it then returns normally."""
        if self._running is not None and not self._stop_requested:
            self._stop_requested = True
            self._running.cancel()

    async def _run_once(self) -> None:
        async with contextlib.AsyncExitStack() as stack:
            session = await stack.enter_async_context(
                Session(self.store, ttl_s=self.ttl_s, clock=self._clock)
            )
            if self._run_worker:
                self.worker = await stack.enter_async_context(
                    Worker(
                        session,
                        self.handlers,
                        group=self.group,
                        worker_id=self._worker_id,
                        max_concurrency=self._max_concurrency,
                        steal_after_s=self._steal_after_s,
                        preclaim_s=self._lookahead_s,
                        clock=self._clock,
                    )
                )
                await self.worker.loaded.wait()
            self.ready.set()
            async with asyncio.TaskGroup() as tg:
                if self._run_planner:
                    self.planner = Planner(
                        session,
                        group=self.group,
                        lookahead_s=self._lookahead_s,
                        grace_s=self._grace_s,
                        # with a worker here, one watch of jobs/ serves both
                        feed=self.worker.listen if self.worker is not None else None,
                        clock=self._clock,
                    )
                    tg.create_task(self.planner.run(), name="keel-planner")
                tg.create_task(_raise_when_lost(session), name="keel-session-watch")

    def __repr__(self) -> str:
        return (
            f"<Scheduler group={self.group!r} jobs={len(self.jobs)} "
            f"handlers={len(self.handlers)} worker={self.worker!r} planner={self.planner!r}>"
        )


async def _raise_when_lost(session: Session) -> None:
    reason = await session.lost
    raise SessionLostError(f"session lost: {reason}")
