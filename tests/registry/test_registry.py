"""Registration and discovery on every backend."""

from __future__ import annotations

import asyncio
import json
import random
from pathlib import Path

import pytest

from keel.errors import ValidationError
from keel.registry import (
    DRAINING,
    Discovery,
    Instance,
    InstanceReregistered,
    Registry,
    RegistryEvent,
    select,
)
from keel.store import Store


def inst(n: int, service: str = "orders", **kw: object) -> Instance:
    """An instance on 10.0.0.n:8080."""
    return Instance(service=service, address=f"10.0.0.{n}", port=8080, **kw)  # type: ignore[arg-type]


async def until(discovery: Discovery, service: str, ids: set[str], **kw: object) -> None:
    """Wait (via subscribe) until discovery returns exactly ``ids``."""
    async with asyncio.timeout(10):
        async for snapshot in discovery.subscribe(service):
            got = {i.id for i in await discovery.instances(service, **kw)}  # type: ignore[arg-type]
            if got == ids or ({i.id for i in snapshot} == ids and not kw):
                return


async def test_register_update_deregister_are_seen(store: Store) -> None:
    """A watcher's cache follows register, status change, metadata update and deregister."""
    async with Registry(store) as registry, Discovery(store) as discovery:
        assert await discovery.instances("orders") == ()
        async with registry.register(inst(1, zone="a", tags=("blue",))) as reg:
            await until(discovery, "orders", {"10.0.0.1:8080"})
            await reg.update(metadata={"build": "42"}, weight=300)
            async with asyncio.timeout(10):
                async for snapshot in discovery.subscribe("orders"):
                    if snapshot and snapshot[0].weight == 300:
                        assert snapshot[0].metadata == {"build": "42"}
                        break
            await reg.set_status(DRAINING)
            await until(discovery, "orders", set())
            draining = await discovery.instances("orders", include_draining=True)
            assert [i.status for i in draining] == [DRAINING]
        await until(discovery, "orders", set(), include_draining=True)


async def test_record_is_readable_json_on_the_session_lease(store: Store) -> None:
    """The key layout and JSON record are the documented ones, attached to the lease."""
    async with Registry(store) as registry:
        await registry.register(inst(7, version="1.2.0", metadata={"team": "core"}))
        kv = await store.get("services/orders/10.0.0.7:8080")
        assert kv is not None and kv.lease == registry.session.lease_id
        record = json.loads(kv.value)
        assert record["address"] == "10.0.0.7" and record["port"] == 8080
        assert record["status"] == "UP" and record["metadata"] == {"team": "core"}
        assert record["weight"] == 100 and record["version"] == "1.2.0"


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"service": "Orders"}, "service name"),
        ({"port": 0}, "port"),
        ({"port": 70000}, "port"),
        ({"weight": 0}, "weight"),
        ({"weight": 1001}, "weight"),
        ({"address": ""}, "address"),
        ({"scheme": "ftp"}, "scheme"),
        ({"id": "has space"}, "instance id"),
        ({"status": "DOWN"}, "status"),
    ],
)
def test_bad_instances_are_refused(kwargs: dict[str, object], field: str) -> None:
    """Invalid fields raise ValidationError naming the field."""
    base: dict[str, object] = {"service": "orders", "address": "10.0.0.1", "port": 80}
    with pytest.raises(ValidationError, match=field):
        Instance(**{**base, **kwargs})  # type: ignore[arg-type]


async def test_bad_update_writes_nothing(store: Store) -> None:
    """An invalid update is refused and the stored record is unchanged."""
    async with Registry(store) as registry:
        reg = await registry.register(inst(1))
        before = await store.get(reg.instance.key)
        with pytest.raises(ValidationError, match="weight"):
            await reg.update(weight=5000)
        with pytest.raises(ValidationError, match="cannot change port"):
            await reg.update(port=81)
        after = await store.get(reg.instance.key)
        assert before is not None and after is not None
        assert after.mod_revision == before.mod_revision


