"""``Coordinator``: starts sagas, drives the ones it owns, takes over those whose owner is lost.

::

    coordinator = Coordinator(store, sagas=[order_saga])
    async with coordinator:                       # or: await coordinator.run()
        saga_id = await coordinator.start("order", {"sku": "a1"}, key="order-123")
        outcome = await coordinator.wait(saga_id)

Ownership is a key on the coordinator's session lease
(``saga-run/owner/<saga id>``); its create_revision is the fencing token every
transition compares. ``saga-run/active/<saga id>`` exists while a saga runs or
compensates: a coordinator that starts scans it, and watches ``saga-run/`` for
owner keys that vanish (a lost session) and active markers put without an
owner (a saga started elsewhere, or retried by an operator).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import socket
import uuid
from collections.abc import Sequence
from types import TracebackType
from typing import Any, Self

import msgspec

from keel._records import Rejected, check_depth, decode, report
from keel._signals import on_stop_signal
from keel.clock import SYSTEM_CLOCK, Clock
from keel.coord import Session
from keel.errors import CompactedError, RetryableError, SessionLostError, ValidationError
from keel.events import Bus, Relay
from keel.saga._admin import wait_for
from keel.saga._announce import DEFAULT_TOPIC, announcer
from keel.saga._definition import Saga
from keel.saga._metrics import saga_metrics
from keel.saga._model import (
    ACTIVE,
    ACTIVE_PREFIX,
    OWNER_PREFIX,
    Outcome,
    SagaRecord,
    Status,
    StepRecord,
    StepState,
    active_key,
    orphans,
    owner_key,
    record_decoder,
    record_key,
    split_id,
)
from keel.saga._runner import Fenced, Runner
from keel.saga._spans import current, end_saga_span, saga_span
from keel.store import Compare, Delete, Get, KeyValue, Put, Store

__all__ = ["DEFAULT_MAX_INPUT_BYTES", "Coordinator"]

log = logging.getLogger("keel.saga")

DEFAULT_MAX_INPUT_BYTES = 64 * 1024
"""A saga's input is stored in its record; larger inputs are refused (store a reference)."""
_MAX_KEY = 200


