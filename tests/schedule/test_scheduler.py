"""Planner and workers in one process, on every backend: exactly once, policies, API."""

from __future__ import annotations

import asyncio
import time
from collections import Counter

import pytest

from keel.errors import NotFoundError, ValidationError
from keel.resilience import RetrySettings
from keel.schedule import (
    JobContext,
    JobDef,
    Scheduler,
    Status,
    delete_job,
    get_run,
    job_statistics,
    list_runs,
    pause_job,
    put_job,
    read_jobs,
    resume_job,
    trigger_job,
)
from keel.store import Put, Store
from tests.schedule._helpers import by_status, finished, running, wait_runs

FAST = RetrySettings(base_delay_s=0.05, max_delay_s=0.1, jitter="none")


def _scheduler(store: Store, **options: object) -> Scheduler:
    return Scheduler(store, ttl_s=2, steal_after_s=0.5, lookahead_s=0.5, **options)  # type: ignore[arg-type]


async def test_two_workers_run_every_fire_once(store: Store) -> None:
    """Two processes' worth of schedulers: each fire of each job runs exactly once."""
    seen: Counter[tuple[str, float]] = Counter()
    schedulers = [_scheduler(store) for _ in range(2)]
    for s in schedulers:
        for n in range(5):

            @s.job(f"tick.{n}", interval_s=0.5)
            async def tick(ctx: JobContext) -> None:
                seen[(ctx.job_id, ctx.fire_time.timestamp())] += 1
                assert ctx.fencing_token > 0 and ctx.attempt == 1

    async with running(*schedulers):
        await asyncio.sleep(3.0)
    assert seen and max(seen.values()) == 1
    for n in range(5):
        runs = await list_runs(store, f"tick.{n}")
        done = by_status(runs, Status.SUCCEEDED)
        assert len(done) >= 4
        assert {(r.job, r.fire) for r in done} <= set(seen)
        assert {r.worker for r in runs if r.worker} <= {s.worker.id for s in schedulers if s.worker}


async def test_delayed_task_runs_once_after_its_delay(store: Store) -> None:
    """enqueue(delay_s) runs the handler once with its args, not before the delay."""
    got: list[tuple[object, float]] = []
    s = _scheduler(store)

    @s.handler("send_email")
    async def send(ctx: JobContext) -> None:
        got.append((ctx.args, time.time()))
        ctx.log.info("sent to %s", ctx.args["to"])

    async with running(s):
        asked = time.time()
        run_id = await s.enqueue("send_email", {"to": "a@example.com"}, delay_s=0.4)
        job, _, _ = run_id.partition("/")
        runs = await wait_runs(store, job, lambda r: finished(r, 1))
    assert [a for a, _ in got] == [{"to": "a@example.com"}]
    assert got[0][1] >= asked + 0.4
    record = await get_run(store, run_id)
    assert record.status is Status.SUCCEEDED and "sent to a@example.com" in record.log
    assert runs[0].lateness_s is not None


async def test_retry_then_success_and_retries_exhausted(store: Store) -> None:
    """Failures are retried with backoff; when retries run out the run is FAILED with the error."""
    calls: Counter[str] = Counter()
    s = _scheduler(store)

    @s.handler("flaky")
    async def flaky(ctx: JobContext) -> None:
        calls[ctx.execution_id] += 1
        if ctx.args == "always" or ctx.attempt < 3:
            raise RuntimeError(f"boom {ctx.attempt}")

    async with running(s):
        ok = await s.enqueue("flaky", "twice", retries=3, backoff=FAST)
        bad = await s.enqueue("flaky", "always", retries=1, backoff=FAST)
        await wait_runs(store, "flaky", lambda r: finished(r, 2))
    good, failed = await get_run(store, ok), await get_run(store, bad)
    assert (good.status, good.attempt, good.failures) == (Status.SUCCEEDED, 3, 2)
    assert (failed.status, failed.attempt) == (Status.FAILED, 2)
    assert "RuntimeError: boom 2" in failed.error and "Traceback" in failed.traceback
    assert calls[ok] == 3 and calls[bad] == 2


async def test_timeout_cancels_the_handler(store: Store) -> None:
    """A handler over its timeout is cancelled and the run is TIMED_OUT."""
    cancelled = asyncio.Event()
    s = _scheduler(store)

    @s.handler("slow")
    async def slow(ctx: JobContext) -> None:
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    async with running(s):
        run_id = await s.enqueue("slow", timeout_s=0.3)
        await wait_runs(store, "slow", lambda r: finished(r, 1))
    record = await get_run(store, run_id)
    assert record.status is Status.TIMED_OUT and cancelled.is_set()
    assert record.duration_s is not None and 0.25 < record.duration_s < 2


async def test_a_handler_that_swallows_its_timeout_is_still_timed_out(store: Store) -> None:
    """Catching the timeout's cancellation and returning does not turn the run into a success."""
    s = _scheduler(store)

    @s.handler("stubborn")
    async def stubborn(ctx: JobContext) -> None:
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            ctx.log.info("caught the cancellation and returned")

    async with running(s):
        run_id = await s.enqueue("stubborn", timeout_s=0.3)
        await wait_runs(store, "stubborn", lambda r: finished(r, 1))
        # The worker goes on after uncancelling its own task: a second run works.
        second = await s.enqueue("stubborn", timeout_s=0.3)
        await wait_runs(store, "stubborn", lambda r: finished(r, 2))
    for rid in (run_id, second):
        record = await get_run(store, rid)
        assert record.status is Status.TIMED_OUT, record
        assert "timed out after 0.3s" in record.error


