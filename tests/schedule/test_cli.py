"""``keel jobs`` and ``keel worker`` as real processes on a shared SQLite file."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

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
        assert bad.returncode == 2 and "no job 'nope'" in bad.stderr
        bad_args = keel(url, "jobs", "trigger", "demo.heartbeat", "--args", "{")
        assert bad_args.returncode == 2 and "--args is not JSON" in bad_args.stderr
    finally:
        worker.send_signal(signal.SIGTERM)
        out, err = worker.communicate(timeout=20)
    assert worker.returncode == 0, err
    assert "stopped" in out
    assert keel(url, "jobs", "rm", "demo.heartbeat").returncode == 0
    assert "0 jobs" in keel(url, "jobs").stdout
