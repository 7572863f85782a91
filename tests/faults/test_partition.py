"""Partitions of a 3-member etcd cluster: every client survives and resyncs; locks never overlap.

Each etcd member and each client process runs in a network namespace of its
own on one private bridge (see ``partition_net``); a partition is iptables
DROP rules inside one namespace. Client processes print timestamped events
(``partition_child``); the test reads them and cuts and heals the network.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import json
import os
import signal
import sys
import uuid
from collections.abc import AsyncIterator, Callable, Iterator

import pytest

import keel
from keel.backends.etcd import EtcdStore
from keel.coord import Session
from keel.errors import StoreUnavailableError
from keel.store import Event, Store, Watch
from keel.testing import EtcdCluster
from tests._procs import ROOT
from tests.faults.partition_net import Host, NetEtcd, NetLab, missing_tools
from tests.faults.partition_proxy import ResetProxy

pytestmark = [pytest.mark.etcd, pytest.mark.slow]
# Network namespaces and iptables need root; as root (CI included) a missing tool is a
# failure with the install hint, not a skip: `make test` installs them.
needs_netns = pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces need root")

TTL_S = 3
ROUNDS = 3


class Proc:
    """A child process in a namespace, its stdout collected line by line in the background."""

    def __init__(self, name: str, proc: asyncio.subprocess.Process, changed: asyncio.Event) -> None:
        self.name = name
        self.proc = proc
        self.lines: list[list[str]] = []
        self._changed = changed  # shared by every child: set on each line of any of them
        self.reader = asyncio.ensure_future(self._read())

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        while raw := await self.proc.stdout.readline():
            self.lines.append(raw.decode().split())
            self._changed.set()
        self._changed.set()

    def alive(self) -> bool:
        """Whether the process is still running."""
        return self.proc.returncode is None

    def events(self, word: str) -> list[list[str]]:
        """The fields of every line that starts with ``word``."""
        return [line[1:] for line in self.lines if line and line[0] == word]

    async def until(self, done: Callable[[], object], what: str, timeout_s: float) -> None:
        """Wait until ``done()`` holds; fail naming ``what`` after ``timeout_s``."""
        try:
            async with asyncio.timeout(timeout_s):
                while not done():
                    if self.reader.done():
                        raise AssertionError(f"{self.name} ended before {what}: {self.lines[-5:]}")
                    self._changed.clear()
                    await self._changed.wait()
        except TimeoutError:
            raise AssertionError(
                f"{self.name}: no {what} in {timeout_s}s: {self.lines[-5:]}"
            ) from None

    def send(self, line: str) -> None:
        """Write one line to the child's stdin."""
        assert self.proc.stdin is not None
        self.proc.stdin.write(line.encode() + b"\n")


