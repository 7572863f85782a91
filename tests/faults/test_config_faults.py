"""Config center under faults and across processes: kill -9 mid-publish, 4 binding processes,
cold start from a snapshot with the store down."""

from __future__ import annotations

import asyncio
import json
import random
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

import keel
from keel.config import ConfigCenter
from keel.testing import EtcdCluster
from tests._procs import Children

pytestmark = pytest.mark.slow


@pytest.fixture(params=["sqlite", "etcd"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A store shared with child processes."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'cfg.db'}"
    cluster: EtcdCluster = request.getfixturevalue("etcd_cluster")
    return f"{cluster.url}?root=/cfg-{tmp_path.name}/"


@pytest.fixture
def private_etcd() -> Iterator[EtcdCluster]:
    """An etcd member of this test's own, since the test freezes it."""
    with EtcdCluster(1) as cluster:
        yield cluster


async def test_killed_publisher_leaves_current_and_history_consistent(
    url: str, children: Children
) -> None:
    """kill -9 mid-publish, 5 rounds: acked versions survive; current and history agree."""
    rng = random.Random(3)
    acked: dict[str, int] = {}
    for _ in range(5):
        child = await children.start("tests.faults.config_child", "publish", url, "100000")
        for _ in range(rng.randrange(5, 40)):
            name, version = await child.expect("ACK")
            acked[name] = max(acked.get(name, 0), int(version))
        child.signal(signal.SIGKILL)
        await child.proc.wait()
    async with keel.connect(url) as store:
        center = ConfigCenter(store, retention=5)
        for summary in await center.list():
            history = await center.history(summary.name)
            assert history[-1].version == summary.version  # one txn: never one without the other
            assert [d.version for d in history] == list(
                range(summary.version - len(history) + 1, summary.version + 1)
            )
            assert summary.version >= acked.get(summary.name, 0)


async def test_publish_reaches_bindings_in_four_processes(
    url: str, children: Children, tmp_path: Path
) -> None:
    """4 binding processes apply each valid publish, refuse an invalid one, skip a malformed one."""
    async with keel.connect(url) as store:
        center = ConfigCenter(store)
        await center.publish("orders.yaml", "timeout_s: 1\n")
        env = {"KEEL_CFG__ORDERS__RETRIES": "9"}
        procs = [
            await children.start(
                "tests.faults.config_child",
                "bind",
                url,
                "orders.yaml",
                str(tmp_path / f"s{i}"),
                env=env,
            )
            for i in range(4)
        ]
        for proc in procs:
            fields = await proc.expect("VALUE")
            assert json.loads(fields[0]) == {"timeout_s": 1.0, "retries": 9}  # env wins
        await center.publish("orders.yaml", "timeout_s: 2\n")
        for proc in procs:
            fields = await proc.expect("VALUE")
            assert json.loads(fields[0])["timeout_s"] == 2.0 and fields[1] == "2"
        await center.publish("orders.yaml", "timeout_s: later\n")
        for proc in procs:
            assert await proc.expect("INVALID") == ["3"]
        await store.put("config/orders.yaml", b'{"version": "3", "content": []}')  # by hand
        await center.publish("orders.yaml", "timeout_s: 4\n", force=True)
        for proc in procs:
            fields = await proc.expect("VALUE")
            assert json.loads(fields[0])["timeout_s"] == 4.0 and fields[1] == "4"
            proc.send("stop")


async def test_cold_start_from_snapshot_with_the_store_down(
    private_etcd: EtcdCluster, children: Children, tmp_path: Path
) -> None:
    """A process starting while etcd is frozen runs its last snapshot, then follows the store."""
    url = f"{private_etcd.url}?timeout_s=1&lazy=1"
    snapshots = str(tmp_path / "snap")
    async with keel.connect(url) as store:
        center = ConfigCenter(store)
        await center.publish("orders.yaml", "timeout_s: 6\n")
        first = await children.start(
            "tests.faults.config_child", "bind", url, "orders.yaml", snapshots
        )
        assert (await first.expect("VALUE"))[1:] == ["1", "0"]
        first.send("stop")
        await first.proc.wait()
        private_etcd.pause(0)
        try:
            cold = await children.start(
                "tests.faults.config_child", "bind", url, "orders.yaml", snapshots
            )
            fields = await cold.expect("VALUE", timeout_s=30)
            assert json.loads(fields[0])["timeout_s"] == 6.0 and fields[2] == "1"  # from snapshot
        finally:
            private_etcd.resume(0)
        await center.publish("orders.yaml", "timeout_s: 8\n")
        fields = await cold.expect("VALUE", timeout_s=30)
        if json.loads(fields[0])["timeout_s"] == 6.0:  # the reload from the store came first
            assert fields[2] == "0"
            fields = await cold.expect("VALUE", timeout_s=30)
        assert json.loads(fields[0])["timeout_s"] == 8.0 and fields[2] == "0"
        cold.send("stop")
        await asyncio.sleep(0)
