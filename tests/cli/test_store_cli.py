"""The ``keel`` command line, run as a real process against sqlite and etcd."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from keel.testing import EtcdCluster

KEEL = [sys.executable, "-m", "keel.cli"]


def keel(
    url: str, *args: str, input_bytes: bytes | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``keel --store URL args...`` and return the finished process."""
    env = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1"}
    env.pop("KEEL_STORE", None)
    return subprocess.run(
        [*KEEL, "--store", url, *args],
        capture_output=True,
        text=input_bytes is None,
        input=input_bytes,
        timeout=60,
        env=env,
        check=False,
    )  # type: ignore[call-overload, no-any-return]


@pytest.fixture(params=["sqlite", "etcd"])
def cli_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A store URL that outlives one command: a SQLite file or the test etcd."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'cli.db'}"
    cluster: EtcdCluster = request.getfixturevalue("etcd_cluster")
    return f"{cluster.url}?root=/cli-{tmp_path.name}/"


def test_put_get_ls_rm(cli_url: str) -> None:
    """put prints a revision, get prints the value, ls lists it, rm deletes it."""
    put = keel(cli_url, "store", "put", "config/app", "hello")
    assert put.returncode == 0, put.stderr
    assert put.stdout.startswith("revision ")
    got = keel(cli_url, "store", "get", "config/app")
    assert got.returncode == 0 and got.stdout == "hello"
    record = json.loads(keel(cli_url, "store", "get", "config/app", "--json").stdout)
    assert record["value"] == "hello" and record["version"] == 1
    listed = keel(cli_url, "store", "ls", "config/", "--json")
    assert [record["key"] for record in json.loads(listed.stdout)] == ["config/app"]
    removed = keel(cli_url, "store", "rm", "config/", "--prefix")
    assert removed.stdout.strip() == "deleted 1"
    missing = keel(cli_url, "store", "get", "config/app")
    assert missing.returncode == 1 and "not found" in missing.stderr


def test_put_from_stdin_keeps_bytes(cli_url: str) -> None:
    """--file - reads the value from stdin byte for byte."""
    blob = bytes(range(256))
    put = keel(cli_url, "store", "put", "blob", "--file", "-", input_bytes=blob)
    assert put.returncode == 0, put.stderr
    got = keel(cli_url, "store", "get", "blob", input_bytes=b"")
    assert got.stdout == blob


def test_leases_from_the_cli(cli_url: str) -> None:
    """lease grant / ttl / revoke work, and a revoked lease is reported unknown."""
    granted = keel(cli_url, "store", "lease", "grant", "60")
    assert granted.returncode == 0, granted.stderr
    lease_id = granted.stdout.split()[1]
    put = keel(cli_url, "store", "put", "eph", "x", "--lease", lease_id)
    assert put.returncode == 0, put.stderr
    ttl = keel(cli_url, "store", "lease", "ttl", lease_id)
    assert "of 60s" in ttl.stdout and "eph" in ttl.stdout
    assert keel(cli_url, "store", "lease", "revoke", lease_id).returncode == 0
    gone = keel(cli_url, "store", "lease", "ttl", lease_id)
    assert gone.returncode == 1 and "not found" in gone.stderr


def test_status_reports_the_backend(cli_url: str) -> None:
    """status --json names the backend and counts keys."""
    keel(cli_url, "store", "put", "a", "1")
    status = json.loads(keel(cli_url, "store", "status", "--json").stdout)
    assert status["backend"] == cli_url.split(":")[0]
    assert status["keys"] == 1 and status["revision"] >= 2


