"""The jobs page over HTTP on every backend, and trigger-to-log in Chromium with a real worker."""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio
from tests._procs import ROOT
from tests.console._pages_harness import (
    add_user,
    audit_actions,
    audit_versions,
    chromium,
    client,
    login,
    serving,
    shot,
)

import keel
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
    assert [a for who, a, _ in await audit_actions(store) if who == "olga"] == [
        "job.resume",
        "job.pause",
        "job.trigger",
    ]
    assert await audit_versions(store, "job.pause") == [({"paused": False}, {"paused": True})]
    assert {r.status for r in runs} == {Status.PENDING} and runs[0].args == {"day": "2024-01-01"}


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def browser() -> AsyncIterator[Any]:
    """One Chromium for the module's browser flows."""
    async with chromium() as opened:
        yield opened


@contextlib.asynccontextmanager
async def worker(store: Store, url: str) -> AsyncIterator[None]:
    """``keel worker tests.console._pages_worker`` in a child process, until its handler is live."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "keel.cli",
        "--store",
        url,
        "worker",
        "tests.console._pages_worker",
        "--ttl",
        "5",
        cwd=ROOT,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        async with asyncio.timeout(30):
            while True:  # bounded by the timeout: the definition and the worker's registration
                workers, _ = await store.range("services/keel-workers.default/")
                if workers and await store.get("jobs/greet/def") is not None:
                    break
                assert proc.returncode is None, "the worker exited"
                await asyncio.sleep(0.1)
        yield
    finally:
        if proc.returncode is None:
            proc.terminate()
        async with asyncio.timeout(20):
            await proc.communicate()


@pytest.mark.slow
@pytest.mark.asyncio(loop_scope="module")
@pytest.mark.parametrize("backend", ["sqlite", "etcd"])
async def test_browser_operator_triggers_a_job_and_reads_its_log(
    browser: Any, store_url: str, backend: str
) -> None:
    """In Chromium: an operator triggers a job that a worker process runs, sees the run appear
    with its log and fencing token, pauses and resumes it; the audit log has each action."""
    async with keel.connect(store_url) as store, serving(store) as url, worker(store, store_url):
        await add_user(store, "olga", Role.OPERATOR)
        context = await browser.new_context(viewport={"width": 1280, "height": 800})
        page = await context.new_page()
        page.on("dialog", lambda dialog: asyncio.ensure_future(dialog.accept()))
        await login(page, url, "olga")
        await page.goto(f"{url}/jobs")
        await page.wait_for_selector("#jobs >> text=greet")
        await shot(page, f"jobs-{backend}")
        await page.click("#jobs >> text=greet")
        await page.fill("#trigger-args", '{"who": "console"}')
        await page.click("#trigger-button")
        await page.wait_for_selector("text=triggered greet")
        run_link = page.locator("#runs a.mono").first
        try:
            await page.wait_for_selector("#runs .badge.succeeded", timeout=20_000)
        except Exception as exc:  # say what the store and the page held
            runs = [(r.status.value, r.worker) for r in await list_runs(store, "greet")]
            live = await page.get_attribute("html", "data-live-ready")
            raise AssertionError(
                f"runs {runs}, live {live}: {await page.inner_html('#runs')}"
            ) from exc
        await page.wait_for_selector("#chart rect.bar")
        await shot(page, f"job-{backend}")
        await run_link.click()
        await page.wait_for_selector("#run-log")
        assert "hello, console (token " in await page.inner_text("#run-log")
        assert await page.inner_text("#run-status") == "succeeded"
        await shot(page, f"job-run-{backend}")
        await page.go_back()
        await page.click("button:has-text('Pause')")
        await page.wait_for_selector("text=paused greet")
        assert await page.inner_text("#job-state") == "paused"
        await page.click("button:has-text('Resume')")
        await page.wait_for_selector("text=resumed greet")
        await context.close()
        (run,) = await list_runs(store, "greet")
        assert run.status is Status.SUCCEEDED and run.token > 0 and run.worker
        actions = await audit_actions(store)
        done = {a for who, a, t in actions if who == "olga" and t == "job/greet"}
        assert {"job.trigger", "job.pause", "job.resume"} <= done


async def test_malformed_job_records_are_skipped_or_named(store: Store) -> None:
    """A malformed definition leaves the list (others stay); its page names the record."""
    await put_job(store, JobDef(name="good", trigger={"interval_s": 60}))
    await store.put("jobs/bad/def", b'{"name": "bad", "trigger": {"cron": 5}}')
    await store.put("jobs/good/runs/1700000000000-000", b"{not json")
    async with client(store, "vera", Role.VIEWER) as c:
        listed = await c.get("/jobs")
        assert listed.status_code == 200 and "/jobs/good" in listed.text
        assert "/jobs/bad" not in listed.text
        assert (await c.get("/jobs/good")).status_code == 200
        bad = await c.get("/jobs/bad")
        assert bad.status_code == 404 and "jobs/bad/def" in bad.text
