"""Malformed instance and health records: skipped and counted, never fatal, picked up when fixed."""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

import keel
from keel.errors import StoreClosedError, StoreUnavailableError, ValidationError
from keel.registry import (
    MIN_CHECK_INTERVAL_S,
    MIN_CHECK_TIMEOUT_S,
    Discovery,
    HealthCheck,
    Instance,
    Registry,
    decode_health_mark,
    decode_instance,
)
from keel.store import Store
from keel.testing import EtcdCluster

GOOD = b'{"address":"10.0.0.9","port":8080}'
HOSTILE: dict[str, bytes] = {
    "list-metadata": b'{"address":"1.2.3.4","port":81,"metadata":[1]}',
    "deep": b'{"address":"1.2.3.4","port":81,"metadata":' + b'{"a":' * 5000 + b"1" + b"}" * 5001,
    "deep-list": b"[" * 5000 + b"]" * 5000,
    "not-utf8": b'{"address":"\xff","port":81}',
    "huge-port": b'{"address":"1.2.3.4","port":' + b"9" * 400 + b"}",
    "bool-port": b'{"address":"1.2.3.4","port":true}',
    "str-weight": b'{"address":"1.2.3.4","port":81,"weight":"100"}',
    "tags-dict": b'{"address":"1.2.3.4","port":81,"tags":{"a":1}}',
    "check-list": b'{"address":"1.2.3.4","port":81,"check":[1]}',
    "inf": b'{"address":"1.2.3.4","port":81,"check":{"interval_s":1e999}}',
    "empty": b"{}",
}


def rejected_total(area: str) -> float:
    """The current value of keel_records_rejected_total{area}."""
    return REGISTRY.get_sample_value("keel_records_rejected_total", {"area": area}) or 0.0


async def until_ids(discovery: Discovery, service: str, ids: set[str]) -> None:
    """Wait until discovery's list of ``service`` is exactly ``ids``."""
    async with asyncio.timeout(10):
        async for snapshot in discovery.subscribe(service):
            if {i.id for i in snapshot} == ids:
                return


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_decoder_rejects_with_validation_error(name: str) -> None:
    """Every hostile shape raises ValidationError from decode_instance, nothing else."""
    with pytest.raises(ValidationError):
        decode_instance(f"services/web/{name}", HOSTILE[name])


@pytest.mark.parametrize(
    "record",
    [
        {"address": "1.2.3.4", "port": 81, "zone": 3},
        {"address": "1.2.3.4", "port": 81, "version": ["1"]},
        {"address": "1.2.3.4", "port": 81, "scheme": ["http"]},
        {"address": "1.2.3.4", "port": 81, "status": "DOWN"},
        {"address": "1.2.3.4", "port": 81, "tags": ["a", 1]},
        {"address": "1.2.3.4", "port": 81, "metadata": {"a": {"b": "c"}}},
        {"address": "1.2.3.4", "port": 81, "metadata": {"a": True}},
        {"address": "1.2.3.4", "port": 81, "weight": True},
        {"address": "1.2.3.4", "port": 81, "weight": 5000},
        {"address": "1.2.3.4", "port": 0},
        {"address": "1.2.3.4", "port": 81.0},
        {"address": "1.2.3.4", "port": 81, "registered_at": 17},
        {"address": "1.2.3.4", "port": 81, "check": {"type": "udp"}},
        {"address": "1.2.3.4", "port": 81, "check": {"rise": True}},
        {"address": "1.2.3.4", "port": 81, "check": {"interval_s": "5"}},
        {"address": "1.2.3.4", "port": 81, "check": {"path": "healthz"}},
        {"address": "10.0.0.1/x?", "port": 81},
        {"address": "evil@10.0.0.1", "port": 81},
        {"address": "a b", "port": 81},
        {"address": 7, "port": 81},
    ],
)
def test_decoder_is_strict_about_types(record: dict[str, object]) -> None:
    """A field of the wrong type or out of range rejects the record."""
    with pytest.raises(ValidationError):
        decode_instance("services/web/x", json.dumps(record).encode())


