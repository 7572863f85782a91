"""Runs the planner dispatches to their worker, on every backend: fencing, clean-up, hand-back."""

from __future__ import annotations

import asyncio
import json

from keel.coord import Session
from keel.resilience import RetrySettings
from keel.schedule import Execution, JobContext, Scheduler, Status, list_runs
from keel.schedule._history import expired, last_planned
from keel.schedule._model import DISPATCH_PREFIX, run_name
from keel.schedule._worker import Worker
from keel.store import Compare, Put, Store
from tests.schedule._helpers import by_status, running, wait_runs


def _scheduler(store: Store, **options: object) -> Scheduler:
    return Scheduler(store, ttl_s=2, steal_after_s=0.5, lookahead_s=0.5, **options)  # type: ignore[arg-type]


async def test_dispatched_runs_need_no_claim_and_are_fenced_by_their_dispatch(store: Store) -> None:
    """A planned run is held by a dispatch key on its worker's lease; the key goes when done."""
    scheduler = _scheduler(store)
    tokens: list[tuple[str, int]] = []

    @scheduler.job("disp.tick", interval_s=0.5)
    async def tick(ctx: JobContext) -> None:
        # the guard holds while the run owns its dispatch: a fenced write succeeds
        done = await ctx.store.txn(
            [ctx.guard()], [Put(f"effects/{ctx.execution_id}", str(ctx.fencing_token).encode())]
        )
        assert done.succeeded
        tokens.append((ctx.execution_id, ctx.fencing_token))

    async with running(scheduler):
        runs = await wait_runs(
            store, "disp.tick", lambda r: sum(bool(x.dispatch) for x in r if x.status.final) >= 4
        )
        worker = scheduler.worker
        assert worker is not None
        # (the first fires may be planned before the worker has registered: claimed as usual)
        done = [r for r in by_status(runs, Status.SUCCEEDED) if r.dispatch]
        assert all(r.dispatch.startswith(DISPATCH_PREFIX) for r in done)
        assert all(r.worker == worker.id and r.attempt == 1 for r in done)
        assert all(r.token > 0 for r in done)
        claims, _ = await store.range("jobs/disp.tick/claims/")
        assert not {kv.key.rsplit("/", 1)[1] for kv in claims} & {r.name for r in done}
        # every dispatch whose runs are all over is deleted (its last run's worker deletes
        # it just after writing the outcome: poll, the two reads are not one snapshot)
        async with asyncio.timeout(10):
            while True:
                live, _ = await store.range(DISPATCH_PREFIX)
                runs = await list_runs(store, "disp.tick")
                open_dispatches = {r.dispatch for r in runs if not r.status.final and r.dispatch}
                if {kv.key for kv in live} <= open_dispatches:
                    break
                await asyncio.sleep(0.1)
        for kv in live:
            value = json.loads(kv.value)
            assert value["worker"] == worker.id and value["runs"] >= 1
            assert kv.lease == worker.session.lease_id
    assert len({token for _, token in tokens}) >= 2, "a token per dispatch, not one for all time"


async def test_retry_of_a_dispatched_run_is_claimed_as_usual(store: Store) -> None:
    scheduler = _scheduler(store)
    calls: list[str] = []

    @scheduler.job(
        "disp.flaky",
        interval_s=0.5,
        retries=2,
        backoff=RetrySettings(base_delay_s=0.05, max_delay_s=0.1, jitter="none"),
    )
    async def flaky(ctx: JobContext) -> None:
        calls.append(ctx.execution_id)
        if len(calls) == 1:
            raise RuntimeError("the first attempt fails")

    async with running(scheduler):
        runs = await wait_runs(
            store, "disp.flaky", lambda r: any(x.failures == 1 and x.status.final for x in r)
        )
    retried = next(r for r in runs if r.failures == 1)
    assert retried.status is Status.SUCCEEDED
    assert retried.dispatch == "" and retried.attempt == 2, "the retry took a claim of its own"
    assert calls.count(retried.id) == 2


async def test_a_worker_hands_back_a_run_it_cannot_run(store: Store) -> None:
    """A run dispatched to a worker without its handler is released, then run by one that has it."""
    async with Session(store, ttl_s=5) as session:
        lacking = Worker(session, {"other": _noop}, worker_id="lacking")
        async with lacking:
            await lacking.loaded.wait()
            fire = 1_700_000_000.0
            rec = Execution(
                job="disp.orphan",
                name=run_name(fire, 0),
                handler="needed",
                fire=fire,
                dispatch=f"{DISPATCH_PREFIX}9-1",
                worker="lacking",
                attempt=1,
            )
            await store.txn(
                [Compare.absent(rec.key)],
                [
                    Put(
                        rec.dispatch,
                        json.dumps({"worker": "lacking", "runs": 1}).encode(),
                        lease=session.lease_id,
                    ),
                    Put(rec.key, rec.encode()),
                ],
            )
            async with asyncio.timeout(10):
                while True:
                    kv = await store.get(rec.key)
                    assert kv is not None
                    now = Execution.decode(kv.value)
                    if not now.dispatch:
                        break
                    await asyncio.sleep(0.05)
            assert now.worker == "" and now.attempt == 0 and now.status is Status.PENDING
            async with asyncio.timeout(10):  # and its dispatch, now empty, is deleted
                while True:
                    if await store.get(rec.dispatch) is None:
                        break
                    await asyncio.sleep(0.05)
        async with Worker(session, {"needed": _noop}, worker_id="able") as able:
            await able.loaded.wait()
            runs = await wait_runs(store, "disp.orphan", lambda r: r[0].status.final)
            assert runs[0].status is Status.SUCCEEDED and runs[0].worker == "able"


async def _noop(ctx: JobContext) -> None:
    return None


def test_retention_keeps_the_newest_scheduled_run() -> None:
    """The newest scheduled run is the planner's progress: never trimmed, even with keep_last=0."""

    def rec(fire: float, tag: str = "") -> Execution:
        return Execution(
            job="j",
            name=run_name(fire, 0, tag),
            handler="h",
            fire=fire,
            status=Status.SUCCEEDED,
            finished_at=fire,
        )

    runs = [rec(1.0), rec(2.0), rec(3.0), rec(9.0, "manual1")]
    gone = {r.name for r in expired(runs, keep_last=0, max_age_s=0.5, now=100.0)}
    assert run_name(3.0, 0) not in gone
    assert {run_name(1.0, 0), run_name(2.0, 0), run_name(9.0, 0, "manual1")} <= gone


async def test_progress_is_the_newest_scheduled_run_or_a_later_resume_mark(store: Store) -> None:
    assert await last_planned(store, "prog") is None
    for fire, tag in ((10.0, ""), (20.0, ""), (99.0, "manual")):
        r = Execution(job="prog", name=run_name(fire, 0, tag), handler="h", fire=fire)
        await store.put(r.key, r.encode())
    newest = await last_planned(store, "prog")
    assert newest is not None and newest.timestamp() == 20.0
    await store.put("jobs/prog/planned", json.dumps({"fire": 50.0}).encode())
    resumed = await last_planned(store, "prog")
    assert resumed is not None and resumed.timestamp() == 50.0