class Coordinator:
    """Starts, drives and recovers sagas; every process running :meth:`run` takes part.

    Args:
        store: the store.
        sagas: the sagas this process knows (it drives only these).
        ttl_s: session TTL: a dead coordinator's sagas are taken over after about this long.
        concurrency: sagas driven at once by this process (more wait their turn).
        max_input_bytes: the largest input :meth:`start` accepts (JSON-encoded).
        coordinator_id: this process's name in records (default host-pid-random).
        rescan_s: how often to look for sagas without an owner besides watching for them.
        clock: time source.
        events: a bus to publish every transition to, through its outbox (each
            event written in the transition's own transaction; this coordinator
            runs the outbox relay). None: no events.
        events_topic: the topic of those events (keyed by saga id).
    """

    def __init__(
        self,
        store: Store,
        sagas: Sequence[Saga],
        *,
        ttl_s: int = 10,
        concurrency: int = 64,
        max_input_bytes: int = DEFAULT_MAX_INPUT_BYTES,
        coordinator_id: str | None = None,
        rescan_s: float = 30.0,
        clock: Clock = SYSTEM_CLOCK,
        events: Bus | None = None,
        events_topic: str = DEFAULT_TOPIC,
    ) -> None:
        self.store = store
        self.events = events
        self._announce = announcer(events, events_topic) if events is not None else None
        self.sagas: dict[str, Saga] = {}
        for saga in sagas:
            if not isinstance(saga, Saga):
                raise ValidationError(f"sagas must be Saga objects, not {saga!r}")
            if saga.name in self.sagas:
                raise ValidationError(f"two sagas are named {saga.name!r}: rename one")
            self.sagas[saga.name] = saga
        if concurrency < 1:
            raise ValidationError(f"concurrency must be >= 1, got {concurrency!r}")
        self.ttl_s = ttl_s
        self.max_input_bytes = max_input_bytes
        self.rescan_s = rescan_s
        self.id = coordinator_id or f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self._clock = clock
        self._slots = asyncio.Semaphore(concurrency)
        self._session: Session | None = None
        self._tasks: asyncio.TaskGroup | None = None
        self._driving: set[str] = set()
        self._running: asyncio.Task[None] | None = None
        self._stop_requested = False
        self._background: asyncio.Task[None] | None = None
        self.ready = asyncio.Event()

    # -- the API -------------------------------------------------------------

    async def start(self, name: str, input: Any = None, *, key: str | None = None) -> str:
        """Start saga ``name`` with ``input`` (JSON); return its id (``"<name>/<id>"``).

        With ``key``, starting is idempotent: the same saga name and key
        return the same saga id, whatever its input or state (one txn creates
        the record only if absent). Started while :meth:`run` is not running
        here, the saga waits for a coordinator that runs.

        Raises:
            ValidationError: an unknown saga name, an input that is not JSON
                or is over ``max_input_bytes``, a bad key; nothing is written.
        """
        saga = self._saga(name)
        running = self._session is not None and self._tasks is not None
        rec = self._new_record(saga, self._local_id(name, key), input, self.id if running else "")
        saga_id = f"{name}/{rec.id}"
        rkey, akey = record_key(saga_id), active_key(saga_id)
        session, tasks = self._session, self._tasks
        ops = [Put(rkey, rec.encode()), Put(akey, b"")]
        if self._announce is not None:
            ops.append(self._announce(saga_id, rec))
        if session is not None and tasks is not None:
            ops.append(Put(owner_key(saga_id), self.id.encode(), lease=session.lease_id))
        res = await self.store.txn([Compare.absent(rkey)], ops)
        if res.succeeded and session is not None and tasks is not None:
            self._spawn(
                tasks,
                Runner(
                    self.store, saga, rec, res.revision, res.revision, self._clock, self._announce
                ),
            )
        return saga_id

    async def wait(self, saga_id: str, timeout: float | None = None) -> Outcome:  # noqa: ASYNC109 (the API asked for; asyncio.timeout inside)
        """Wait until the saga ends; return COMMITTED, COMPENSATED or FAILED.

        Raises:
            NotFoundError: no such saga.
            TimeoutError: ``timeout`` seconds passed first.
        """
        split_id(saga_id)
        async with asyncio.timeout(timeout):
            rec = await wait_for(self.store, saga_id, lambda r: r.status not in ACTIVE)
        return Outcome(rec.status.value)

    # -- running ---------------------------------------------------------------

    async def run(self, *, handle_signals: bool = True) -> None:
        """Drive sagas and take over lost ones until :meth:`stop`, SIGTERM or SIGINT.

        A lost session is replaced by a new one (the sagas of the old one are
        taken over by whoever claims them first, this process included).
        """
        self._running = current = asyncio.current_task()
        self._stop_requested = False
        try:
            with contextlib.ExitStack() as signals:
                if handle_signals:
                    signals.enter_context(on_stop_signal(lambda _sig: self.stop()))
                while True:
                    try:
                        await self._run_once()
                    except* (SessionLostError, RetryableError, CompactedError) as group:
                        log.warning(
                            "saga coordinator: session lost or store down, starting over: %s",
                            group.exceptions,
                        )
                    await self._clock.sleep(0.5)
        except asyncio.CancelledError:
            if not self._stop_requested or current is None:
                raise
            current.uncancel()
            log.info("saga coordinator %s stopped", self.id)
        finally:
            self._running = None
            self.ready.clear()

    def stop(self) -> None:
        """Ask :meth:`run` to end; it then returns normally (sagas continue elsewhere or later)."""
        if self._running is not None and not self._stop_requested:
            self._stop_requested = True
            self._running.cancel()

    async def __aenter__(self) -> Self:
        self._background = asyncio.create_task(self.run(handle_signals=False), name="keel-saga")
        ready = asyncio.create_task(self.ready.wait())
        await asyncio.wait({ready, self._background}, return_when=asyncio.FIRST_COMPLETED)
        ready.cancel()
        if self._background.done():
            await self._background  # raises what ended it
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
        if self._background is not None:
            await self._background

    async def _run_once(self) -> None:
        async with Session(self.store, ttl_s=self.ttl_s, clock=self._clock) as session:
            try:
                async with asyncio.TaskGroup() as tasks:
                    self._session, self._tasks = session, tasks
                    tasks.create_task(_raise_when_lost(session), name="keel-saga-session")
                    if self.events is not None:  # moves the transitions' outbox to the bus
                        relay = Relay(self.store, self.events, session=session)
                        tasks.create_task(relay.run(), name="keel-saga-relay")
                    await self._recover(session, tasks)
            finally:
                self._session = self._tasks = None
                self._driving.clear()

    async def _recover(self, session: Session, tasks: asyncio.TaskGroup) -> None:
        """Claim every active saga without an owner, then every one that loses it later."""
        revision = await self._scan(session, tasks)
        async with self.store.watch("saga-run/", prefix=True, start_revision=revision + 1) as watch:
            self.ready.set()
            tasks.create_task(self._rescan(session, tasks), name="keel-saga-rescan")
            async for event in watch:
                batch = [event]
                while (more := watch.get_nowait()) is not None:
                    batch.append(more)
                for saga_id in orphans(batch):
                    await self._claim(session, tasks, saga_id)

    async def _scan(self, session: Session, tasks: asyncio.TaskGroup) -> int:
        """Claim the active sagas that have no owner now; return the revision read at."""
        active, revision = await self.store.range(ACTIVE_PREFIX)
        owned, _ = await self.store.range(OWNER_PREFIX, revision=revision)
        taken = {kv.key[len(OWNER_PREFIX) :] for kv in owned}
        for kv in active:
            saga_id = kv.key[len(ACTIVE_PREFIX) :]
            if saga_id not in taken:
                await self._claim(session, tasks, saga_id)
        return revision

    async def _rescan(self, session: Session, tasks: asyncio.TaskGroup) -> None:
        """A safety net behind the watch: scan again every ``rescan_s``."""
        while True:
            await self._clock.sleep(self.rescan_s)
            await self._scan(session, tasks)

    async def _claim(self, session: Session, tasks: asyncio.TaskGroup, saga_id: str) -> None:
        """Take ownership of ``saga_id`` if it is active, ours to run, and without an owner."""
        name = saga_id.split("/", 1)[0]
        saga = self.sagas.get(name)
        if saga is None or saga_id in self._driving:
            return
        okey = owner_key(saga_id)
        res = await self.store.txn(
            [Compare.absent(okey), Compare.version(active_key(saga_id), ">", 0)],
            [Put(okey, self.id.encode(), lease=session.lease_id), Get(record_key(saga_id))],
        )
        if not res.succeeded:
            return
        kv = res.results[1]
        if not isinstance(kv, KeyValue):
            return
        rec = decode("saga", kv.key, kv.value, record_decoder)
        if isinstance(rec, Rejected):
            report(rec)  # kept owned (and skipped) until this session ends
            return
        if rec.status not in ACTIVE or rec.steps.keys() != set(saga.step_names):
            report(
                Rejected("saga", kv.key, "its steps differ from the code's saga or it has ended")
            )
            return
        log.info("saga %s: taken over by %s", saga_id, self.id)
        self._spawn(
            tasks,
            Runner(
                self.store, saga, rec, kv.mod_revision, res.revision, self._clock, self._announce
            ),
            resumed=True,
        )

    def _spawn(self, tasks: asyncio.TaskGroup, runner: Runner, *, resumed: bool = False) -> None:
        """Drive ``runner`` in a task: traced under the caller's span, or alone when ``resumed``."""
        saga_id = f"{runner.rec.saga}/{runner.rec.id}"
        drive = self._drive(runner, saga_id, resumed)
        try:
            tasks.create_task(drive, name=f"keel-saga-{saga_id}")
        except RuntimeError:  # the session is ending: its lease goes, and the saga is recovered
            drive.close()
            return
        self._driving.add(saga_id)

    async def _drive(self, runner: Runner, saga_id: str, resumed: bool) -> None:
        metrics = saga_metrics()
        name = runner.rec.saga
        span = saga_span(runner.rec, resumed=resumed)
        outcome, failure = "stopped", None
        async with self._slots:
            metrics.running.labels(name).inc()
            try:
                with current(span):
                    status = await runner.drive()
                outcome = status.value
                metrics.outcomes.labels(name, status.value).inc()
                if status is Status.FAILED:
                    log.error(
                        "saga %s FAILED (an operator must act): %s", saga_id, runner.rec.error
                    )
            except Fenced:
                outcome = "fenced"
                log.info("saga %s: no longer owned here, left to its new owner", saga_id)
            except Exception as exc:  # one saga's store error must not end the others: released
                outcome, failure = "released", exc
                log.exception("saga %s: stopped by an error; released for recovery", saga_id)
                await self._release(saga_id, runner.token)
            finally:
                end_saga_span(span, outcome, runner.rec.error, failure)
                metrics.running.labels(name).dec()
                self._driving.discard(saga_id)

    async def _release(self, saga_id: str, token: int) -> None:
        """Drop our owner key so the saga is claimed again (here or elsewhere)."""
        guard = [Compare.create_revision(owner_key(saga_id), "==", token)]
        while True:  # until done, or the session ends (which drops the key anyway)
            await self._clock.sleep(1.0)  # no tight loop on an error that persists
            with contextlib.suppress(RetryableError):
                await self.store.txn(guard, [Delete(owner_key(saga_id))])
                return

    # -- input -------------------------------------------------------------------

    def _saga(self, name: object) -> Saga:
        saga = self.sagas.get(name) if isinstance(name, str) else None
        if saga is None:
            known = sorted(self.sagas) or "none"
            raise ValidationError(
                f"no saga named {name!r} (known: {known}): declare it in Coordinator(sagas=[...])"
            )
        return saga

    @staticmethod
    def _local_id(name: str, key: str | None) -> str:
        if key is None:
            return uuid.uuid4().hex
        if not isinstance(key, str) or not 0 < len(key) <= _MAX_KEY:
            raise ValidationError(f"key must be a string of 1-{_MAX_KEY} characters, got {key!r}")
        return "k" + hashlib.sha256(f"{name}\0{key}".encode()).hexdigest()[:31]

    def _new_record(self, saga: Saga, local: str, input: Any, owner: str) -> SagaRecord:
        try:
            size = len(msgspec.json.encode(input))
            check_depth(input, 16)
        except (TypeError, ValueError, OverflowError) as exc:
            raise ValidationError(
                f"saga {saga.name!r}: the input is not JSON data ({exc}): pass dicts, lists, "
                "strings, numbers, booleans and None"
            ) from exc
        if size > self.max_input_bytes:
            raise ValidationError(
                f"saga {saga.name!r}: the input is {size} bytes, over the limit of "
                f"{self.max_input_bytes}: store large data elsewhere and pass a reference"
            )
        now = self._clock.time()
        steps = {n: StepRecord() for n in saga.step_names}
        for step in saga.groups[0]:  # "started" of the first group folded into the creation
            steps[step.name] = StepRecord(state=StepState.STARTED, started_at=now)
        return SagaRecord(
            saga=saga.name,
            id=local,
            status=Status.RUNNING,
            input=input,
            steps=steps,
            owner=owner,
            created_at=now,
            updated_at=now,
        )

    def __repr__(self) -> str:
        return f"<Coordinator {self.id} sagas={sorted(self.sagas)} driving={len(self._driving)}>"


async def _raise_when_lost(session: Session) -> None:
    reason = await session.lost
    raise SessionLostError(f"session lost: {reason}")
