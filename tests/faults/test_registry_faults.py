"""Registry under faults: a killed owner, a frozen etcd, a cold start with the store down."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import keel
from keel.registry import Discovery, Instance, Registry
from keel.testing import EtcdCluster
from tests._util import eventually

pytestmark = pytest.mark.slow
TTL = 2


@pytest.fixture(params=["sqlite", "etcd"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A store shared with child processes."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'reg.db'}"
    cluster: EtcdCluster = request.getfixturevalue("etcd_cluster")
    return f"{cluster.url}?root=/reg-{tmp_path.name}/"


@pytest.fixture
def private_etcd() -> Iterator[EtcdCluster]:
    """An etcd member of this test's own, since the test freezes it."""
    with EtcdCluster(1) as cluster:
        yield cluster


async def ids(discovery: Discovery, service: str, want: set[str], timeout_s: float) -> float:
    """Wait until discovery returns ``want``; return how long it took."""
    began = time.monotonic()
    async with asyncio.timeout(timeout_s):
        async for snapshot in discovery.subscribe(service):
            if {i.id for i in snapshot} == want:
                return time.monotonic() - began
    raise AssertionError("subscribe ended")


async def test_killed_owner_vanishes_within_ttl(url: str) -> None:
    """An owner (`keel register`) is kill -9ed: its instance is gone within TTL + 2 s."""
    env = {**os.environ, "KEEL_STORE": url}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "keel.cli",
        "register",
        "orders",
        "127.0.0.1:9100",
        "--ttl",
        str(TTL),
        env=env,
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        async with keel.connect(url) as store, Discovery(store) as discovery:
            await ids(discovery, "orders", {"127.0.0.1:9100"}, 20)
            proc.kill()
            took = await ids(discovery, "orders", set(), TTL + 2 + 2)
            assert took <= TTL + 2
    finally:
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
        async with asyncio.timeout(30):
            await proc.communicate()  # reaps it and closes its pipe


async def test_instance_registered_by_etcdctl_is_discovered(etcd_cluster: EtcdCluster) -> None:
    """A non-Python client writing the documented JSON with a lease is discovered."""
    root = "/etcdctl-test/"
    lease_out = etcd_cluster.etcdctl("lease", "grant", "30")
    lease_hex = lease_out.split()[1]
    record = json.dumps({"address": "10.1.2.3", "port": 8443, "scheme": "https", "zone": "b"})
    etcd_cluster.etcdctl("put", f"--lease={lease_hex}", f"{root}services/legacy/go-1", record)
    async with keel.connect(f"{etcd_cluster.url}?root={root}") as store, Discovery(store) as d:
        (found,) = await d.instances("legacy")
        assert (found.id, found.url, found.zone) == ("go-1", "https://10.1.2.3:8443", "b")
        etcd_cluster.etcdctl("lease", "revoke", lease_hex)
        await ids(d, "legacy", set(), 10)


async def test_outage_serves_stale_then_recovers(private_etcd: EtcdCluster) -> None:
    """etcd frozen: the last list is served, marked stale; thawed: fresh again."""
    url = f"{private_etcd.url}?timeout_s=1"
    async with keel.connect(url) as store, Registry(store, ttl_s=10) as registry:
        await registry.register(Instance(service="pay", address="10.0.0.1", port=80))
        async with Discovery(store, probe_interval_s=0.2) as discovery:
            await ids(discovery, "pay", {"10.0.0.1:80"}, 10)
            private_etcd.pause(0)
            try:
                await eventually(lambda: discovery.statistics().services["pay"].stale, 10)
                assert [i.id for i in await discovery.instances("pay")] == ["10.0.0.1:80"]
            finally:
                private_etcd.resume(0)
            await eventually(lambda: not discovery.statistics().services["pay"].stale, 15)
            await registry.register(Instance(service="pay", address="10.0.0.2", port=80))
            await ids(discovery, "pay", {"10.0.0.1:80", "10.0.0.2:80"}, 15)


async def test_cold_start_from_snapshot_while_the_store_is_down(
    private_etcd: EtcdCluster, tmp_path: Path
) -> None:
    """A process starting while etcd is down gets the last list from its snapshot, marked stale."""
    url = f"{private_etcd.url}?timeout_s=1"
    async with keel.connect(url) as store, Registry(store, ttl_s=30) as registry:
        await registry.register(Instance(service="inv", address="10.0.0.9", port=81))
        async with Discovery(store, snapshot_dir=tmp_path) as first:
            await ids(first, "inv", {"10.0.0.9:81"}, 10)
        private_etcd.pause(0)
        try:
            async with Discovery(store, snapshot_dir=tmp_path) as cold:
                async with asyncio.timeout(20):
                    found = await cold.instances("inv")
                assert [i.id for i in found] == ["10.0.0.9:81"]
                stats = cold.statistics().services["inv"]
                assert stats.stale and stats.from_snapshot
        finally:
            private_etcd.resume(0)
