"""Locks and elections across real OS processes on sqlite and etcd: exclusion, kill -9, SIGSTOP."""

from __future__ import annotations

import asyncio
import itertools
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

import keel
from keel.coord import Election, Leader, Session
from keel.testing import EtcdCluster
from tests._procs import Child, Children

TTL = 2
pytestmark = pytest.mark.slow


@pytest.fixture(params=["sqlite", "etcd"])
async def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A store shared by processes: a SQLite file or a private etcd member."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'coord.db'}"
    cluster: EtcdCluster = request.getfixturevalue("etcd_cluster")
    return f"{cluster.url}?root=/coord-{tmp_path.name}/"


Spawn = Callable[..., Awaitable[Child]]


@pytest.fixture
async def spawn() -> AsyncIterator[Spawn]:
    """Start coord_child processes; kill and reap whatever is left at teardown."""
    children = Children()

    async def start(*args: str) -> Child:
        return await children.start("tests.faults.coord_child", *args)

    yield start
    await children.close()


async def test_eight_processes_keep_a_counter_exact(url: str, spawn: Spawn) -> None:
    """8 processes x 50 guarded read-modify-write cycles: count exact, tokens increasing."""
    children = [await spawn("counter", url, "counter", "50", "10") for _ in range(8)]
    for child in children:
        await child.expect("READY")
    for child in children:
        await child.expect("DONE", timeout_s=100)
    cycles = sorted(
        (int(line.split()[2]), int(line.split()[1]))
        for child in children
        for line in child.lines
        if line.startswith("CYCLE")
    )
    assert [value for value, _ in cycles] == list(range(1, 401))
    tokens = [token for _, token in cycles]
    assert all(a < b for a, b in itertools.pairwise(tokens))
    async with keel.connect(url) as store:
        kv = await store.get("counter")
        assert kv is not None and kv.value == b"400"


async def test_killed_owner_releases_within_ttl(url: str, spawn: Spawn) -> None:
    """The owner is kill -9ed: the waiting process owns the lock within TTL + 2 s."""
    owner = await spawn("hold", url, "k", str(TTL))
    first = await owner.expect("HELD")
    waiter = await spawn("hold", url, "k", str(TTL))
    await waiter.expect("WAITING")
    await asyncio.sleep(0.5)  # let the waiter queue behind the owner
    owner.signal(signal.SIGKILL)
    killed = time.monotonic()
    second = await waiter.expect("HELD", timeout_s=TTL + 2 + 3)
    assert time.monotonic() - killed <= TTL + 2 + 1.5
    assert int(second[0]) > int(first[0])


async def test_paused_owner_loses_and_its_guard_is_rejected(url: str, spawn: Spawn) -> None:
    """An owner SIGSTOPped past its TTL loses the lock; resumed, its guarded write fails."""
    owner = await spawn("hold", url, "p", str(TTL))
    first = await owner.expect("HELD")
    owner.signal(signal.SIGSTOP)
    successor = await spawn("hold", url, "p", str(TTL))
    second = await successor.expect("HELD", timeout_s=TTL + 2 + 5)
    owner.signal(signal.SIGCONT)
    await owner.expect("LOST", timeout_s=TTL + 5)
    assert await owner.expect("GUARD") == ["rejected"]
    assert int(second[0]) > int(first[0])
    async with keel.connect(url) as store:
        assert await store.get("resource") is None


async def leader_other_than(election: Election, value: bytes | None, timeout_s: float) -> Leader:
    """Wait (via observe) for a leader whose value is not ``value``."""
    async with asyncio.timeout(timeout_s):
        async for leader in election.observe():
            if leader is not None and leader.value != value:
                return leader
    raise AssertionError("observe() ended")


async def test_election_among_five_processes(url: str, spawn: Spawn) -> None:
    """One leader of 5 at a time; kill -9 → new leader within TTL + 2 s; resign → at once."""
    children = [await spawn("campaign", url, "e", f"node-{i}", str(TTL)) for i in range(5)]
    for child in children:
        await child.expect("CANDIDATE")
    async with keel.connect(url) as store, Session(store) as session:
        election = Election(session, "e")
        leader = await leader_other_than(election, None, 20)
        index = int(leader.value.decode().split("-")[1])
        await children[index].expect("LEADER")
        children[index].signal(signal.SIGKILL)
        killed = time.monotonic()
        now = await leader_other_than(election, leader.value, TTL + 2 + 3)
        assert time.monotonic() - killed <= TTL + 2 + 1.5
        assert now.fencing_token > leader.fencing_token
        nxt = int(now.value.decode().split("-")[1])
        await children[nxt].expect("LEADER")
        children[nxt].send("resign")
        await children[nxt].expect("RESIGNED")
        resigned = time.monotonic()
        after = await leader_other_than(election, now.value, TTL)
        assert time.monotonic() - resigned < TTL
        third = int(after.value.decode().split("-")[1])
        await children[third].expect("LEADER")
        # Exactly one live child believes it leads: the one the store names.
        leading = [
            i
            for i, c in enumerate(children)
            if c.proc.returncode is None and c.lines and c.lines[-1].startswith("LEADER")
        ]
        assert leading == [third]


async def test_paused_leader_cannot_commit(url: str, spawn: Spawn) -> None:
    """A leader SIGSTOPped past its TTL is replaced, learns it is lost, and its guard fails."""
    first = await spawn("campaign", url, "s", "first", str(TTL))
    await first.expect("LEADER")
    first.signal(signal.SIGSTOP)
    second = await spawn("campaign", url, "s", "second", str(TTL))
    await second.expect("LEADER", timeout_s=TTL + 2 + 5)
    first.signal(signal.SIGCONT)
    await first.expect("LOST", timeout_s=TTL + 5)
    assert await first.expect("GUARD") == ["rejected"]
