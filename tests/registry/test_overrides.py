"""Operator overrides (weight, disabled, draining) on every backend, and discovery merging them."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from keel.errors import ValidationError
from keel.registry import DRAINING, UP, Discovery, Instance, Override, Overrides, Registry
from keel.store import Store

IDS = {"10.0.0.1:8080", "10.0.0.2:8080", "10.0.0.3:8080"}


def inst(n: int, **kw: object) -> Instance:
    """An instance of orders on 10.0.0.n:8080."""
    return Instance(service="orders", address=f"10.0.0.{n}", port=8080, **kw)  # type: ignore[arg-type]


def iid(n: int) -> str:
    """The id of :func:`inst` ``n``."""
    return f"10.0.0.{n}:8080"


async def settle(
    discovery: Discovery, predicate: Callable[[tuple[Instance, ...]], bool], **kw: object
) -> tuple[Instance, ...]:
    """Wait (via subscribe, bounded) until ``instances("orders", **kw)`` satisfies ``predicate``."""
    async with asyncio.timeout(10):
        async for _ in discovery.subscribe("orders"):
            got = await discovery.instances("orders", **kw)  # type: ignore[arg-type]
            if predicate(got):
                return got
    raise AssertionError("unreachable")


async def caught_up(discovery: Discovery, revision: int) -> None:
    """Wait (via subscribe, bounded) until discovery's cache of orders reflects ``revision``."""
    async with asyncio.timeout(10):
        async for _ in discovery.subscribe("orders"):
            if discovery.statistics().services["orders"].revision >= revision:
                return


def rejected_total(area: str) -> float:
    """The current value of keel_records_rejected_total{area}."""
    return REGISTRY.get_sample_value("keel_records_rejected_total", {"area": area}) or 0.0


def ids(instances: tuple[Instance, ...] | list[Instance] | None) -> set[str]:
    """The ids of a list of instances."""
    return {i.id for i in instances or ()}


async def test_record_is_readable_json_apart_from_the_instance(store: Store) -> None:
    """set() writes overrides/<service>/<id> as JSON on no lease and returns before and after."""
    overrides = Overrides(store)
    before, after = await overrides.set("orders", iid(1), weight=20, by="alice", note="hot disk")
    assert before is None and after is not None
    assert (after.weight, after.disabled, after.draining, after.by) == (20, False, False, "alice")
    kv = await store.get(f"overrides/orders/{iid(1)}")
    assert kv is not None and kv.lease == 0 and after.revision == kv.mod_revision
    record = json.loads(kv.value)
    assert record["weight"] == 20 and record["by"] == "alice" and record["note"] == "hot disk"
    assert record["disabled"] is False and record["at"].endswith("+00:00")
    before2, after2 = await overrides.set("orders", iid(1), draining=True, by="bob")
    assert before2 == after
    assert after2 is not None and (after2.weight, after2.draining, after2.by) == (20, True, "bob")
    assert await overrides.get("orders", iid(1)) == after2
    assert await overrides.list() == [after2] == await overrides.list("orders")
    assert await overrides.list("payments") == []
    assert await overrides.clear("orders", iid(1)) == after2
    assert await overrides.get("orders", iid(1)) is None
    assert await overrides.clear("orders", iid(1)) is None


async def test_an_override_that_changes_nothing_is_deleted(store: Store) -> None:
    """Enabling an instance that was only disabled removes its record."""
    overrides = Overrides(store)
    await overrides.set("orders", iid(1), disabled=True)
    before, after = await overrides.set("orders", iid(1), disabled=False)
    assert before is not None and before.disabled and after is None
    assert await store.get(f"overrides/orders/{iid(1)}") is None
    assert await overrides.set("orders", iid(1), draining=False) == (None, None)
    _, revision = await store.range("")
    assert await overrides.set("orders", iid(2), disabled=False) == (None, None)
    assert (await store.range(""))[1] == revision  # nothing written


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"weight": 0}, "weight"),
        ({"weight": 1001}, "weight"),
        ({"weight": True}, "weight"),
        ({"disabled": "yes"}, "disabled"),
        ({"by": "x" * 300}, "by"),
        ({"note": "x" * 2000}, "note"),
        ({"service": "Orders"}, "service name"),
        ({"instance_id": "has space"}, "instance id"),
    ],
)
async def test_bad_input_writes_nothing(
    store: Store, kwargs: dict[str, object], message: str
) -> None:
    """A bad weight, flag, text, service or id is refused with its name, and nothing is written."""
    args = {"service": "orders", "instance_id": iid(1), "weight": 5, **kwargs}
    _, revision = await store.range("")
    with pytest.raises(ValidationError, match=message):
        await Overrides(store).set(**args)  # type: ignore[arg-type]
    assert (await store.range(""))[1] == revision


async def test_concurrent_operators_keep_each_others_fields(store: Store) -> None:
    """Concurrent set() calls on one instance compose (compare-and-swap), none lost."""
    overrides = Overrides(store)
    await asyncio.gather(
        overrides.set("orders", iid(1), weight=7, by="a"),
        overrides.set("orders", iid(1), draining=True, by="b"),
        overrides.set("orders", iid(1), disabled=True, by="c"),
    )
    final = await overrides.get("orders", iid(1))
    assert final is not None and (final.weight, final.draining, final.disabled) == (7, True, True)


