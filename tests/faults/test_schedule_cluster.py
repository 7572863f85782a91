"""The scheduler across real OS processes on sqlite and etcd: once per fire, kill -9, SIGSTOP.

At the issue's scale: 200 jobs every second for 20 s over 3 worker processes.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import signal
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

import keel
from keel.schedule import Execution, Status, list_runs
from keel.store import Store
from keel.testing import EtcdCluster

ROOT = Path(__file__).resolve().parents[2]
TTL = 2
pytestmark = pytest.mark.slow


class Child:
    """One tests/faults/schedule_child.py process; collects its stdout lines."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.lines: list[str] = []
        self._reader = asyncio.ensure_future(self._read())
        self._new = asyncio.Event()

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        while raw := await self.proc.stdout.readline():
            self.lines.append(raw.decode().strip())
            self._new.set()

    async def expect(self, word: str, timeout_s: float = 20.0) -> list[str]:
        """Wait for a line starting with ``word`` (seen before or after); return its fields."""
        async with asyncio.timeout(timeout_s):
            while True:
                for line in self.lines:
                    if line.split()[0] == word:
                        return line.split()[1:]
                if self._reader.done():
                    raise AssertionError(f"child ended before {word!r}: {self.lines}")
                self._new.clear()
                await self._new.wait()

    def fields(self, word: str) -> list[list[str]]:
        """Every line starting with ``word``, split."""
        return [line.split()[1:] for line in self.lines if line.split()[0] == word]

    def signal(self, sig: int) -> None:
        os.kill(self.proc.pid, sig)

    async def stop(self) -> None:
        """SIGTERM, and wait for a clean exit."""
        if self.proc.returncode is None:
            self.signal(signal.SIGTERM)
        async with asyncio.timeout(15):
            await self.proc.wait()
            await self._reader


Spawn = Callable[[str, dict[str, object]], Awaitable[Child]]


