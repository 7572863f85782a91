"""The jobs page over HTTP on every backend, and trigger-to-log in Chromium with a real worker."""

from __future__ import annotations

from tests.console._pages_harness import client

from keel.console import Role
from keel.schedule import Execution, JobDef, Status, list_runs, put_job
from keel.store import Store


def _finished(job: str, n: int, status: Status) -> Execution:
    fire = 1_700_000_000.0 + n
    return Execution(
        job=job,
        name=f"{round(fire * 1000):013d}-000",
        handler=job,
        fire=fire,
        status=status,
        attempt=1,
        worker="worker-1",
        token=77,
        started_at=fire,
        finished_at=fire + 0.25,
        log="hello from the run\n",
        error="" if status is Status.SUCCEEDED else "RuntimeError: boom",
    )


async def test_jobs_list_detail_chart_and_run_log(store: Store) -> None:
    """The list shows next fires; a job shows its runs and an SVG chart; a run shows its log."""
    await put_job(store, JobDef(name="report", trigger={"cron": "0 0 * * * *"}))
    ok, bad = _finished("report", 1, Status.SUCCEEDED), _finished("report", 2, Status.FAILED)
    for rec in (ok, bad):
        await store.put(rec.key, rec.encode())
    async with client(store, "vera", Role.VIEWER) as c:
        listed = await c.get("/jobs")
        assert listed.status_code == 200 and "cron 0 0 * * * * UTC" in listed.text
        page = await c.get("/jobs/report")
        assert page.text.count('<rect class="bar') == 2 and "RuntimeError: boom" in page.text
        assert "/jobs/report/trigger" not in page.text  # a viewer gets no action buttons
        run = await c.get(f"/jobs/report/runs/{ok.name}")
        assert "hello from the run" in run.text and ">77<" in run.text and "worker-1" in run.text
        assert (await c.get("/jobs/report/runs/nope")).status_code == 404
        assert (await c.get("/jobs/nope")).status_code == 404
        for path in ("trigger", "pause", "resume"):
            assert (await c.post(f"/jobs/report/{path}")).status_code == 403
    assert len(await list_runs(store, "report")) == 2


async def test_operator_triggers_pauses_and_resumes(store: Store) -> None:
    """Trigger writes one PENDING run per shard with the given args; pause and resume flip state."""
    await put_job(store, JobDef(name="sync", trigger={"interval_s": 3600}, shards=2))
    async with client(store, "olga", Role.OPERATOR) as c:
        page = await c.get("/jobs/sync")
        assert "/jobs/sync/trigger" in page.text and "/jobs/sync/pause" in page.text
        fired = await c.post_json("/jobs/sync/trigger", {"args": '{"day": "2024-01-01"}'})
        assert fired.status_code == 200 and len(fired.json()["runs"]) == 2
        bad = await c.post_json("/jobs/sync/trigger", {"args": "{not json"})
        assert bad.status_code == 400 and "not JSON" in bad.json()["error"]
        assert (await c.post_json("/jobs/nope/trigger")).status_code == 404
        paused = await c.post("/jobs/sync/pause")
        assert paused.status_code == 303
        page = await c.get("/jobs/sync")
        assert '<dd id="job-state">paused</dd>' in page.text and "/jobs/sync/resume" in page.text
        assert (await c.post_json("/jobs/sync/resume")).json()["message"] == "resumed sync"
    runs = await list_runs(store, "sync")
    assert sorted(r.shard for r in runs) == [0, 1]
    assert {r.status for r in runs} == {Status.PENDING} and runs[0].args == {"day": "2024-01-01"}
