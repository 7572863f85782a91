"""The console pages' data functions (configs, jobs, coordination, sagas) on every backend."""

from __future__ import annotations

import pytest

from keel.config import ConfigCenter, GrayRule
from keel.console.pages._configs_data import (
    config_detail,
    config_list,
    conflict_message,
    gray_rule_from_form,
    side_by_side,
)
from keel.console.pages._coord_data import coord_overview
from keel.console.pages._jobs_data import job_detail, job_list, run_chart, run_detail
from keel.console.pages._sagas_data import actions_for, saga_detail, saga_list
from keel.coord import Election, Lock, RWLock, Session
from keel.errors import ConflictError, NotFoundError, ValidationError
from keel.saga import SagaRecord, Status, StepRecord, StepState
from keel.schedule import Execution, JobDef, put_job
from keel.schedule import Status as RunStatus
from keel.store import Store


def test_side_by_side_pairs_changed_added_and_removed_lines() -> None:
    """Equal lines pair up; a replaced block pairs line by line, the rest is added/removed."""
    rows = side_by_side("a\nb\nc\nd\n", "a\nB\nc\ne\nf\n")
    kinds = [r.kind for r in rows]
    assert kinds == ["same", "changed", "same", "changed", "added"]
    assert (rows[1].left, rows[1].right) == ("b", "B")
    assert (rows[4].left_no, rows[4].right_no, rows[4].right) == (None, 5, "f")
    assert [r.kind for r in side_by_side("x\ny\n", "x\n")] == ["same", "removed"]


def test_gray_rule_from_form_parses_and_refuses() -> None:
    """The gray form's fields become a rule; an empty rule or bad percent is a ValidationError."""
    rule = gray_rule_from_form("a, b", "zone=eu-*", "25")
    assert rule == GrayRule(ids=("a", "b"), labels={"zone": "eu-*"}, percent=25.0)
    with pytest.raises(ValidationError):
        gray_rule_from_form("", "", "")
    with pytest.raises(ValidationError, match="0-100"):
        gray_rule_from_form("", "", "half")


async def test_configs_list_detail_diff_gray_and_conflict(store: Store) -> None:
    """List, history newest first, diff of any two versions, gray view, and who won a CAS race."""
    center = ConfigCenter(store)
    await center.publish("app.yaml", "a: 1\nb: 2\n", author="ann", expected_version=0)
    await center.publish("app.yaml", "a: 1\nb: 3\n", author="bob", comment="b up")
    await center.publish_gray("app.yaml", "a: 9\nb: 3\n", GrayRule(ids=("c1",)), author="cy")
    listed = await config_list(center)
    assert [(c["name"], c["version"], c["gray"]) for c in listed["configs"]] == [
        ("app.yaml", 2, True)
    ]
    detail = await config_detail(center, "app.yaml")
    assert detail["current"]["version"] == 2 and detail["versions"] == [2, 1]
    assert (detail["diff_a"], detail["diff_b"]) == (1, 2)
    assert [r.kind for r in detail["diff"]] == ["same", "changed"]
    assert detail["gray"]["ids"] == "c1" and detail["gray"]["base_version"] == 2
    same = await config_detail(center, "app.yaml", a=2, b=2)
    assert same["diff_same"]
    with pytest.raises(ConflictError):
        await center.publish("app.yaml", "a: 2\n", expected_version=1)
    message = await conflict_message(center, "app.yaml", 1)
    assert "version 2 by bob" in message and "(b up)" in message
    with pytest.raises(NotFoundError):
        await config_detail(center, "nope.yaml")


def _run(job: str, n: int, status: RunStatus, took: float | None) -> Execution:
    fire = 1_700_000_000.0 + n
    started = fire + 0.01 if took is not None else None
    return Execution(
        job=job,
        name=f"{round(fire * 1000):013d}-000",
        handler=job,
        fire=fire,
        status=status,
        attempt=1,
        worker="w1",
        token=40 + n,
        started_at=started,
        finished_at=None if started is None or took is None else started + took,
        log=f"line {n}\n",
    )


