"""``keel jobs`` and ``keel worker`` as real processes on a shared SQLite file."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from keel import connect as keel_connect
from keel.schedule import JobDef, put_job

KEEL = [sys.executable, "-m", "keel.cli"]
ENV = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1"}
pytestmark = pytest.mark.slow


def keel(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    """Run ``keel --store URL args...``."""
    return subprocess.run(
        [*KEEL, "--store", url, *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=ENV,
        check=False,
    )


def test_worker_and_jobs_commands(tmp_path: Path) -> None:
    """keel worker runs the demo job; jobs lists it; runs, logs, trigger, pause, resume, rm work."""
    url = f"sqlite:///{tmp_path / 'jobs.db'}"
    worker = subprocess.Popen(
        [*KEEL, "--store", url, "worker", "keel.schedule._demo", "--ttl", "2"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=ENV,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            listing = keel(url, "jobs")
            if "demo.heartbeat" in listing.stdout:
                break
            assert time.monotonic() < deadline, listing
            time.sleep(0.3)
        assert "every 5.0s" in listing.stdout
        trig = keel(url, "jobs", "trigger", "demo.heartbeat", "--args", '{"n": 1}')
        assert trig.returncode == 0, trig.stderr
        run_id = trig.stdout.split()[-1]
        while True:
            runs = keel(url, "jobs", "runs", "demo.heartbeat")
            if "SUCCEEDED" in runs.stdout:
                break
            assert time.monotonic() < deadline, runs
            time.sleep(0.3)
        logs = keel(url, "jobs", "logs", run_id)
        assert logs.returncode == 0 and "heartbeat at" in logs.stdout, logs
        assert keel(url, "jobs", "pause", "demo.heartbeat").returncode == 0
        assert "paused" in keel(url, "jobs").stdout
        assert keel(url, "jobs", "resume", "demo.heartbeat").returncode == 0
        bad = keel(url, "jobs", "trigger", "nope")
        assert bad.returncode == 1 and "no job 'nope'" in bad.stderr  # not found
        bad_args = keel(url, "jobs", "trigger", "demo.heartbeat", "--args", "{")
        assert bad_args.returncode == 2 and "--args is not JSON" in bad_args.stderr
    finally:
        worker.send_signal(signal.SIGTERM)
        out, err = worker.communicate(timeout=20)
    assert worker.returncode == 0, err
    assert "stopped" in out
    assert keel(url, "jobs", "rm", "demo.heartbeat").returncode == 0
    assert "0 jobs" in keel(url, "jobs").stdout


def test_jobs_commands_with_malformed_records(tmp_path: Path) -> None:
    """A malformed record: listings show the rest, asking for it is one line; no traceback."""
    url = f"sqlite:///{tmp_path / 'jobs.db'}"

    async def seed() -> None:
        async with keel_connect(url) as store:
            await put_job(store, JobDef(name="ok", trigger={"cron": "0 2 * * *"}))
            await store.put("jobs/bad/def", b'{"name":"bad","trigger":{"interval_s":1e-6}}')
            await store.put("jobs/deep/def", b"[" * 5000 + b"]" * 5000)
            await store.put("jobs/ok/planned", b'{"fire":"never"}')
            await store.put("jobs/ok/runs/0000000001000-000", b"\xff\xfe")

    asyncio.run(seed())
    listing = keel(url, "jobs")
    assert listing.returncode == 0 and "ok" in listing.stdout and "1 job\n" in listing.stdout
    assert "bad" not in listing.stdout and "jobs/bad/def" in listing.stderr
    runs = keel(url, "jobs", "runs", "ok")
    assert runs.returncode == 0 and "0 runs" in runs.stdout
    for args in (
        ("jobs", "logs", "ok/0000000001000-000"),
        ("jobs", "trigger", "bad"),
        ("jobs", "pause", "deep"),
        ("jobs", "trigger", "ok", "--args", "[" * 5000),
    ):
        done = keel(url, *args)
        assert done.returncode == 2, (args, done)
        assert "Traceback" not in done.stderr and len(done.stderr.splitlines()) <= 3, done.stderr
    for result in (listing, runs):
        assert "Traceback" not in result.stderr
    assert keel(url, "jobs", "rm", "bad").returncode == 0