class Lab:
    """The cluster, the namespaces of the clients, and the client processes."""

    def __init__(self, net: NetLab, etcd: NetEtcd) -> None:
        self.net = net
        self.etcd = etcd
        self.procs: list[Proc] = []
        self.hosts: dict[str, Host] = {}
        self.changed = asyncio.Event()

    async def start(self, name: str, mode: str, url: str, *args: object) -> Proc:
        """Start ``partition_child MODE URL ARGS`` on a new host named ``name``."""
        host = self.hosts[name] = self.net.add_host(name)
        argv = [sys.executable, "-m", "tests.faults.partition_child", mode, url, *map(str, args)]
        proc = await asyncio.create_subprocess_exec(
            *host.command(*argv),
            cwd=ROOT,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        child = Proc(name, proc, self.changed)
        self.procs.append(child)
        return child

    async def close(self) -> None:
        """Kill and reap every client."""
        for child in self.procs:
            with contextlib.suppress(ProcessLookupError):
                child.proc.send_signal(signal.SIGKILL)
        for child in self.procs:
            async with asyncio.timeout(10):
                await child.proc.wait()
                await asyncio.gather(child.reader, return_exceptions=True)


@pytest.fixture
def cluster() -> Iterator[NetEtcd]:
    """Three etcd members, each in its own namespace; everything removed afterwards."""
    missing = missing_tools()
    assert missing is None, f"{missing}: 'make test' installs it (scripts/ensure-engines.sh)"
    with NetLab() as net:
        etcd = NetEtcd(net)
        try:
            yield etcd.start()
        finally:
            etcd.stop()


@pytest.fixture
async def lab(cluster: NetEtcd) -> AsyncIterator[Lab]:
    """The client processes' side of the lab; every client killed afterwards."""
    lab = Lab(cluster.lab, cluster)
    try:
        yield lab
    finally:
        await lab.close()


def holdings(procs: list[Proc]) -> list[tuple[float, float, str]]:
    """Every (acquired, lost, who) interval of the lock; an unended one runs to infinity."""
    spans = []
    for proc in procs:
        start: float | None = None
        for line in proc.lines:
            if line[:1] == ["ACQUIRED"]:
                start = float(line[1])
            elif line[:1] == ["LOST"] and start is not None:
                spans.append((start, float(line[1]), proc.name))
                start = None
        if start is not None:
            spans.append((start, float("inf"), proc.name))
    return sorted(spans)


def watched(disc: Proc) -> set[str]:
    """The keys the discovery client's raw watch delivered."""
    return {key for key, _ in disc.events("EV")}


def assert_no_overlap(procs: list[Proc]) -> None:
    """Each holder declared its loss before the next holder acquired the lock."""
    spans = holdings(procs)
    for (_, lost, who), (acquired, _, next_who) in itertools.pairwise(spans):
        assert lost <= acquired, (
            f"{next_who} acquired at {acquired:.3f} before {who} declared the loss "
            f"at {lost:.3f}: {spans}"
        )


@needs_netns
async def isolate_the_holder(lab: Lab, lockers: list[Proc]) -> None:
    """Cut the lock holder off from every member until another process holds the lock."""
    holder = next(p for p in lockers if holdings([p]) and holdings([p])[-1][1] == float("inf"))
    others = [p for p in lockers if p is not holder]
    taken = sum(len(p.events("ACQUIRED")) for p in others)
    lost = len(holder.events("LOST"))
    lab.net.cut(lab.hosts[holder.name])
    try:
        await holder.until(
            lambda: sum(len(p.events("ACQUIRED")) for p in others) > taken, "take-over", 15
        )
    finally:
        lab.net.heal(lab.hosts[holder.name])
    await holder.until(lambda: len(holder.events("LOST")) > lost, "loss", 5)


async def test_clients_survive_partitions_and_locks_never_overlap(lab: Lab) -> None:
    """Cut a member off, then a lock holder: every client lives, resyncs, no overlap."""
    etcd = lab.etcd
    disc = await lab.start("disc", "discover", etcd.url(0, 1, 2), "svc", "w/")
    writer = await lab.start("writer", "write", etcd.url(1, 2), "svc", "w/")
    lock_a = await lab.start("locka", "lock", etcd.url(0, 1, 2), "L", TTL_S)
    lock_b = await lab.start("lockb", "lock", etcd.url(2, 1, 0), "L", TTL_S)
    lockers = [lock_a, lock_b]
    everyone = [disc, writer, *lockers]
    for proc in everyone:
        await proc.until(functools.partial(proc.events, "READY"), "READY", 20)
    await lock_a.until(lambda: bool(holdings(lockers)), "a lock holder", 15)

    # 1. The lock holder is cut off from everyone until the other one takes over
    #    (three rounds: the holder alternates).
    for _ in range(ROUNDS):
        await isolate_the_holder(lab, lockers)

    # 2. Member e0 (the first endpoint of the discovery client and of lock A)
    #    is cut off from the other two members for 10 s, then healed.
    lab.net.cut(etcd.members[0], etcd.members[1:])
    await asyncio.sleep(5)
    writer.send("register during")
    await asyncio.sleep(5)
    lab.net.heal(etcd.members[0])
    writer.send("register after")
    await writer.until(lambda: len(writer.events("REGISTERED")) == 2, "registrations", 15)

    def sees_both() -> bool:
        seen = disc.events("SEEN")
        return bool(seen) and set(seen[-1][0].split(",")) >= {"during", "after"}

    await disc.until(sees_both, "both registrations", 15)
    acked = {key for key, _ in writer.events("ACK")}
    await disc.until(lambda: acked <= watched(disc), "every acknowledged put", 15)
    revisions = [int(rev) for _, rev in disc.events("EV")]
    assert revisions == sorted(set(revisions)), "the watch repeated or reordered events"

    # Everyone came through both partitions alive, and the lock never overlapped.
    await asyncio.sleep(1.0)
    dead = [(p.name, p.proc.returncode, p.lines[-3:]) for p in everyone if not p.alive()]
    assert not dead, f"client processes died: {dead}"
    assert_no_overlap(lockers)


async def _next(events: Watch) -> Event:
    async with asyncio.timeout(10):
        return await anext(events)


async def test_internal_status_on_the_streams_is_retried(etcd_cluster: EtcdCluster) -> None:
    """gRPC INTERNAL on the watch and keepalive streams: both reopen, the watch loses nothing."""
    proxy = ResetProxy(etcd_cluster.endpoints[0])
    address = await proxy.start()
    root = f"/t-{uuid.uuid4().hex[:12]}/"
    try:
        async with (
            keel.connect(f"etcd://{address}?root={root}&timeout_s=2") as store,
            keel.connect(f"{etcd_cluster.url}?root={root}") as direct,
        ):
            assert isinstance(store, EtcdStore)
            lease = await store.grant(5)
            await store.keepalive(lease.id)
            async with store.watch("k/", prefix=True) as events:
                for n in range(3):
                    before = store.statistics().watch_streams_opened
                    assert proxy.reset_streams() >= 1
                    # Written while the stream is being reset: delivered once, in order.
                    revisions = [await direct.put(f"k/{n}/{i}", b"x") for i in range(3)]
                    got = [(await _next(events)).kv.mod_revision for _ in revisions]
                    assert got == revisions
                    assert store.statistics().watch_streams_opened > before
                    async with asyncio.timeout(10):
                        assert await store.keepalive(lease.id) == 5
                assert events.get_nowait() is None
    finally:
        await proxy.close()


async def put_acked(store: Store, key: str) -> int:
    """Put ``key`` (a fresh suffix per try) until a put is acknowledged; its revision."""
    async with asyncio.timeout(20):
        for attempt in itertools.count():
            try:
                return await store.put(f"{key}-{attempt}", b"x")
            except StoreUnavailableError:  # a leader election: the outcome is unknown
                continue
    raise AssertionError("unreachable")


async def delivered(events: Watch, revision: int, timeout_s: float) -> None:
    """Read ``events`` until the one at ``revision`` (unacknowledged tries may come first)."""
    async with asyncio.timeout(timeout_s):
        async for event in events:
            if event.kv.mod_revision >= revision:
                assert event.kv.mod_revision == revision
                return


def follower_first(cluster: EtcdCluster) -> tuple[str, int]:
    """A URL listing a follower first (freezing it costs no election), and its index."""
    for member in json.loads(cluster.etcdctl("endpoint", "status", "-w", "json")):
        status = member["Status"]
        if status["leader"] != status["header"]["member_id"]:
            follower = cluster.endpoints.index(member["Endpoint"])
            break
    else:
        raise AssertionError("the cluster has no follower")
    order = [follower, *(i for i in range(len(cluster.endpoints)) if i != follower)]
    return "etcd://" + ",".join(cluster.endpoints[i] for i in order), follower


@pytest.fixture
def cluster3() -> Iterator[EtcdCluster]:
    """A fresh three-member cluster on loopback, stopped after the test."""
    with EtcdCluster(3) as cluster:
        yield cluster


async def test_a_silent_member_is_left_before_the_session_is_lost(cluster3: EtcdCluster) -> None:
    """The member in use stops answering (SIGSTOP): renewals and the watch move on, no loss."""
    url, frozen = follower_first(cluster3)
    async with (
        keel.connect(f"{url}?timeout_s=2") as store,
        Session(store, ttl_s=5) as session,
    ):
        assert isinstance(store, EtcdStore)
        assert store.endpoint == cluster3.endpoints[frozen]
        others = ",".join(e for i, e in enumerate(cluster3.endpoints) if i != frozen)
        async with (
            keel.connect(f"etcd://{others}?timeout_s=5") as direct,
            store.watch("k/", prefix=True) as events,
        ):
            await direct.put("k/before", b"x")
            assert (await _next(events)).kv.key == "k/before"
            cluster3.pause(frozen)
            try:
                # Longer than the TTL: the session must keep its lease through the freeze
                # (a renewal met by a second of silence moves to the next member).
                await asyncio.sleep(6)
                assert not session.lost.is_set(), session.lost.reason
                assert store.endpoint != cluster3.endpoints[frozen]
                await delivered(events, await put_acked(direct, "k/during"), 10)
            finally:
                cluster3.resume(frozen)


async def test_a_watch_leaves_a_silent_member(cluster3: EtcdCluster) -> None:
    """A watch-only client whose member freezes moves on within about 2 x timeout_s."""
    url, frozen = follower_first(cluster3)
    async with keel.connect(f"{url}?timeout_s=1") as store:
        assert isinstance(store, EtcdStore)
        assert store.endpoint == cluster3.endpoints[frozen]
        others = ",".join(e for i, e in enumerate(cluster3.endpoints) if i != frozen)
        async with (
            keel.connect(f"etcd://{others}?timeout_s=5") as direct,
            store.watch("k/", prefix=True) as events,
        ):
            await direct.put("k/before", b"x")
            assert (await _next(events)).kv.key == "k/before"
            cluster3.pause(frozen)
            try:
                revision = await put_acked(direct, "k/during")
                await delivered(events, revision, 6)  # gRPC's own keepalive: 10 s+
                assert store.endpoint != cluster3.endpoints[frozen]
            finally:
                cluster3.resume(frozen)