async def test_cache_started_during_churn_ends_equal_to_the_store(store: Store) -> None:
    """Discovery started while instances come and go converges to the store's truth."""
    rng = random.Random(7)
    async with Registry(store) as registry:
        live: dict[int, object] = {}

        async def churn() -> None:
            for _ in range(60):
                n = rng.randrange(1, 16)
                if n in live:
                    await live.pop(n).deregister()  # type: ignore[attr-defined]
                else:
                    live[n] = await registry.register(inst(n))

        writer = asyncio.ensure_future(churn())
        async with Discovery(store) as discovery:
            await asyncio.sleep(0)
            await discovery.instances("orders")
            await writer
            truth = {f"10.0.0.{n}:8080" for n in live}
            await until(discovery, "orders", truth)


async def test_reregisters_after_session_loss(store: Store) -> None:
    """When the lease is lost, the registry re-registers on a new lease and says so."""
    events: list[RegistryEvent] = []
    reregistered = asyncio.Event()

    def listen(event: RegistryEvent) -> None:
        events.append(event)
        if isinstance(event, InstanceReregistered):
            reregistered.set()

    async with Registry(store, ttl_s=2) as registry, Discovery(store) as discovery:
        registry.on_event(listen)
        reg = await registry.register(inst(3))
        old_lease = registry.session.lease_id
        await store.revoke(old_lease)  # as if the lease expired during an outage
        await until(discovery, "orders", {"10.0.0.3:8080"})
        async with asyncio.timeout(10):
            await reregistered.wait()
        kv = await store.get(reg.instance.key)
        assert kv is not None and kv.lease == registry.session.lease_id != old_lease
        kvs, _ = await store.range("services/")
        assert len(kvs) == 1


def test_protection_threshold() -> None:
    """Under the threshold every UP instance is returned; above it, only healthy ones."""
    pool = [inst(1), inst(2), inst(3)]
    failing = {"10.0.0.1:8080", "10.0.0.2:8080"}
    assert [i.id for i in select(pool, failing)] == ["10.0.0.3:8080"]
    assert len(select(pool, failing, protect_threshold=0.5)) == 3
    assert len(select(pool, {"10.0.0.1:8080"}, protect_threshold=0.5)) == 2


def test_filters_by_zone_tags_version() -> None:
    """zone, tags and version (with a trailing *) narrow the list."""
    pool = [
        inst(1, zone="a", tags=("canary",), version="2.1.0"),
        inst(2, zone="b", version="2.0.3"),
        inst(3, zone="a", version="1.9.0"),
    ]
    assert [i.id for i in select(pool, set(), zone="a")] == ["10.0.0.1:8080", "10.0.0.3:8080"]
    assert [i.id for i in select(pool, set(), tags=["canary"])] == ["10.0.0.1:8080"]
    assert [i.id for i in select(pool, set(), version="2.*")] == [
        "10.0.0.1:8080",
        "10.0.0.2:8080",
    ]


async def test_health_marks_exclude_instances(store: Store) -> None:
    """A failing mark under health/ hides an instance; clearing the mark brings it back."""
    async with Registry(store) as registry, Discovery(store) as discovery:
        await registry.register(inst(1))
        await registry.register(inst(2))
        await until(discovery, "orders", {"10.0.0.1:8080", "10.0.0.2:8080"})
        await store.put("health/orders/10.0.0.1:8080", b'{"status": "failing"}')
        await until(discovery, "orders", {"10.0.0.2:8080"})
        await store.delete("health/orders/10.0.0.1:8080")
        await until(discovery, "orders", {"10.0.0.1:8080", "10.0.0.2:8080"})


async def test_lookups_after_the_first_do_no_io(store: Store) -> None:
    """Once loaded, cached() answers with no store access (even a closed store)."""
    async with Registry(store) as registry, Discovery(store) as discovery:
        await registry.register(inst(1))
        await until(discovery, "orders", {"10.0.0.1:8080"})
        cached = discovery.cached("orders")
        assert cached is not None and [i.id for i in cached] == ["10.0.0.1:8080"]
        assert discovery.cached("orders") is cached  # the same tuple until a change
        assert discovery.cached("payments") is None


async def test_snapshot_written_for_cold_start(store: Store, tmp_path: Path) -> None:
    """Discovery keeps a JSON snapshot per service for starting while the store is down."""
    async with Registry(store) as registry, Discovery(store, snapshot_dir=tmp_path) as discovery:
        await registry.register(inst(4))
        await until(discovery, "orders", {"10.0.0.4:8080"})
    body = json.loads((tmp_path / "orders.json").read_text())
    assert [r["id"] for r in body["instances"]] == ["10.0.0.4:8080"]
