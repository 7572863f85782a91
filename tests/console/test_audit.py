"""The console's audit log on every backend: ids, pages, retention, hostile records."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime

import pytest
from prometheus_client import REGISTRY

from keel.console._audit import (
    AUDIT_PREFIX,
    AUDIT_SEQ,
    BUCKET,
    MAX_RECORD,
    Audit,
    decode_entry,
    entry_key,
)
from keel.errors import ValidationError
from keel.store import Store
from keel.testing import FakeClock


def rejected_total() -> float:
    """The current value of keel_records_rejected_total{area="audit"}."""
    return REGISTRY.get_sample_value("keel_records_rejected_total", {"area": "audit"}) or 0.0


async def test_record_is_readable_json_and_recent_is_newest_first(store: Store) -> None:
    """record() writes the documented JSON; recent() returns the newest entries first."""
    clock = FakeClock()
    audit = Audit(store, clock=clock)
    first = await audit.record(
        "alice", "config.publish", "config/orders.yaml", before=3, after=4, detail={"n": 1}
    )
    second = await audit.record("bob", "instance.drain", "instance/orders/i-1", after=True)
    assert (first.id, second.id) == (1, 2)
    kv = await store.get(entry_key(1))
    assert kv is not None and kv.key.startswith(AUDIT_PREFIX) and kv.lease == 0
    record = json.loads(kv.value)
    assert record == {
        "id": 1,
        "at": first.at.isoformat(),
        "actor": "alice",
        "action": "config.publish",
        "target": "config/orders.yaml",
        "before": 3,
        "after": 4,
        "detail": {"n": 1},
    }
    assert first.at == clock.now() and first.at.tzinfo is not None
    assert await audit.recent() == [second, first]
    assert await audit.recent(1) == [second]
    assert await audit.get(1) == first and await audit.get("2") == second
    assert await audit.get(3) is None


async def test_pages_follow_each_other_across_buckets(store: Store) -> None:
    """before_id pages through every entry once, newest first, across bucket boundaries."""
    audit = Audit(store)
    total = BUCKET + 37
    for n in range(total):
        await audit.record("ops", "job.trigger", f"job/{n}")
    seen: list[int] = []
    page = await audit.recent(30)
    while page:
        seen += [e.id for e in page]
        page = await audit.recent(30, before_id=page[-1].id)
    assert seen == list(range(total, 0, -1))
    assert [e.id for e in await audit.recent(5, before_id=BUCKET + 1)] == list(
        range(BUCKET, BUCKET - 5, -1)
    )
    assert await audit.recent(5, before_id=1) == []


async def test_retention_keeps_the_newest_entries(store: Store) -> None:
    """Past ``retain`` entries, whole old buckets are dropped; the newest ``retain`` stay."""
    audit = Audit(store, retain=BUCKET)
    for n in range(3 * BUCKET + 10):
        await audit.record("ops", "config.publish", f"config/{n}")
    kvs, _ = await store.range(AUDIT_PREFIX)
    ids = sorted(decode_entry(kv.key, kv.value).id for kv in kvs)
    assert ids[-1] == 3 * BUCKET + 10
    assert BUCKET <= len(ids) <= 2 * BUCKET + 10
    assert ids == list(range(ids[0], ids[-1] + 1))  # no hole among the kept ones


async def test_concurrent_writers_get_distinct_ids(store: Store) -> None:
    """Two console processes (two Audit objects) recording at once never share an id."""
    one, two = Audit(store), Audit(store)
    entries = await asyncio.gather(
        *(a.record("u", "x.y", f"t/{n}") for n in range(10) for a in (one, two))
    )
    assert sorted(e.id for e in entries) == list(range(1, 21))
    assert len(await one.recent(100)) == 20


async def test_a_lost_or_stale_counter_is_recovered(store: Store) -> None:
    """If the sequence key is deleted or set back, ids continue after the newest entry."""
    audit = Audit(store)
    for n in range(3):
        await audit.record("u", "x.y", f"t/{n}")
    await store.delete(AUDIT_SEQ)
    assert (await audit.record("u", "x.y", "t/3")).id == 4
    await store.put(AUDIT_SEQ, b"1")
    assert (await audit.record("u", "x.y", "t/4")).id == 5
    await store.put(AUDIT_SEQ, b"junk")
    assert (await audit.record("u", "x.y", "t/5")).id == 6
    assert [e.id for e in await audit.recent()] == [6, 5, 4, 3, 2, 1]


async def test_malformed_records_are_skipped_and_counted(store: Store) -> None:
    """Hostile records under the prefix are skipped (and counted); good ones are served."""
    audit = Audit(store)
    good = await audit.record("alice", "user.add", "user/bob")
    before = rejected_total()
    await store.put(entry_key(7), b'{"id": 7, "actor": ["x"]}')
    await store.put(entry_key(8), b"[" * 5000 + b"]" * 5000)
    await store.put(entry_key(9), json.dumps({**good.to_record(), "id": 10}).encode())
    await store.put(f"{AUDIT_PREFIX}0000000000/stray", b"{}")
    assert await audit.recent() == [good]
    assert rejected_total() >= before + 3
    assert await audit.get(7) is None


async def test_large_values_are_replaced_by_a_notice(store: Store) -> None:
    """A before/after larger than the record budget is stored as a notice, not refused."""
    audit = Audit(store)
    big = "x" * MAX_RECORD
    entry = await audit.record("u", "config.publish", "config/big", before=big, after=2)
    (stored,) = await audit.recent()
    assert stored.id == entry.id and stored.after == 2
    assert isinstance(stored.before, dict) and "too large" in stored.before["omitted"]
    odd = await audit.record("u", "x.y", "t", after=datetime(2026, 1, 1, tzinfo=UTC))
    assert (await audit.get(odd.id)) is not None


@pytest.mark.parametrize(
    ("args", "kwargs", "message"),
    [
        (("", "x.y", "t"), {}, "actor"),
        (("u", "", "t"), {}, "action"),
        (("u", "x.y", "t" * 600), {}, "target"),
        (("u", "x.y", "t"), {"detail": [1]}, "detail"),
        ((1, "x.y", "t"), {}, "actor"),
    ],
)
async def test_bad_input_writes_nothing(
    store: Store, args: tuple[object, ...], kwargs: dict[str, object], message: str
) -> None:
    """Empty or overlong texts and a non-object detail are refused; nothing is written."""
    _, revision = await store.range("")
    with pytest.raises(ValidationError, match=message):
        await Audit(store).record(*args, **kwargs)  # type: ignore[arg-type]
    assert (await store.range(""))[1] == revision


@pytest.mark.parametrize(
    ("limit", "before_id"),
    [(0, None), (1001, None), (True, None), (10, 0), (10, "x"), (10, -1), (10, 10**13)],
)
async def test_bad_page_arguments_are_refused(store: Store, limit: int, before_id: object) -> None:
    """recent() refuses a limit outside 1..1000 and an id that is not a positive number."""
    with pytest.raises(ValidationError):
        await Audit(store).recent(limit, before_id=before_id)  # type: ignore[arg-type]


def test_retain_below_a_bucket_is_refused() -> None:
    """Keeping fewer than one bucket of entries is refused at construction."""
    with pytest.raises(ValidationError, match="retain"):
        Audit(None, retain=10)  # type: ignore[arg-type]