@pytest.mark.parametrize("key", ["services/web/", "services/web/a/b", "services/Web/a"])
def test_decoder_takes_id_and_service_from_a_valid_key(key: str) -> None:
    """A key with no id, a nested id or a bad service name rejects the record."""
    with pytest.raises(ValidationError):
        decode_instance(key, GOOD)


def test_numbers_in_metadata_become_strings() -> None:
    """Another language's numeric metadata values are kept as their JSON text."""
    record = b'{"address":"10.0.0.9","port":8080,"metadata":{"n":5,"f":0.5,"s":"x"}}'
    instance = decode_instance("services/web/a", record)
    assert instance.metadata == {"n": "5", "f": "0.5", "s": "x"}


async def test_hostile_records_do_not_stop_discovery(store: Store) -> None:
    """Each hostile record is skipped and counted; valid changes keep being applied."""
    before = rejected_total("registry")
    async with Registry(store) as registry, Discovery(store) as discovery:
        assert await discovery.instances("web") == ()
        for name, value in HOSTILE.items():
            await store.put(f"services/web/{name}", value)
        await registry.register(Instance(service="web", address="10.0.0.1", port=80, id="ok"))
        await until_ids(discovery, "web", {"ok"})
        assert rejected_total("registry") >= before + len(HOSTILE)
        await store.put("services/web/list-metadata", GOOD)  # fixed: picked up
        await until_ids(discovery, "web", {"ok", "list-metadata"})
        await store.put("services/web/list-metadata", HOSTILE["deep"])  # broken again: dropped
        await until_ids(discovery, "web", {"ok"})


async def test_hostile_records_present_at_load_are_skipped(store: Store) -> None:
    """Malformed records already in the store when discovery loads are skipped."""
    for name, value in HOSTILE.items():
        await store.put(f"services/web/{name}", value)
    await store.put("services/web/good", GOOD)
    async with Discovery(store) as discovery:
        assert [i.id for i in await discovery.instances("web")] == ["good"]


@pytest.mark.parametrize(
    "mark",
    [b"[1]", b"\xff", b"[" * 5000 + b"]" * 5000, b'{"status":["failing"]}', b'{"status":1e999}'],
)
async def test_malformed_health_marks_hide_nothing(store: Store, mark: bytes) -> None:
    """A malformed mark is skipped and counted (area health); the instance stays listed."""
    before = rejected_total("health")
    async with Discovery(store) as discovery:
        await store.put("services/web/a", GOOD)
        await store.put("services/web/b", GOOD)
        await until_ids(discovery, "web", {"a", "b"})
        await store.put("health/web/a", mark)
        await store.put("health/web/b", b'{"status":"failing"}')  # after it on the same watch
        await until_ids(discovery, "web", {"a"})
        assert rejected_total("health") > before
        await store.put("health/web/a", b'{"status":"failing"}')
        await store.delete("health/web/b")
        await until_ids(discovery, "web", {"b"})


async def test_register_outside_async_with_fails_at_once(store: Store) -> None:
    """register() on a registry that was never entered raises a clear error, not a hang."""
    registry = Registry(store)
    async with asyncio.timeout(2):
        with pytest.raises(StoreClosedError, match="async with Registry"):
            await registry.register(Instance(service="web", address="10.0.0.1", port=80))
    assert await store.get("services/web/10.0.0.1:80") is None


async def test_register_after_exit_fails_at_once(store: Store) -> None:
    """register() on a registry already left raises the same clear error."""
    async with Registry(store) as registry:
        pass
    async with asyncio.timeout(2):
        with pytest.raises(StoreClosedError, match="async with Registry"):
            await registry.register(Instance(service="web", address="10.0.0.1", port=80))


