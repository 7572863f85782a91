"""``keel worker MODULE`` from the working directory, and ``keel jobs trigger --wait``."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cli._cli import KEEL, keel_cli, keel_env

JOBS = """
def register(scheduler):
    @scheduler.job("hello")
    async def hello(ctx):
        ctx.log.info("hello from the job")

    @scheduler.job("broken")
    async def broken(ctx):
        raise RuntimeError("boom")
"""


@pytest.fixture(scope="module")
def worker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A keel worker started in a directory holding its module (not on PYTHONPATH)."""
    here = tmp_path_factory.mktemp("jobs")
    (here / "cli_wait_jobs.py").write_text(JOBS)
    url = f"sqlite:///{here / 'k.db'}"
    proc = subprocess.Popen(
        [KEEL, "--store", url, "worker", "cli_wait_jobs", "--ttl", "2"],
        cwd=here,
        env=keel_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 60
        while keel_cli("jobs", "runs", "broken", url=url).code != 0:  # its jobs are stored
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the worker did not store its jobs"
            time.sleep(0.3)
        yield url
    finally:
        proc.terminate()
        proc.communicate(timeout=30)  # reaps it and closes its pipes


def test_worker_imports_from_the_working_directory(worker: str) -> None:
    """keel worker MODULE found MODULE in its working directory and stored its jobs."""
    listed = keel_cli("jobs", "ls", "-o", "json", url=worker)
    assert listed.code == 0
    assert {"hello", "broken"} <= {job["job"] for job in json.loads(listed.out)}


def test_trigger_wait_prints_outcome_and_log(worker: str) -> None:
    """trigger --wait follows the run to its end: exit 0, SUCCEEDED and the run's log."""
    result = keel_cli("jobs", "trigger", "hello", "--wait", "--timeout", "60", url=worker)
    assert result.code == 0, result.err_lines
    out = result.out.decode()
    assert "SUCCEEDED" in out and "hello from the job" in out
    run_id = out.splitlines()[0].removeprefix("triggered ")
    logs = keel_cli("jobs", "logs", run_id, "-o", "json", url=worker)
    record = json.loads(logs.out)
    assert record["status"] == "SUCCEEDED" and "hello from the job" in record["log"]


def test_trigger_wait_json_is_one_document_of_outcomes(worker: str) -> None:
    """trigger --wait -o json prints only a JSON array: each run's status and log."""
    result = keel_cli(
        "jobs", "trigger", "hello", "--wait", "--timeout", "60", "-o", "json", url=worker
    )
    assert result.code == 0, result.err_lines
    (run,) = json.loads(result.out)
    assert run["status"] == "SUCCEEDED" and "hello from the job" in run["log"]


def test_trigger_wait_on_a_failing_run_exits_1(worker: str) -> None:
    """trigger --wait on a run that fails: exit 1, FAILED and the error shown."""
    result = keel_cli("jobs", "trigger", "broken", "--wait", "--timeout", "60", url=worker)
    assert result.code == 1, result.err_lines
    out = result.out.decode()
    assert "FAILED" in out and "boom" in out


def test_trigger_wait_times_out_with_4(tmp_path: Path) -> None:
    """trigger --wait with no worker running: exit 4 after --timeout, naming the job."""
    from tests.cli.test_conventions import LONG_JOB, _prepare

    url = f"sqlite:///{tmp_path / 'k.db'}"
    __import__("asyncio").run(_prepare(url))
    result = keel_cli("jobs", "trigger", LONG_JOB, "--wait", "--timeout", "0.5", url=url)
    assert result.code == 4, result.err_lines
    assert "did not end within" in result.err_lines[-1]
    assert any("no worker runs it yet" in line for line in result.err_lines)