async def test_jobs_list_detail_chart_and_run(store: Store) -> None:
    """Jobs with next fire; a job's runs, stats and chart; a run's log and fencing token."""
    await put_job(store, JobDef(name="report", trigger={"interval_s": 60}))
    await put_job(store, JobDef(name="manual", paused=True))
    runs = [
        _run("report", 1, RunStatus.SUCCEEDED, 0.2),
        _run("report", 2, RunStatus.FAILED, 0.4),
        _run("report", 3, RunStatus.RUNNING, None),
    ]
    for r in runs:
        await store.put(r.key, r.encode())
    listed = await job_list(store)
    by_name = {j["name"]: j for j in listed["jobs"]}
    assert by_name["report"]["next_fire"] and by_name["report"]["last_status"] == "RUNNING"
    assert by_name["manual"]["paused"] and listed["paused_count"] == 1
    detail = await job_detail(store, "report")
    assert [r["status"] for r in detail["runs"]] == ["RUNNING", "FAILED", "SUCCEEDED"]
    assert detail["stats"]["rate"] == "50%" and detail["stats"]["active"] == 1
    assert [b.status for b in detail["chart"].bars] == ["succeeded", "failed", "running"]
    one = await run_detail(store, runs[1].id)
    assert one["log"] == "line 2\n" and one["run"]["token"] == 42 and one["run"]["worker"] == "w1"
    with pytest.raises(NotFoundError):
        await job_detail(store, "nope")


def test_run_chart_scales_to_the_longest_run() -> None:
    """The longest run fills the chart's height; a run without duration gets a visible stub."""
    chart = run_chart(
        [_run("j", 1, RunStatus.SUCCEEDED, 1.0), _run("j", 2, RunStatus.PENDING, None)]
    )
    tall, stub = chart.bars
    assert tall.height == chart.height - 16 and 0 < stub.height < 5
    assert tall.x < stub.x and chart.top == "1.00 s"
    assert run_chart([]).bars == ()


async def test_coord_shows_holders_tokens_and_waiters(store: Store) -> None:
    """A held lock with its token, a reader pair of an rwlock, an election's leader."""
    async with Session(store, ttl_s=10) as s1, Session(store, ttl_s=10) as s2:
        held = await Lock(s1, "db").acquire()
        r1 = await RWLock(s1, "cfg").read()
        r2 = await RWLock(s2, "cfg").read()
        async with Election(s1, "leader").campaign(b"node-1"):
            ctx = await coord_overview(store)
        await held.release()
        await r1.release()
        await r2.release()
    (lock,) = ctx["groups"]["lock"]
    assert lock.name == "db" and lock.token == held.fencing_token and not lock.waiters
    assert lock.holders[0].ttl.endswith("s")
    (rw,) = ctx["groups"]["rwlock"]
    assert len(rw.holders) == 2 and not rw.waiters
    (election,) = ctx["groups"]["election"]
    assert election.holders[0].value == "node-1"


def _saga(saga_id: str, status: Status, *, at: float, abort: bool = False) -> SagaRecord:
    steps = {
        "reserve": StepRecord(state=StepState.DONE, attempts=1),
        "charge": StepRecord(state=StepState.FAILED, attempts=2, error="card declined"),
    }
    return SagaRecord(
        saga="order",
        id=saga_id,
        status=status,
        steps=steps,
        abort=abort,
        created_at=at,
        updated_at=at,
        error="card declined" if status is Status.FAILED else "",
    )


async def test_sagas_list_detail_and_actions(store: Store) -> None:
    """In progress and ended sagas, counts by status, the actions each offers, one saga's steps."""
    for rec in (
        _saga("a", Status.RUNNING, at=1.0),
        _saga("b", Status.FAILED, at=2.0),
        _saga("c", Status.COMMITTED, at=3.0),
    ):
        await store.put(f"sagas/{rec.saga}/{rec.id}", rec.encode())
    await store.put("sagas/order/bad", b"{not json")
    ctx = await saga_list(store)
    assert [s["id"] for s in ctx["active"]] == ["order/a"]
    assert [s["id"] for s in ctx["ended"]] == ["order/c", "order/b"]
    assert ctx["counts"]["failed"] == 1 and len(ctx["rejected"]) == 1
    assert ctx["active"][0]["actions"] == ("abort",) and ctx["ended"][1]["actions"] == ("retry",)
    assert actions_for(_saga("d", Status.RUNNING, at=0, abort=True)) == ()
    only = await saga_list(store, status="failed")
    assert [s["id"] for s in only["ended"]] == ["order/b"] and not only["active"]
    detail = await saga_detail(store, "order/b")
    assert [s["state"] for s in detail["steps"]] == ["done", "failed"]
    assert detail["steps"][1]["error"] == "card declined"


def test_side_by_side_of_large_documents_pairs_lines_in_order() -> None:
    """Past the exact-matching size the middle is paired line by line: same lines stay same."""
    old = "".join(f"key{i}: {i}\n" for i in range(20_000))
    new = "".join(f"key{i}: {i if i % 7 else -i}\n" for i in range(20_000)) + "tail: 1\n"
    rows = side_by_side(old, new)
    assert len(rows) == 20_001 and rows[-1].kind == "added"
    changed = [r.left_no for r in rows if r.kind == "changed"]
    assert changed == [i + 1 for i in range(7, 20_000, 7)]
