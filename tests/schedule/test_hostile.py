"""Malformed records under ``jobs/`` while a scheduler runs: skipped, counted, never fatal."""

from __future__ import annotations

import asyncio
import json
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import REGISTRY

import keel
from keel.errors import ValidationError
from keel.registry import Instance
from keel.schedule import (
    Execution,
    JobContext,
    JobDef,
    Scheduler,
    Status,
    get_job,
    get_run,
    list_runs,
    put_job,
    read_jobs,
    trigger_job,
)
from keel.schedule._members import lease_of
from keel.schedule._model import run_name
from keel.store import Store
from tests.schedule._helpers import by_status, finished, running, wait_runs

DEEP = b"[" * 5000 + b"]" * 5000
DEEP_OBJECT = b'{"a":' * 5000 + b"1" + b"}" * 5000
HOSTILE: list[bytes] = [
    b"",
    b"[1,2]",
    b"null",
    b"\xff\xfe not utf-8",
    DEEP,
    DEEP_OBJECT,
    b"9" * 5000,
    b'{"fire":' + b"9" * 400 + b"}",
    b'{"fire":"yesterday"}',
    b'{"run":["x"],"worker":7}',
    b'{"worker":"w","runs":true}',
    b'{"name":"x","trigger":{"interval_s":1e-6}}',
    b'{"name":"x","trigger":{"at":-1}}',
    b'{"name":"x","trigger":{"cron":"0 0 30 2 *"}}',
    b'{"name":"x","trigger":[1]}',
    b'{"job":"x","name":"0000000000001-000","handler":"x","fire":-1}',
    b'{"job":"x","name":"0000000000001-000","handler":"x","fire":1,"backoff":[1]}',
]


def rejected_total() -> float:
    """keel_records_rejected_total{area="schedule"} now."""
    return REGISTRY.get_sample_value("keel_records_rejected_total", {"area": "schedule"}) or 0.0


def _scheduler(store: Store) -> Scheduler:
    return Scheduler(store, ttl_s=2, steal_after_s=0.3, lookahead_s=0.3)


def alive(scheduler: Scheduler) -> bool:
    """The worker's tasks still run and the planner still leads."""
    worker, planner = scheduler.worker, scheduler.planner
    assert worker is not None and planner is not None
    return planner.leading.is_set() and not any(t.done() for t in worker._own)


async def _noop(ctx: JobContext) -> None:
    return None


async def test_malformed_planned_mark_does_not_stop_the_planner(store: Store) -> None:
    """A planned mark that is not {"fire": seconds} is skipped and counted; fires still run."""
    await store.put("jobs/tick/planned", b"[1,2]")
    s = _scheduler(store)
    s.job("tick", interval_s=0.2)(_noop)
    before = rejected_total()
    async with running(s):
        await wait_runs(store, "tick", lambda r: finished(r, 2))
        await store.put("jobs/tick/planned", DEEP)  # while it runs, too
        count = len(await list_runs(store, "tick"))
        await wait_runs(store, "tick", lambda r: len(r) >= count + 2)
        assert alive(s)
    assert rejected_total() >= before + 2


async def test_malformed_definition_is_skipped_and_planned_once_valid(store: Store) -> None:
    """A bad definition stops only its own job; when it becomes valid the job runs."""
    await store.put("jobs/later/def", b'{"name":"later","trigger":{"at":-1}}')
    await store.put("jobs/tiny/def", b'{"name":"tiny","trigger":{"interval_s":1e-6}}')
    s = _scheduler(store)
    s.job("good", interval_s=0.2)(_noop)
    s.handler("later")(_noop)
    s.handler("tiny")(_noop)
    async with running(s):
        await store.put("jobs/other/def", b'{"name":"other","trigger":[' + DEEP + b"]}")
        await wait_runs(store, "good", lambda r: finished(r, 2))
        assert await list_runs(store, "tiny") == []
        await put_job(store, JobDef(name="later", trigger={"interval_s": 0.2}))
        await wait_runs(store, "later", lambda r: finished(r, 1))
        assert alive(s)


async def test_malformed_run_records_do_not_stop_claiming(store: Store) -> None:
    """Unreadable runs, claims and dispatches are skipped; the worker runs a triggered job."""
    s = _scheduler(store)
    s.job("manual")(_noop)
    before = rejected_total()
    async with running(s):
        for n, value in enumerate(HOSTILE):
            await store.put(f"jobs/manual/runs/{n:013d}-000", value)
            await store.put(f"jobs/manual/claims/{n:013d}-000", value)
            await store.put(f"jobs/_dispatch/{n + 1}-1", value)
        [run_id] = await trigger_job(store, "manual")
        runs = await wait_runs(store, "manual", lambda r: finished(r, 1))
        assert [r.id for r in by_status(runs, Status.SUCCEEDED)] == [run_id]
        assert alive(s)
    assert rejected_total() >= before + len(HOSTILE)


