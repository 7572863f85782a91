"""Malformed config records on every backend: readers skip them, publish names the repair."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from prometheus_client import REGISTRY
from pydantic import BaseModel

from keel.config import ConfigCenter, ConfigDocument, LiveConfig, MalformedConfigError
from keel.errors import ConflictError
from keel.observe import ConfigMetrics
from keel.store import Store


class Orders(BaseModel):
    """The settings model used below."""

    timeout_s: float = 1.0
    retries: int = 3


def rejected_total() -> float:
    """``keel_records_rejected_total{area="config"}`` now."""
    return REGISTRY.get_sample_value("keel_records_rejected_total", {"area": "config"}) or 0.0


def valid_record(version: int, content: str) -> bytes:
    """A well-formed current record, as a newer keel or another tool could write it."""
    return ConfigDocument(
        name="orders.yaml", content=content, format="yaml", version=version, md5=""
    ).encode()


def good_fields(**changes: object) -> bytes:
    """The JSON of a good record with some fields replaced."""
    record: dict[str, object] = json.loads(valid_record(2, "timeout_s: 9\n"))
    record.update(changes)
    return json.dumps(record).encode()


BAD_RECORDS = [
    b"[1, 2]",
    b"not json",
    b"\xff\xfe",
    b'{"a": ' * 5000 + b"1" + b"}" * 5000,
    good_fields(content=["timeout_s: 9"]),
    good_fields(version="2"),
    good_fields(version=True),
    good_fields(version=10**30),
    good_fields(format={"yaml": 1}),
    good_fields(published_at=[1]),
]


async def until(live: LiveConfig[Orders], timeout_s: float) -> Orders:
    """Wait until the binding's timeout_s is ``timeout_s`` (already, or after changes)."""
    async with asyncio.timeout(10):
        if live.value.timeout_s == timeout_s:
            return live.value
        async for value in live.changes():
            if value.timeout_s == timeout_s:
                return value
    raise AssertionError("unreachable")


@pytest.mark.parametrize("bad", BAD_RECORDS, ids=range(len(BAD_RECORDS)))
async def test_binding_skips_a_malformed_record_and_applies_the_next(
    store: Store, bad: bytes
) -> None:
    """A malformed current record is skipped and counted; the next valid one is applied."""
    center = ConfigCenter(store)
    await center.publish("orders.yaml", "timeout_s: 2\n")
    before = rejected_total()
    async with center.bind("orders.yaml", Orders, metrics=ConfigMetrics()) as live:
        await store.put("config/orders.yaml", bad)
        await store.put("config/orders.yaml", valid_record(3, "timeout_s: 3\n"))
        assert await until(live, 3) == Orders(timeout_s=3)
        assert live.following
        assert rejected_total() >= before + 1


async def test_binding_skips_a_malformed_gray_record(store: Store) -> None:
    """A malformed gray record is skipped; the main version keeps flowing; a valid gray applies."""
    center = ConfigCenter(store)
    await center.publish("orders.yaml", "timeout_s: 2\n")
    async with center.bind("orders.yaml", Orders, client_id="c1", metrics=ConfigMetrics()) as live:
        await store.put("config-gray/orders.yaml", b'{"rule": [1], "name": 5}')
        await store.put("config/orders.yaml", valid_record(2, "timeout_s: 4\n"))
        assert await until(live, 4) == Orders(timeout_s=4)
        gray = json.loads(valid_record(2, "timeout_s: 6\n"))
        gray.pop("version")
        gray.update(rule={"ids": ["c1"], "labels": {}, "percent": None}, base_version=2)
        await store.put("config-gray/orders.yaml", json.dumps(gray).encode())
        assert await until(live, 6) == Orders(timeout_s=6)
        assert live.following and live.source.gray


async def test_publish_over_a_malformed_record_names_the_repair(store: Store) -> None:
    """publish refuses with the key and the fix; force=True and rollback(force=True) repair it."""
    center = ConfigCenter(store)
    await center.publish("orders.yaml", "timeout_s: 2\n")
    await center.publish("other.yaml", "timeout_s: 1\n")
    await store.put("config/orders.yaml", b"[1, 2]")
    _, revision = await store.range("")
    with pytest.raises(ConflictError, match=r"config/orders\.yaml.*force.*roll back to version 1"):
        await center.publish("orders.yaml", "timeout_s: 3\n")
    with pytest.raises(ConflictError, match="force"):
        await center.rollback("orders.yaml", 1)
    assert (await store.range(""))[1] == revision
    listed = {s.name: s for s in await center.list()}
    assert listed["other.yaml"].version == 1 and not listed["other.yaml"].rejected
    assert listed["orders.yaml"].rejected
    doc = await center.publish("orders.yaml", "timeout_s: 3\n", force=True)
    assert doc.version == 2 and (await center.get("orders.yaml")) == doc
    await store.put("config/orders.yaml", b'{"version": "x"}')
    rolled = await center.rollback("orders.yaml", 1, force=True)
    assert rolled.version == 3 and rolled.content == "timeout_s: 2\n"


async def test_force_never_overrides_a_readable_record(store: Store) -> None:
    """force=True on a readable record still honours expected_version."""
    center = ConfigCenter(store)
    await center.publish("orders.yaml", "timeout_s: 2\n")
    with pytest.raises(ConflictError, match="version 1, not 5"):
        await center.publish("orders.yaml", "timeout_s: 3\n", expected_version=5, force=True)


async def test_history_skips_malformed_entries(store: Store) -> None:
    """A malformed history entry is skipped by history() and does not block the next publish."""
    center = ConfigCenter(store)
    await center.publish("orders.yaml", "timeout_s: 1\n")
    await center.publish("orders.yaml", "timeout_s: 2\n")
    await store.put("config-history/orders.yaml/0000000001", b"{}")
    assert [d.version for d in await center.history("orders.yaml")] == [2]
    assert (await center.publish("orders.yaml", "timeout_s: 3\n")).version == 3


async def test_starting_on_a_malformed_record(store: Store, tmp_path: Path) -> None:
    """A binding that starts on a malformed record runs its snapshot, or raises naming the fix."""
    center = ConfigCenter(store)
    await center.publish("orders.yaml", "timeout_s: 2\n")
    async with center.bind("orders.yaml", Orders, snapshot_dir=tmp_path, metrics=ConfigMetrics()):
        pass
    await store.put("config/orders.yaml", b'{"version": []}')
    with pytest.raises(MalformedConfigError, match=r"config/orders\.yaml.*--force"):
        await center.bind("orders.yaml", Orders, metrics=ConfigMetrics())
    async with center.bind(
        "orders.yaml", Orders, snapshot_dir=tmp_path, metrics=ConfigMetrics()
    ) as live:
        assert live.value == Orders(timeout_s=2) and live.source.from_snapshot
        await center.publish("orders.yaml", "timeout_s: 5\n", force=True)
        assert await until(live, 5) == Orders(timeout_s=5)