async def test_discovery_merges_weight_disable_and_drain(store: Store) -> None:
    """Weight replaces the registered one; disabled and draining instances leave the list."""
    overrides = Overrides(store)
    async with Registry(store) as registry, Discovery(store) as discovery:
        for n in (1, 2, 3):
            await registry.register(inst(n, weight=100))
        await settle(discovery, lambda got: ids(got) == IDS)
        await overrides.set("orders", iid(1), weight=5, by="alice")
        got = await settle(discovery, lambda got: any(i.weight == 5 for i in got))
        one = next(i for i in got if i.id == iid(1))
        assert one.override is not None and one.override.by == "alice" and one.status == UP
        await overrides.set("orders", iid(2), disabled=True)
        await overrides.set("orders", iid(3), draining=True)
        await settle(discovery, lambda got: ids(got) == {iid(1)})
        assert ids(discovery.cached("orders")) == {iid(1)}
        draining = await discovery.instances("orders", include_draining=True)
        assert ids(draining) == {iid(1), iid(3)}
        assert next(i for i in draining if i.id == iid(3)).status == DRAINING
        every = {i.id: i for i in await discovery.all_instances("orders")}
        assert set(every) == IDS
        disabled = every[iid(2)].override
        assert disabled is not None and disabled.disabled
        await overrides.clear("orders", iid(2))
        await overrides.set("orders", iid(3), draining=False)
        got = await settle(discovery, lambda got: ids(got) == IDS)
        assert {i.id: i.override for i in got if i.override is not None} == {iid(1): one.override}


async def test_all_disabled_leaves_no_instance(store: Store) -> None:
    """An operator who disables every instance gets an empty list, cached() included."""
    overrides = Overrides(store)
    async with Registry(store) as registry, Discovery(store, protect_threshold=1.0) as discovery:
        await registry.register(inst(1))
        await registry.register(inst(2))
        await settle(discovery, lambda got: len(got) == 2)
        await overrides.set("orders", iid(1), disabled=True)
        await overrides.set("orders", iid(2), draining=True)
        await settle(discovery, lambda got: got == ())
        assert discovery.cached("orders") == ()
        assert await discovery.instances("orders", include_draining=True) != ()


async def test_protection_never_brings_back_a_disabled_instance(store: Store) -> None:
    """Under the protection threshold, failing instances return but disabled ones do not."""
    async with Registry(store) as registry, Discovery(store, protect_threshold=0.9) as discovery:
        for n in (1, 2):
            await registry.register(inst(n))
        await store.put(f"health/orders/{iid(2)}", b'{"status": "failing"}')
        await Overrides(store).set("orders", iid(1), disabled=True)
        got = await settle(discovery, lambda got: ids(got) == {iid(2)})
        assert ids(discovery.cached("orders")) == ids(got)


async def test_override_survives_reregistration(store: Store) -> None:
    """An override set before the instance registers applies to it, and again after it returns."""
    overrides = Overrides(store)
    await overrides.set("orders", iid(1), weight=3)
    async with Registry(store) as registry, Discovery(store) as discovery:
        reg = await registry.register(inst(1))
        await settle(discovery, lambda got: [i.weight for i in got] == [3])
        await reg.deregister()
        await settle(discovery, lambda got: got == ())
        await registry.register(inst(1, weight=400))
        got = await settle(discovery, lambda got: len(got) == 1)
        assert got[0].weight == 3 and got[0].override is not None
    assert await overrides.get("orders", iid(1)) is not None


async def test_malformed_override_is_skipped_and_then_fixed(store: Store) -> None:
    """A malformed override changes nothing (instance served as registered); a fix applies."""
    rejected = rejected_total("override")
    async with Registry(store) as registry, Discovery(store) as discovery:
        await registry.register(inst(1, weight=100))
        await settle(discovery, lambda got: len(got) == 1)
        revision = await store.put(
            f"overrides/orders/{iid(1)}", b'{"weight": "heavy", "disabled": true}'
        )
        await caught_up(discovery, revision)
        got = await discovery.instances("orders")
        assert [(i.weight, i.override) for i in got] == [(100, None)]
        assert rejected_total("override") > rejected
        await Overrides(store).set("orders", iid(1), weight=9)  # replaces the malformed record
        got = await settle(discovery, lambda got: [i.weight for i in got] == [9])
        assert got[0].override is not None and not got[0].override.disabled
        assert await Overrides(store).list() != []


async def test_cached_is_rebuilt_once_per_change(store: Store) -> None:
    """cached() returns the same tuple until an override arrives, then a new one with it."""
    async with Registry(store) as registry, Discovery(store) as discovery:
        await registry.register(inst(1))
        await registry.register(inst(2))
        await settle(discovery, lambda got: len(got) == 2)
        first = discovery.cached("orders")
        assert first is not None and discovery.cached("orders") is first
        await Overrides(store).set("orders", iid(2), weight=1)
        await settle(discovery, lambda got: any(i.weight == 1 for i in got))
        second = discovery.cached("orders")
        assert second is not first and second is discovery.cached("orders")


async def test_snapshot_keeps_overrides(store: Store, tmp_path: Path) -> None:
    """The discovery snapshot holds the registered record and the override beside it."""
    async with Registry(store) as registry, Discovery(store, snapshot_dir=tmp_path) as discovery:
        await registry.register(inst(4, weight=100))
        await Overrides(store).set("orders", iid(4), weight=2, by="ops")
        await settle(discovery, lambda got: [i.weight for i in got] == [2])
    body = json.loads((tmp_path / "orders.json").read_text())
    assert [r["weight"] for r in body["instances"]] == [100]
    assert body["overrides"][iid(4)]["weight"] == 2


def test_override_repr_and_describe() -> None:
    """describe() names what an override changes; empty ones say '-'."""
    override = Override(service="orders", instance_id=iid(1), weight=3, draining=True)
    assert override.describe() == "weight=3 draining"
    assert Override(service="orders", instance_id=iid(1)).describe() == "-"