def test_watch_replays_from_a_revision(cli_url: str) -> None:
    """watch --rev replays history and stops after --count events."""
    first = keel(cli_url, "store", "put", "w/1", "one")
    rev = first.stdout.split()[1]
    keel(cli_url, "store", "put", "w/2", "two")
    keel(cli_url, "store", "rm", "w/1")
    out = keel(cli_url, "store", "watch", "w/", "--prefix", "--rev", rev, "--count", "3")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert [line.split()[:2] for line in lines] == [
        ["PUT", "w/1"],
        ["PUT", "w/2"],
        ["DELETE", "w/1"],
    ]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--store", "mysql://x", "store", "ls"], "unknown backend"),
        (["--store", "etcd://localhost", "store", "ls"], "has no port"),
        (["--store", "sqlite://rel.db", "store", "ls"], "sqlite:///relative/path.db"),
        (["store", "put", "/keel/abs", "v"], "outside the store's root"),
        (["store", "lease", "revoke", "zz"], "not a number"),
        (["store", "rm", "", "--prefix"], "--yes"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(tmp_path: Path, args: list[str], message: str) -> None:
    """Bad input gives one line naming the problem and the fix, exit 2, and writes nothing."""
    url = f"sqlite:///{tmp_path / 'bad.db'}"
    assert keel(url, "store", "put", "seed", "1").returncode == 0  # read-only commands need a store
    env = {**os.environ, "KEEL_STORE": url, "COLUMNS": "300"}
    proc = subprocess.run([*KEEL, *args], capture_output=True, text=True, timeout=60, env=env)
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert message in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert proc.stdout == ""


def test_value_over_the_limit_is_refused(tmp_path: Path) -> None:
    """A value over 1 MiB is refused with the limit named, and nothing is written."""
    url = f"sqlite:///{tmp_path / 'big.db'}"
    big = b"x" * (1024 * 1024 + 1)
    proc = keel(url, "store", "put", "big", "--file", "-", input_bytes=big)
    assert proc.returncode == 2 and b"over the limit" in proc.stderr
    assert keel(url, "store", "get", "big").returncode == 1


def test_unreachable_etcd_fails_fast_with_the_endpoint(tmp_path: Path) -> None:
    """An etcd URL with nothing listening gives exit 3 (unavailable) naming the endpoint."""
    from keel.testing import free_port

    port = free_port()
    proc = keel(f"etcd://127.0.0.1:{port}?timeout_s=1", "store", "ls")
    assert proc.returncode == 3
    assert f"127.0.0.1:{port}" in proc.stderr


def test_keel_up_runs_and_stops_cleanly_on_sigint(tmp_path: Path) -> None:
    """keel up shows the store, then Ctrl-C (SIGINT) stops it with exit 0 and no lease left."""
    url = f"sqlite:///{tmp_path / 'up.db'}"
    env = {**os.environ, "KEEL_STORE": url, "COLUMNS": "160"}
    proc = subprocess.Popen(
        [*KEEL, "up", "--console-port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        for _ in range(100):  # up to ~30 s for the presence key to appear
            listed = keel(url, "store", "ls", "up/", "--json")
            if json.loads(listed.stdout or "[]"):
                break
            time.sleep(0.3)
        else:
            pytest.fail("keel up never registered its presence key")
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    assert "stopped cleanly" in out
    status = json.loads(keel(url, "store", "status", "--json").stdout)
    assert status["leases"] == 0, keel(url, "store", "lease", "ls", "-o", "json").stdout


def test_keel_up_once_shows_areas_and_leases(tmp_path: Path) -> None:
    """keel up --once prints one snapshot with its own presence key and lease."""
    url = f"sqlite:///{tmp_path / 'once.db'}"
    keel(url, "store", "put", "services/orders/1", "{}")
    out = keel(url, "up", "--once")
    assert out.returncode == 0, out.stderr
    assert "keys by area" in out.stdout and "services" in out.stdout and "leases" in out.stdout


def test_lock_runs_a_command_with_its_fencing_token(cli_url: str) -> None:
    """keel lock NAME -- CMD runs CMD with KEEL_FENCING_TOKEN and returns its exit code."""
    proc = keel(
        cli_url, "lock", "nightly", "--", "sh", "-c", 'echo "token=$KEEL_FENCING_TOKEN"; exit 7'
    )
    assert proc.returncode == 7, proc.stderr
    assert proc.stdout.startswith("token=") and int(proc.stdout.split("=")[1]) > 0
    listed = keel(cli_url, "locks")
    assert "nightly" not in listed.stdout


def test_lock_timeout_when_held_elsewhere(cli_url: str) -> None:
    """A second keel lock with --timeout gives up with exit 2 while the first holds."""
    env = {**os.environ, "NO_COLOR": "1"}
    holder = subprocess.Popen(
        [*KEEL, "--store", cli_url, "lock", "busy", "--", "sleep", "30"], env=env
    )
    try:
        for _ in range(100):
            if "busy" in keel(cli_url, "locks").stdout:
                break
            time.sleep(0.2)
        shown = keel(cli_url, "locks")
        assert "busy" in shown.stdout
        second = keel(cli_url, "lock", "--timeout", "0.5", "busy", "--", "true")
        assert second.returncode == 4 and "not acquired" in second.stderr
    finally:
        holder.terminate()
        holder.wait(timeout=30)
    assert "busy" not in keel(cli_url, "locks").stdout  # SIGTERM released it at once


def test_leader_shows_no_leader(cli_url: str) -> None:
    """keel leader on an empty election says so, exit 1 (not found)."""
    assert keel(cli_url, "store", "put", "seed", "1").returncode == 0  # leader reads a store
    proc = keel(cli_url, "leader", "nobody")
    assert proc.returncode == 1 and "no leader" in proc.stderr


def test_config_publish_history_diff_rollback(cli_url: str, tmp_path: Path) -> None:
    """keel config: publish, CAS conflict, invalid document refused, diff, rollback, gray."""
    one, two, bad = tmp_path / "one.yaml", tmp_path / "two.yaml", tmp_path / "bad.yaml"
    one.write_text("timeout_s: 1\n")
    two.write_text("timeout_s: 2\n")
    bad.write_text("timeout_s: [\n")
    assert keel(cli_url, "config", "publish", "orders.yaml", str(one), "-m", "init").returncode == 0
    assert keel(cli_url, "config", "publish", "orders.yaml", str(two)).returncode == 0
    stale = keel(cli_url, "config", "publish", "orders.yaml", str(one), "--expected-version", "1")
    assert stale.returncode == 2 and "version 2, not 1" in stale.stderr
    invalid = keel(cli_url, "config", "publish", "orders.yaml", str(bad))
    assert invalid.returncode == 2 and "line 2, column 1" in invalid.stderr
    diff = keel(cli_url, "config", "diff", "orders.yaml", "1", "2")
    assert "-timeout_s: 1" in diff.stdout and "+timeout_s: 2" in diff.stdout
    assert "version 3" in keel(cli_url, "config", "rollback", "orders.yaml", "1").stdout
    assert keel(cli_url, "config", "get", "orders.yaml").stdout == "timeout_s: 1\n"
    gray = keel(cli_url, "config", "gray", "orders.yaml", str(two), "--labels", "zone=a")
    assert gray.returncode == 0, gray.stderr
    assert "gray over version 3" in keel(cli_url, "config", "status", "orders.yaml").stdout
    assert "version 4" in keel(cli_url, "config", "promote", "orders.yaml").stdout
    history = keel(cli_url, "config", "history", "orders.yaml").stdout
    assert "init" in history and "promote gray" in history
