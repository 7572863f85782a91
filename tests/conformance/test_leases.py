"""Leases: grant, keepalive, revoke, expiry, and the keys they own, on every backend."""

from __future__ import annotations

import asyncio

import pytest

from keel.errors import LeaseNotFoundError, ValidationError
from keel.store import EventType, Store


async def test_grant_and_time_to_live(store: Store) -> None:
    """A granted lease reports its TTL and the keys attached to it."""
    lease = await store.grant(30)
    await store.put("owned/1", b"a", lease=lease.id)
    await store.put("owned/2", b"b", lease=lease.id)
    info = await store.time_to_live(lease.id)
    assert info is not None
    assert info.granted_ttl == 30 and 25 <= info.ttl <= 30
    assert info.keys == ("owned/1", "owned/2")
    assert lease.id in await store.leases()
    kv = await store.get("owned/1")
    assert kv is not None and kv.lease == lease.id


async def test_revoke_deletes_attached_keys_as_events(store: Store) -> None:
    """Revoking a lease deletes its keys, each a DELETE event with prev_kv."""
    lease = await store.grant(30)
    await store.put("s/a", b"1", lease=lease.id)
    await store.put("s/b", b"2", lease=lease.id)
    await store.put("s/keep", b"3")
    async with store.watch("s/", prefix=True) as events:
        await store.revoke(lease.id)
        async with asyncio.timeout(5):
            seen = [await anext(events), await anext(events)]
    assert [(e.type, e.kv.key) for e in seen] == [
        (EventType.DELETE, "s/a"),
        (EventType.DELETE, "s/b"),
    ]
    assert seen[0].revision == seen[1].revision
    assert seen[0].prev_kv is not None and seen[0].prev_kv.value == b"1"
    kvs, _ = await store.range("s/")
    assert [kv.key for kv in kvs] == ["s/keep"]
    assert await store.time_to_live(lease.id) is None


async def test_expiry_deletes_keys_and_watchers_see_it(store: Store) -> None:
    """A lease nobody keeps alive expires; its keys go away as DELETE events."""
    lease = await store.grant(1)
    await store.put("ephemeral", b"x", lease=lease.id)
    async with store.watch("ephemeral") as events, asyncio.timeout(8):
        event = await anext(events)
    assert event.type is EventType.DELETE and event.kv.key == "ephemeral"
    assert await store.get("ephemeral") is None
    assert await store.time_to_live(lease.id) is None
    with pytest.raises(LeaseNotFoundError):
        await store.keepalive(lease.id)


async def test_keepalive_holds_a_lease_past_its_ttl(store: Store) -> None:
    """Renewing every ttl/3 keeps the lease and its key for several TTLs."""
    lease = await store.grant(1)
    await store.put("held", b"x", lease=lease.id)
    for _ in range(9):
        assert await store.keepalive(lease.id) == 1
        await asyncio.sleep(0.33)
    assert await store.get("held") is not None
    await store.revoke(lease.id)


async def test_unknown_leases_are_reported(store: Store) -> None:
    """Putting on, renewing or revoking a missing lease raises LeaseNotFound."""
    with pytest.raises(LeaseNotFoundError):
        await store.put("k", b"v", lease=987654321)
    with pytest.raises(LeaseNotFoundError):
        await store.keepalive(987654321)
    with pytest.raises(LeaseNotFoundError):
        await store.revoke(987654321)
    assert await store.time_to_live(987654321) is None
    assert await store.get("k") is None


async def test_put_without_lease_detaches(store: Store) -> None:
    """A later put with no lease detaches the key, so revoking no longer deletes it."""
    lease = await store.grant(30)
    await store.put("k", b"1", lease=lease.id)
    await store.put("k", b"2")
    await store.revoke(lease.id)
    kv = await store.get("k")
    assert kv is not None and kv.value == b"2" and kv.lease == 0


async def test_bad_ttl_is_refused(store: Store) -> None:
    """A TTL under one second or not whole is bad input."""
    with pytest.raises(ValidationError, match="whole seconds"):
        await store.grant(0)
    with pytest.raises(ValidationError, match="whole seconds"):
        await store.grant(1.5)  # type: ignore[arg-type]