async def test_discovery_and_client_outside_async_with_name_themselves() -> None:
    """Discovery and keel.http.Client used without async with say which one to enter."""
    from keel.http import Client

    async with keel.connect("memory://") as store:
        with pytest.raises(StoreClosedError, match=r"async with Discovery"):
            await Discovery(store).instances("web")
        client = Client(store)
        with pytest.raises(StoreClosedError, match=r"async with keel\.http\.Client"):
            await client.get("http://web/x")


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"interval_s": 1e-6}, "interval_s"),
        ({"interval_s": 0.5}, "interval_s"),
        ({"timeout_s": 0.001}, "timeout_s"),
        ({"interval_s": float("nan")}, "interval_s"),
        ({"interval_s": 10**400}, "interval_s"),
        ({"path": "http://10.0.0.1:81/x\n"}, "path"),
        ({"path": "ftp://10.0.0.1/x"}, "path"),
    ],
)
def test_check_below_the_floor_is_refused(kwargs: dict[str, object], field: str) -> None:
    """The API refuses a check interval or timeout under the floor, and malformed targets."""
    with pytest.raises(ValidationError, match=field):
        HealthCheck(**kwargs)  # type: ignore[arg-type]


async def test_hostile_snapshot_is_decoded_like_the_store(tmp_path: Path) -> None:
    """A cold start from a snapshot with malformed entries serves only the valid ones."""
    body = {
        "revision": True,
        "instances": [
            1,
            {"id": "x"},
            {"id": ["l"]},
            {"id": "a", "address": "10.0.0.1", "port": 80},
        ],
        "failing": [1, {"a": 1}, "ghost"],
    }
    (tmp_path / "inv.json").write_text(json.dumps(body))
    (tmp_path / "deep.json").write_bytes(b"[" * 5000 + b"]" * 5000)
    with EtcdCluster(1) as cluster:
        async with keel.connect(f"{cluster.url}?timeout_s=1") as store:
            cluster.kill(0)  # the store is down when discovery starts
            async with Discovery(store, snapshot_dir=tmp_path) as cold, asyncio.timeout(20):
                assert [i.id for i in await cold.instances("inv")] == ["a"]
                assert await cold.failing("inv") == set()
                assert cold.statistics().services["inv"].from_snapshot
                with pytest.raises(StoreUnavailableError):
                    await cold.instances("deep")


def test_record_below_the_floor_is_clamped_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    """A record's 1 µs interval and timeout are raised to the floors, and the key is named."""
    check = {"interval_s": 1e-6, "timeout_s": 1e-6}
    record = json.dumps({"address": "10.0.0.9", "port": 80, "check": check}).encode()
    with caplog.at_level(logging.WARNING, logger="keel.registry"):
        instance = decode_instance("services/web/fast", record)
    assert instance.check is not None
    assert (instance.check.interval_s, instance.check.timeout_s) == (
        MIN_CHECK_INTERVAL_S,
        MIN_CHECK_TIMEOUT_S,
    )
    assert "services/web/fast" in caplog.text and "interval_s" in caplog.text
    for bad in (0, -1, "1", [1]):
        body = {"address": "10.0.0.9", "port": 80, "check": {"interval_s": bad}}
        with pytest.raises(ValidationError):
            decode_instance("services/web/fast", json.dumps(body).encode())


def test_health_mark_decoder() -> None:
    """A mark names its instance from the key; a bad status, type or key is refused."""
    mark = decode_health_mark("health/web/a", b'{"status":"failing","reason":"HTTP 500","since":5}')
    assert (mark.service, mark.instance_id, mark.failing, mark.reason) == (
        "web",
        "a",
        True,
        "HTTP 500",
    )
    for key, value in [
        ("health/web/a", b'{"status":"FAILING"}'),
        ("health/web/a", b'{"status":"failing","since":"now"}'),
        ("health/web/a", b'{"status":"failing","reason":[1]}'),
        ("health/web", b'{"status":"failing"}'),
    ]:
        with pytest.raises(ValidationError):
            decode_health_mark(key, value)