async def test_malformed_stored_definition_of_a_declared_job_is_replaced(store: Store) -> None:
    """A declared job whose stored definition is garbage gets the code's definition, and runs."""
    await store.put("jobs/tick/def", b"\xff garbage")
    s = _scheduler(store)
    s.job("tick", interval_s=0.2)(_noop)
    async with running(s):
        await wait_runs(store, "tick", lambda r: finished(r, 1))
    defn, _ = await get_job(store, "tick")
    assert defn.trigger["interval_s"] == 0.2


async def test_readers_skip_or_name_a_malformed_record(store: Store) -> None:
    """Listings skip a malformed record; asking for it by name is one ValidationError."""
    await put_job(store, JobDef(name="ok", trigger={"cron": "0 2 * * *"}))
    await store.put("jobs/bad/def", b'{"name":"bad","trigger":{"interval_s":0}}')
    await store.put("jobs/ok/runs/0000000001000-000", DEEP_OBJECT)
    await store.put("jobs/ok/planned", b'{"fire":1e999}')
    views = await read_jobs(store)
    assert [v.definition.name for v in views] == ["ok"]
    assert await list_runs(store, "ok") == []
    with pytest.raises(ValidationError, match="jobs/bad/def"):
        await get_job(store, "bad")
    with pytest.raises(ValidationError, match="ok/runs/0000000001000-000"):
        await get_run(store, "ok/0000000001000-000")


# -- property: whatever lies under jobs/, a valid job still runs --------------------------

JOB_KEYS = [
    "jobs/h/def",
    "jobs/h/planned",
    "jobs/h/runs/0000000000001-000",
    "jobs/h/claims/active-000",
    "jobs/target/planned",
    "jobs/target/runs/0000000000001-000",
    "jobs/target/runs/9999999999999-000-x",
    "jobs/target/claims/0000000000001-000",
    "jobs/target/claims/active-000",
    "jobs/_dispatch/1-1",
    "jobs/_dispatch/99-7",
]
_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=12,
)
_values = st.one_of(
    st.sampled_from(HOSTILE),
    st.binary(max_size=40),
    _json.map(lambda doc: json.dumps(doc).encode()),
)


async def _scenario(
    url: str, before: list[tuple[str, bytes]], after: list[tuple[str, bytes]]
) -> None:
    async with keel.connect(url) as store:
        await store.delete("jobs/", prefix=True)
        for key, value in before:
            await store.put(key, value)
        s = _scheduler(store)
        s.handler("target")(_noop)
        s.handler("h")(_noop)
        async with running(s):
            for key, value in after:
                await store.put(key, value)
            await put_job(store, JobDef(name="target", trigger={"interval_s": 0.2}))
            await wait_runs(store, "target", lambda r: finished(r, 1), timeout_s=15)
            assert alive(s)


@settings(
    max_examples=15,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    before=st.lists(st.tuples(st.sampled_from(JOB_KEYS), _values), max_size=4),
    after=st.lists(st.tuples(st.sampled_from(JOB_KEYS), _values), max_size=4),
)
def test_hostile_records_never_stop_the_scheduler(
    store_url: str, before: list[tuple[str, bytes]], after: list[tuple[str, bytes]]
) -> None:
    """Arbitrary bytes and JSON under jobs/ before and while it runs: a valid job still runs."""
    asyncio.run(_scenario(store_url, before, after))


async def test_unreadable_claim_holds_its_run_until_deleted(store: Store) -> None:
    """A claim key that cannot be read holds its run (no claim storm); once gone, the run runs."""
    s = _scheduler(store)
    s.job("solo")(_noop)
    s.job("single", overlap="forbid")(_noop)
    async with running(s):
        name = run_name(time.time(), 0, "x1")
        await store.put(f"jobs/solo/claims/{name}", b"\xff not a claim")
        await store.put(f"jobs/solo/runs/{name}", _manual("solo", name).encode())
        await store.put("jobs/single/claims/active-000", b"[]")
        [single] = await trigger_job(store, "single")
        await asyncio.sleep(1.0)  # time for a storm of claim attempts, were there one
        assert (await get_run(store, f"solo/{name}")).status is Status.PENDING
        assert s.worker is not None and s.worker.statistics().claim_conflicts <= 2
        skipped = await get_run(store, single)  # forbid: the shard is held, the fire skipped
        assert skipped.status is Status.SKIPPED and "cannot be read" in skipped.error
        await store.delete(f"jobs/solo/claims/{name}")
        await wait_runs(store, "solo", lambda r: finished(r, 1))
        assert (await get_run(store, f"solo/{name}")).status is Status.SUCCEEDED
        assert alive(s)


def _manual(job: str, name: str) -> Execution:
    return Execution(job=job, name=name, handler=job, fire=time.time(), kind="manual")


def test_worker_lease_is_read_strictly() -> None:
    """A worker's lease metadata must be ASCII digits in range; anything else is no lease."""
    for text, lease in (("42", 42), ("²", None), ("-1", None), ("9" * 30, None), ("", None)):
        worker = Instance(
            service="keel-workers.default", address="h", port=1, metadata={"lease": text}
        )
        assert lease_of(worker) == lease
