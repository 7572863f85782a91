"""``keel lock NAME -- CMD`` with real processes: the command never outlives the lock."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import keel
from keel.coord import read_lines
from tests.cli._cli import KEEL, keel_cli, keel_env

pytestmark = pytest.mark.slow

# A command that beats (appends a timestamp) every 50 ms, from a child process
# of its own, until it is stopped: its last beat is when it stopped running.
BEATING = 'echo $$ > "$1/pid"; while :; do date +%s.%N >> "$1/beats"; sleep 0.05; done'


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie has stopped running)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return False
    return state not in ("Z", "X")


def _wait_for(predicate: object, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():  # type: ignore[operator]
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout_s}s waiting for {what}")
        time.sleep(0.02)


def _start_lock(url: str, *args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [KEEL, "--store", url, "lock", *args],
        env=keel_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,  # a kill of its group must not reach pytest
    )


@contextlib.contextmanager
def _reaped(*procs: subprocess.Popen[bytes]) -> Iterator[None]:
    try:
        yield
    finally:
        for proc in procs:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate(timeout=30)


def _kill_leftover(pid_file: Path) -> None:
    """Kill what an old keel left running (its group), so a failing test leaks nothing."""
    if pid_file.exists():
        pid = int(pid_file.read_text())
        with contextlib.suppress(ProcessLookupError):
            os.killpg(os.getpgid(pid), signal.SIGKILL)


async def _waiters(url: str, name: str) -> int:
    async with keel.connect(url) as store:
        lines = {line.name: line for line in await read_lines(store, ["locks/"])}
    line = lines.get(name)
    return line.waiters if line else 0


async def _owner_lease(url: str, name: str) -> int:
    async with keel.connect(url) as store:
        for line in await read_lines(store, ["locks/"]):
            if line.name == name and line.owner is not None:
                return line.owner.lease
    raise AssertionError(f"lock {name!r} has no owner")


def test_kill_9_of_keel_stops_the_command_before_the_next_holder_runs(tmp_path: Path) -> None:
    """kill -9 of keel lock: its command is gone within ~1 s; the next holder starts after."""
    url = f"sqlite:///{tmp_path / 'k.db'}"
    one, two = tmp_path / "one", tmp_path / "two"
    one.mkdir()
    two.mkdir()
    first = _start_lock(url, "--ttl", "2", "job", "--", "sh", "-c", BEATING, "sh", str(one))
    second_cmd = (
        'date +%s.%N > "$1/start"; '
        'if kill -0 "$(cat "$2/pid")" 2>/dev/null; then echo overlap > "$1/overlap"; fi'
    )
    with _reaped(first):
        _wait_for(lambda: (one / "beats").exists(), 30, "the first command to beat")
        second = _start_lock(
            url, "--ttl", "2", "job", "--", "sh", "-c", second_cmd, "sh", str(two), str(one)
        )
        with _reaped(second):
            _wait_for(lambda: asyncio.run(_waiters(url, "job")) == 1, 30, "the second waiter")
            pid = int((one / "pid").read_text())
            try:
                os.kill(first.pid, signal.SIGKILL)  # keel alone: no clean-up runs in it
                killed_at = time.time()
                _wait_for(lambda: not _alive(pid), 1.5, "the first command to die with keel")
                assert second.wait(timeout=30) == 0, second.stderr
            finally:
                _kill_leftover(one / "pid")
    last_beat = float((one / "beats").read_text().split()[-1])
    started = float((two / "start").read_text())
    assert not (two / "overlap").exists()
    assert last_beat < started
    assert started > killed_at  # the second waited for the dead holder's lease to end


def test_lost_lock_stops_the_whole_group_and_exits_5(tmp_path: Path) -> None:
    """Revoking the holder's lease: its command group gets SIGTERM, then SIGKILL; keel exits 5."""
    url = f"sqlite:///{tmp_path / 'k.db'}"
    stubborn = 'trap "" TERM; ' + BEATING  # ignores SIGTERM: needs the SIGKILL
    proc = _start_lock(url, "--ttl", "2", "job", "--", "sh", "-c", stubborn, "sh", str(tmp_path))
    with _reaped(proc):
        _wait_for(lambda: (tmp_path / "beats").exists(), 30, "the command to beat")
        pid = int((tmp_path / "pid").read_text())
        lease = asyncio.run(_owner_lease(url, "job"))
        try:
            assert keel_cli("store", "lease", "revoke", str(lease), url=url).code == 0
            assert proc.wait(timeout=30) == 5
            assert not _alive(pid)
        finally:
            _kill_leftover(tmp_path / "pid")
        err = proc.stderr.read() if proc.stderr else b""
    lines = err.strip().splitlines()
    assert b"acquired 'job' with fencing token" in lines[0]
    assert b"was lost" in lines[1] and len(lines) == 2


def test_what_the_command_leaves_running_is_stopped(tmp_path: Path) -> None:
    """A background child the command leaves behind is stopped before keel releases the lock."""
    url = f"sqlite:///{tmp_path / 'k.db'}"
    script = 'sleep 60 & echo $! > "$1/pid"; exit 5'
    result = keel_cli("lock", "job", "--", "sh", "-c", script, "sh", str(tmp_path), url=url)
    try:
        assert result.code == 5
        assert not _alive(int((tmp_path / "pid").read_text()))
    finally:
        _kill_leftover(tmp_path / "pid")


def test_sigterm_to_keel_reaches_the_command(tmp_path: Path) -> None:
    """SIGTERM to keel lock stops its command, then releases the lock (exit 143)."""
    url = f"sqlite:///{tmp_path / 'k.db'}"
    proc = _start_lock(url, "job", "--", "sh", "-c", BEATING, "sh", str(tmp_path))
    with _reaped(proc):
        _wait_for(lambda: (tmp_path / "beats").exists(), 30, "the command to beat")
        pid = int((tmp_path / "pid").read_text())
        try:
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=30) == 128 + signal.SIGTERM
            assert not _alive(pid)
        finally:
            _kill_leftover(tmp_path / "pid")
    assert "job" not in keel_cli("locks", url=url).out.decode()