@pytest.fixture(params=["sqlite", "etcd"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A store shared by processes: a SQLite file or the test etcd under a private root."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'schedule.db'}"
    cluster: EtcdCluster = request.getfixturevalue("etcd_cluster")
    return f"{cluster.url}?root=/sched-{tmp_path.name}/"


@pytest.fixture
async def spawn() -> AsyncIterator[Spawn]:
    """Start children; kill whatever is left at teardown."""
    children: list[Child] = []

    async def start(url: str, spec: dict[str, object]) -> Child:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "tests.faults.schedule_child",
            url,
            json.dumps(spec),
            cwd=ROOT,
            stdout=asyncio.subprocess.PIPE,
        )
        child = Child(proc)
        children.append(child)
        return child

    yield start
    for child in children:
        if child.proc.returncode is None:
            os.kill(child.proc.pid, signal.SIGCONT)
            child.proc.kill()
        await child.proc.wait()
        child._reader.cancel()


def ran(children: list[Child]) -> Counter[str]:
    """How many times each execution's handler started, over all children.

    A start twice is legal only as a re-claim (a worker killed, or its session
    lost under load): each start of one execution must then hold a different,
    larger fencing token, and at most one of them may commit its effect.
    """
    starts: dict[str, list[int]] = {}
    for child in children:
        for fields in child.fields("RAN"):
            starts.setdefault(fields[0], []).append(int(fields[1]))
    for run_id, tokens in starts.items():
        assert len(set(tokens)) == len(tokens), f"{run_id} started twice on one claim: {tokens}"
    committed = Counter(f[0] for c in children for f in c.fields("DONE") if f[1] == "ok")
    assert not committed or max(committed.values()) == 1, "an effect committed twice"
    return Counter({run_id: len(tokens) for run_id, tokens in starts.items()})


async def all_runs(store: Store, jobs: list[str]) -> dict[str, list[Execution]]:
    """Every job's run records, oldest first."""
    return {job: sorted(await list_runs(store, job), key=lambda r: r.fire) for job in jobs}


def contiguous(runs: list[Execution], every_s: float) -> bool:
    """Fire times step by exactly ``every_s``: none missing."""
    fires = sorted({r.fire for r in runs})
    return all(abs(b - a - every_s) < 1e-3 for a, b in itertools.pairwise(fires))


async def test_many_jobs_every_fire_exactly_once(url: str, spawn: Spawn) -> None:
    """200 jobs every second for 20 s on 3 worker processes: no fire missed, none run twice."""
    jobs = [f"j.{i}" for i in range(200)]
    spec = {"ttl": TTL, "jobs": [{"name": j, "interval_s": 1.0} for j in jobs]}
    children = [await spawn(url, spec) for _ in range(3)]
    for child in children:
        await child.expect("READY")
    await asyncio.sleep(20)
    stopped = time.time()
    for child in children:
        await child.stop()
    counts = ran(children)
    assert counts, "jobs ran"
    async with keel.connect(url) as store:
        runs = await all_runs(store, jobs)
        effects, _ = await store.range("effects/")
    for job, records in runs.items():
        due = [r for r in records if r.fire < stopped - 1.5]
        assert len(due) >= 18, job
        assert contiguous(records, 1.0), job
        assert all(r.status is Status.SUCCEEDED for r in due), [
            r for r in due if not r.status.final
        ]
    due_ids = {r.id for rs in runs.values() for r in rs if r.fire < stopped - 1.5}
    effect_ids = {kv.key.removeprefix("effects/") for kv in effects}
    assert due_ids <= effect_ids <= set(counts), "every due run's fenced effect, once"
    workers = {r.worker for rs in runs.values() for r in rs if r.worker}
    assert len(workers) == 3, "all three workers took part"


async def test_killed_worker_run_completes_elsewhere(url: str, spawn: Spawn) -> None:
    """kill -9 of the worker running a job: after its lease ends another runs it, new token."""
    spec = {"ttl": TTL, "handlers": ["work"], "slow_s": 2.0, "planner": False}
    children = [await spawn(url, spec) for _ in range(3)]
    for child in children:
        await child.expect("READY")
    async with keel.connect(url) as store:
        from keel.schedule import enqueue, get_run

        run_id = await enqueue(store, "work", {"n": 1})
        first = await asyncio.wait_for(_first_runner(children, run_id), 10)
        first[0].signal(signal.SIGKILL)
        killed = time.monotonic()
        async with asyncio.timeout(TTL + 10):
            while True:
                record = await get_run(store, run_id)
                if record.status is Status.SUCCEEDED:
                    break
                await asyncio.sleep(0.1)
        assert time.monotonic() - killed < TTL + 2 + 2.5
        assert record.attempt == 2 and record.token > int(first[1])
        effect = await store.get(f"effects/{run_id}")
        assert effect is not None and int(effect.value) == record.token


async def _first_runner(children: list[Child], run_id: str) -> tuple[Child, str]:
    while True:
        for child in children:
            for fields in child.fields("RAN"):
                if fields[0] == run_id:
                    return child, fields[1]
        await asyncio.sleep(0.05)


async def test_stopped_worker_cannot_commit(url: str, spawn: Spawn) -> None:
    """A SIGSTOPped worker's run is redone elsewhere; resumed, its fenced effect is refused."""
    spec = {"ttl": TTL, "handlers": ["work"], "slow_s": 1.0, "planner": False}
    children = [await spawn(url, spec) for _ in range(2)]
    for child in children:
        await child.expect("READY")
    async with keel.connect(url) as store:
        from keel.schedule import enqueue, get_run

        run_id = await enqueue(store, "work")
        stale, token = await asyncio.wait_for(_first_runner(children, run_id), 10)
        stale.signal(signal.SIGSTOP)
        other = next(c for c in children if c is not stale)
        async with asyncio.timeout(TTL + 15):
            while True:
                if await store.get(f"effects/{run_id}") is not None:
                    break
                await asyncio.sleep(0.1)
        stale.signal(signal.SIGCONT)
        assert await stale.expect("DONE", timeout_s=10) == [run_id, "rejected"]
        assert [run_id, "ok"] in other.fields("DONE")
        record = await get_run(store, run_id)
        assert record.status is Status.SUCCEEDED and record.worker != ""
        assert record.token > int(token)


async def test_leader_killed_new_leader_applies_misfire(url: str, spawn: Spawn) -> None:
    """kill -9 of the planning leader: a new one within TTL + 2 s, misfire skip/once/all exact."""
    every = 0.5
    jobs = [
        {"name": f"m.{policy}", "interval_s": every, "misfire": policy}
        for policy in ("skip", "once", "all")
    ]
    spec = {"ttl": 3, "jobs": jobs, "lookahead_s": 0.2, "grace_s": 0.2}
    first = await spawn(url, spec)
    await first.expect("LEADER")
    second = await spawn(url, spec)
    await second.expect("READY")
    await asyncio.sleep(1.5)
    first.signal(signal.SIGKILL)
    killed = time.monotonic()
    await second.expect("LEADER", timeout_s=3 + 2 + 3)
    assert time.monotonic() - killed <= 3 + 2 + 0.5
    await asyncio.sleep(2.0)
    await second.stop()
    names = [j["name"] for j in jobs]
    async with keel.connect(url) as store:
        runs = await all_runs(store, names)
    counts = ran([first, second])  # a run cut off by the kill is re-run with a new token
    assert counts
    for name, records in runs.items():
        assert contiguous(records, every), f"{name}: every fire has exactly one record"
    gap = [r.fire for r in by(runs["m.skip"], Status.SKIPPED)]
    assert len(gap) >= 3, "skip: the fires missed during the gap are recorded SKIPPED"
    assert contiguous(by(runs["m.skip"], Status.SKIPPED), every)
    once_skipped = [r.fire for r in by(runs["m.once"], Status.SKIPPED)]
    once_late = [r for r in runs["m.once"] if _late(r)]
    assert len(once_late) == 1 and once_late[0].fire > max(once_skipped), "once: the latest"
    assert abs(len(once_skipped) + 1 - len(gap)) <= 1
    assert not by(runs["m.all"], Status.SKIPPED), "all: every missed fire runs"
    assert abs(len([r for r in runs["m.all"] if _late(r)]) - len(gap)) <= 1
    for records in runs.values():
        done = [r for r in records if r.status is not Status.SKIPPED]
        assert all(r.status is Status.SUCCEEDED for r in done if r.fire < time.time() - 2)


def by(records: list[Execution], status: Status) -> list[Execution]:
    """The records with ``status``."""
    return [r for r in records if r.status is status]


def _late(record: Execution) -> bool:
    """A missed fire run by the new leader's misfire policy (and run to completion)."""
    return record.kind == "misfire" and record.status is Status.SUCCEEDED


async def test_shards_reassigned_when_a_worker_leaves(url: str, spawn: Spawn) -> None:
    """4 shards over 3 workers, each (fire, shard) once; after one leaves, all 4 still run."""
    spec = {"ttl": TTL, "jobs": [{"name": "sh", "interval_s": 1.0, "shards": 4}]}
    children = [await spawn(url, spec) for _ in range(3)]
    for child in children:
        await child.expect("READY")
    await asyncio.sleep(3)
    await children[2].stop()
    left = time.time()
    await asyncio.sleep(3.5)
    stopped = time.time()
    for child in children[:2]:
        await child.stop()
    counts = ran(children)
    assert counts
    async with keel.connect(url) as store:
        records = await list_runs(store, "sh")
    fires: dict[float, set[int]] = {}
    for r in records:
        if r.status is Status.SUCCEEDED:
            fires.setdefault(r.fire, set()).add(r.shard)
    due = [f for f in fires if f < stopped - 1.5]
    assert all(fires[f] == {0, 1, 2, 3} for f in due)
    after = [r for r in records if r.fire > left + 1.5 and r.status is Status.SUCCEEDED]
    assert after and len({r.worker for r in after}) == 2
    assert all(r.status is Status.SUCCEEDED for r in records if r.fire < stopped - 1.5), (
        "nothing left behind by the worker that left"
    )
