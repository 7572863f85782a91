"""``keel run module:app --name NAME`` as a real process."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from keel.testing import EtcdCluster, free_port

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]
KEEL = [sys.executable, "-m", "keel.cli"]


@pytest.fixture(params=["sqlite", "etcd"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The store the service process and the CLI share: a SQLite file or an etcd prefix."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'keel.db'}"
    cluster: EtcdCluster = request.getfixturevalue("etcd_cluster")
    return f"{cluster.url}?root=/run-{tmp_path.name}/"


@contextlib.contextmanager
def keel_run(url: str, port: int, *extra: str) -> Iterator[subprocess.Popen[str]]:
    """``keel run`` of the test app as ``echo``; killed and reaped if the test leaves it running."""
    proc = subprocess.Popen(
        [
            *KEEL,
            "--store",
            url,
            "run",
            "tests.service._apps:app",
            "--name",
            "echo",
            "--port",
            str(port),
            *extra,
        ],
        cwd=ROOT,
        env={**os.environ, "KEEL_SERVICE_DRAIN_DELAY_S": "0.1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def instances(url: str) -> list[dict[str, object]]:
    """``keel instances echo --json``: the instances (none yet: exit 1, an empty list here)."""
    listed = subprocess.run(
        [*KEEL, "--store", url, "instances", "echo", "--json"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    if listed.returncode == 1 and ("no instances" in listed.stderr or "no store" in listed.stderr):
        return []  # not registered yet (or the store not yet created)
    assert listed.returncode == 0, listed.stderr
    records: list[dict[str, object]] = json.loads(listed.stdout)
    return records


def test_keel_run_serves_registers_and_exits_cleanly(url: str) -> None:
    """The app serves, is registered, logs JSON, and SIGTERM ends it with exit 0, deregistered."""
    port = free_port()
    with keel_run(url, port) as proc:
        deadline = time.monotonic() + 30
        while not (listed := instances(url)):
            assert time.monotonic() < deadline, "never registered"
            time.sleep(0.1)
        assert f":{port}" in str(listed[0]["url"])
        assert httpx.get(f"http://127.0.0.1:{port}/echo").json()["name"] == "echo"
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    records = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    assert any(r.get("service") == "echo" and "deregistered" in r["event"] for r in records)


def test_keel_run_workers_serve_one_instance_from_two_processes(tmp_path: Path) -> None:
    """``--workers 2``: one registered instance, answered by two processes; SIGTERM exits 0."""
    url = f"sqlite:///{tmp_path / 'keel.db'}"
    port = free_port()
    with keel_run(url, port, "--workers", "2") as proc:
        deadline = time.monotonic() + 30
        pids: set[int] = set()
        while len(pids) < 2:  # the kernel spreads new connections over the two listeners
            assert time.monotonic() < deadline, f"served by {pids} only"
            try:
                with httpx.Client() as http:
                    pids.add(http.get(f"http://127.0.0.1:{port}/echo").json()["pid"])
            except httpx.TransportError:
                time.sleep(0.1)
        assert proc.pid not in pids, "the supervisor serves no request"
        assert len(instances(url)) == 1
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err


def test_keel_run_refuses_a_bad_target(tmp_path: Path) -> None:
    """A target that is not module:attribute exits 2 naming the fix."""
    done = subprocess.run(
        [*KEEL, "--store", f"sqlite:///{tmp_path / 'k.db'}", "run", "nocolon", "--name", "echo"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 2 and "module:attribute" in done.stderr


def test_keel_run_workers_report_an_app_they_cannot_import(tmp_path: Path) -> None:
    """With --workers, the worker's import error is the one line on stderr, exit 2."""
    done = subprocess.run(
        [
            *(*KEEL, "--store", f"sqlite:///{tmp_path / 'k.db'}", "run"),
            *("tests.service.no_such_module:app", "--name", "echo", "--workers", "2"),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith("keel: error: service 'echo' worker 0: "), done.stderr
    assert "cannot import 'tests.service.no_such_module'" in done.stderr