@pytest.mark.parametrize("overlap", ["forbid", "replace"])
async def test_overlap_policies(store: Store, overlap: str) -> None:
    """forbid skips fires while a run is active; replace cancels it; never two run at once."""
    active = 0
    most = 0
    s = _scheduler(store)

    @s.job("long", interval_s=0.5, overlap=overlap)  # type: ignore[arg-type]
    async def long(ctx: JobContext) -> None:
        nonlocal active, most
        active += 1
        most = max(most, active)
        try:
            await asyncio.sleep(1.2)
        finally:
            active -= 1

    async with running(s):
        wanted = Status.SKIPPED if overlap == "forbid" else Status.CANCELLED
        runs = await wait_runs(
            store,
            "long",
            lambda r: len(by_status(r, wanted)) >= 2 and len(by_status(r, Status.RUNNING)) <= 1,
        )
    assert most == 1
    if overlap == "forbid":
        assert "still running" in by_status(runs, Status.SKIPPED)[0].error
    else:
        assert "replaced" in by_status(runs, Status.CANCELLED)[0].error


async def test_shards_each_run_once_per_fire(store: Store) -> None:
    """A 4-shard job over 3 workers: every (fire, shard) runs once, with its parameter."""
    seen: Counter[tuple[float, int, str | None]] = Counter()
    schedulers = [_scheduler(store) for _ in range(3)]
    for s in schedulers:

        @s.job("sharded", interval_s=0.5, shards=4, shard_params=("a", "b", "c", "d"))
        async def part(ctx: JobContext) -> None:
            assert ctx.shard_total == 4
            seen[(ctx.fire_time.timestamp(), ctx.shard_index, ctx.shard_param)] += 1

    async with running(*schedulers):
        await asyncio.sleep(2.5)
    assert max(seen.values()) == 1
    fires = {f for f, _, _ in seen}
    complete = [
        f
        for f in fires
        if {(i, p) for g, i, p in seen if g == f} == set(zip(range(4), "abcd", strict=True))
    ]
    assert len(complete) >= 3


async def test_api_pause_resume_trigger_delete(store: Store) -> None:
    """Jobs made through the API run on a worker with the handler; pause, trigger, delete work."""
    hits: list[tuple[str, object]] = []
    s = _scheduler(store)

    @s.handler("report")
    async def report(ctx: JobContext) -> None:
        hits.append((ctx.job_id, ctx.args))

    await put_job(store, JobDef(name="nightly", handler="report", trigger={"interval_s": 0.5}))
    async with running(s):
        await wait_runs(store, "nightly", lambda r: finished(r, 2))
        await pause_job(store, "nightly")
        await asyncio.sleep(1.2)  # lookahead runs drain
        count = len(await list_runs(store, "nightly"))
        await asyncio.sleep(1.0)
        assert len(await list_runs(store, "nightly")) == count, "paused: nothing new planned"
        ids = await trigger_job(store, "nightly", args={"by": "hand"})
        await wait_runs(
            store, "nightly", lambda r: any(x.id == ids[0] and x.status.final for x in r)
        )
        assert ("nightly", {"by": "hand"}) in hits
        await resume_job(store, "nightly")
        await wait_runs(store, "nightly", lambda r: len(r) > count + 1)
        views = await read_jobs(store)
        assert [v.definition.name for v in views] == ["nightly"]
        assert views[0].workers and not views[0].unhandled
        stats = await job_statistics(store, "nightly")
        assert stats.succeeded >= 3 and stats.success_rate == 1.0
    assert await delete_job(store, "nightly") > 0
    with pytest.raises(NotFoundError):
        await trigger_job(store, "nightly")


async def test_unhandled_job_is_reported(store: Store) -> None:
    """A job whose handler no live worker has is shown as unhandled; its runs wait PENDING."""
    await put_job(store, JobDef(name="orphan", trigger={"interval_s": 0.5}))
    s = _scheduler(store)

    @s.handler("other")
    async def other(ctx: JobContext) -> None:
        return None

    async with running(s):
        runs = await wait_runs(store, "orphan", lambda r: len(r) >= 2)
        views = {v.definition.name: v for v in await read_jobs(store)}
    assert views["orphan"].unhandled
    assert all(r.status is Status.PENDING for r in runs)


async def test_stale_claim_cannot_commit(store: Store) -> None:
    """A handler's guard() stops working once its claim is gone (the fencing token is stale)."""
    results: list[bool] = []
    gate = asyncio.Event()
    s = _scheduler(store)

    @s.handler("fenced")
    async def fenced(ctx: JobContext) -> None:
        await store.delete(ctx.claim_key)  # as if its lease had ended
        r = await store.txn([ctx.guard()], [Put("effects/fenced", b"x")])
        results.append(r.succeeded)
        gate.set()

    async with running(s):
        await s.enqueue("fenced")
        async with asyncio.timeout(10):
            await gate.wait()
        await asyncio.sleep(0.3)
    assert results[0] is False
    assert await store.get("effects/fenced") is None
    assert s.worker is not None and s.worker.statistics().fenced >= 1


async def test_bad_job_options() -> None:
    """Two triggers at once, or an invalid cron, are refused naming the problem."""
    import keel

    async with keel.connect("memory://") as store:
        s = _scheduler(store)
        with pytest.raises(ValidationError, match="one of cron, interval_s, at"):
            s.job("x", cron="* * * * *", interval_s=1)
        with pytest.raises(ValidationError, match="field minute has '99'"):
            s.job("x", cron="99 * * * *")
