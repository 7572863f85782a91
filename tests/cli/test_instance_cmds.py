"""``keel instance ...`` and ``keel instances``/``services`` with overrides, as real processes.

The commands run against SQLite and etcd (a memory store lives in one process,
so a separate ``keel`` process cannot share it; the API under them is tested
on memory too, in tests/registry/test_overrides.py).
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

import keel
from keel.console._audit import Audit
from keel.registry import Discovery, Instance, encode_instance
from keel.store import Store
from keel.testing import EtcdCluster
from tests.cli._cli import Result, keel_cli

ONE, TWO = "10.0.0.1:8080", "10.0.0.2:8080"


@pytest.fixture(params=["sqlite", "etcd"])
def cli_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A store URL that outlives one command: a SQLite file or the test etcd."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'cli.db'}"
    cluster: EtcdCluster = request.getfixturevalue("etcd_cluster")
    return f"{cluster.url}?root=/inst-{tmp_path.name}/"


async def seed(store: Store) -> None:
    """Two instances of orders on a long lease, as a running service would hold them."""
    lease = await store.grant(3600)
    for n in (1, 2):
        instance = Instance(service="orders", address=f"10.0.0.{n}", port=8080, weight=100)
        await store.put(instance.key, encode_instance(instance), lease=lease.id)


async def cli(url: str, *args: str) -> Result:
    """Run ``keel --store URL args...`` in a thread (the event loop keeps running)."""
    return await asyncio.to_thread(keel_cli, *args, url=url)


def ok_json(result: Result) -> Any:
    """The JSON a successful command printed."""
    assert result.code == 0, result.err
    return json.loads(result.out)


async def test_overrides_reach_discovery_instances_and_the_audit_log(cli_url: str) -> None:
    """weight/disable/drain from the CLI reach a running Discovery, 'keel instances' and audit."""
    async with keel.connect(cli_url) as store, Discovery(store) as discovery:
        await seed(store)
        assert len(await discovery.instances("orders")) == 2
        weighted = ok_json(
            await cli(cli_url, "instance", "weight", "orders", ONE, "7", "-o", "json")
        )
        assert weighted == {
            "service": "orders",
            "id": ONE,
            "before": None,
            "after": weighted["after"],
        }
        assert weighted["after"]["weight"] == 7
        drained = await cli(
            cli_url, "instance", "drain", "orders", TWO, "--by", "alice", "-m", "disk"
        )
        assert drained.code == 0 and drained.out.decode().strip() == (
            f"orders/{TWO}: draining (was no override)"
        )
        async with asyncio.timeout(10):
            async for listed in discovery.subscribe("orders"):
                if [(i.id, i.weight) for i in listed] == [(ONE, 7)]:
                    break
        rows = ok_json(await cli(cli_url, "instances", "orders", "-o", "json"))
        by_id = {r["id"]: r for r in rows}
        assert by_id[ONE]["weight"] == 7 and by_id[ONE]["override"]["weight"] == 7
        assert by_id[TWO]["status"] == "DRAINING" and by_id[TWO]["override"]["by"] == "alice"
        assert by_id[TWO]["override"]["note"] == "disk" and not by_id[TWO]["disabled"]
        ok_json(await cli(cli_url, "instance", "disable", "orders", ONE, "-o", "json"))
        async with asyncio.timeout(10):
            async for listed in discovery.subscribe("orders"):
                if listed == ():
                    break
        assert discovery.cached("orders") == ()
        services = ok_json(await cli(cli_url, "services", "-o", "json"))
        assert services == [
            {"service": "orders", "up": 0, "draining": 1, "disabled": 1, "failing": 0}
        ]
        table = await cli(cli_url, "instances", "orders")
        assert table.code == 0 and b"DISABLED" in table.out and b"draining by alice" in table.out
        entries = await Audit(store).recent()
        assert [(e.actor, e.detail) for e in entries][:2] == [
            (entries[0].actor, {"op": "disable", "via": "cli"}),
            ("alice", {"op": "drain", "via": "cli"}),
        ]
        assert entries[1].target == f"instance/orders/{TWO}" and entries[1].before is None


async def test_enable_undrain_and_clear_undo(cli_url: str) -> None:
    """enable/undrain remove what disable/drain set; clear removes all; clear of none exits 1."""
    async with keel.connect(cli_url) as store:
        await seed(store)
        for args in (("disable",), ("drain",), ("weight",)):
            extra = ("3",) if args == ("weight",) else ()
            assert (await cli(cli_url, "instance", *args, "orders", ONE, *extra)).code == 0
        undone = ok_json(await cli(cli_url, "instance", "enable", "orders", ONE, "--json"))
        assert undone["after"]["disabled"] is False and undone["after"]["draining"]
        undone = ok_json(await cli(cli_url, "instance", "undrain", "orders", ONE, "-o", "json"))
        assert undone["after"]["weight"] == 3
        cleared = ok_json(await cli(cli_url, "instance", "clear", "orders", ONE, "-o", "json"))
        assert cleared["after"] is None and cleared["before"]["weight"] == 3
        assert await store.get(f"overrides/orders/{ONE}") is None
        again = await cli(cli_url, "instance", "clear", "orders", ONE)
        assert again.code == 1 and len(again.err_lines) == 1 and "no override" in again.err_lines[0]


async def test_unknown_instance_exits_1_unless_forced(cli_url: str) -> None:
    """An instance that is not registered: exit 1 and nothing written; --force writes it."""
    async with keel.connect(cli_url) as store:
        await seed(store)
        _, revision = await store.range("")
        missing = await cli(cli_url, "instance", "disable", "orders", "10.0.0.9:8080")
        assert missing.code == 1 and len(missing.err_lines) == 1
        assert "--force" in missing.err_lines[0] and missing.out == b""
        assert (await store.range(""))[1] == revision
        forced = await cli(cli_url, "instance", "disable", "orders", "10.0.0.9:8080", "--force")
        assert forced.code == 0
        listing = await cli(cli_url, "instances", "orders")
        assert b"waiting for an instance" in listing.out and b"10.0.0.9:8080" in listing.out


@pytest.mark.parametrize(
    "args",
    [
        ["weight", "orders", ONE, "0"],
        ["weight", "orders", ONE, "1001"],
        ["weight", "orders", ONE, "heavy"],
        ["disable", "Orders", ONE],
        ["drain", "orders", "bad id"],
        ["disable", "orders", ONE, "--note", "x" * 2000],
        ["disable", "orders", ONE, "-o", "xml"],
    ],
)
def test_bad_input_exits_2_and_changes_nothing(tmp_path: Path, args: list[str]) -> None:
    """Bad weights, names, ids, notes or formats: exit 2, one line on stderr, no store created."""
    url = f"sqlite:///{tmp_path / 'k.db'}"
    result = keel_cli("instance", *args, url=url)
    assert result.code == 2 and len(result.err_lines) == 1 and result.out == b""
    assert not (tmp_path / "k.db").exists()
