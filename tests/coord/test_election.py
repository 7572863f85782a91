"""Election on every backend, with candidates in one process."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from keel.coord import Election, Leader, Session
from keel.errors import NotLeaderError
from keel.store import Put, Store
from tests.coord._util import until_keys


async def test_first_candidate_leads(store: Store) -> None:
    """A lone candidate leads at once; leader() reports its value and token."""
    async with Session(store) as session, Election(session, "sched").campaign(b"node-1") as lead:
        leader = await Election(session, "sched").leader()
        assert leader is not None
        assert (leader.value, leader.fencing_token) == (b"node-1", lead.fencing_token)
    assert await Election(session, "sched").leader() is None or session.lost


async def test_resign_hands_over_at_once(store: Store) -> None:
    """When the leader resigns, the next candidate leads without waiting for a TTL."""
    async with Session(store, ttl_s=30) as a, Session(store, ttl_s=30) as b:
        first = await Election(a, "e").campaign("a")
        second = asyncio.ensure_future(Election(b, "e").campaign("b"))
        await until_keys(store, "elections/e/", 2)
        assert not second.done()
        await first.resign()
        async with asyncio.timeout(5):
            lead_b = await second
        assert lead_b.fencing_token > first.fencing_token
        leader = await Election(a, "e").leader()
        assert leader is not None and leader.value == b"b"
        await lead_b.resign()


async def test_proclaim_changes_the_value(store: Store) -> None:
    """proclaim() updates what observers see; after resigning it raises NotLeader."""
    async with Session(store) as session:
        election = Election(session, "p")
        lead = await election.campaign(b"v1")
        await lead.proclaim(b"v2")
        leader = await election.leader()
        assert leader is not None and leader.value == b"v2"
        assert leader.fencing_token == lead.fencing_token
        await lead.resign()
        with pytest.raises(NotLeaderError):
            await lead.proclaim(b"v3")


async def test_observe_follows_leader_changes(store: Store) -> None:
    """observe() yields the current leader and then every change, ending on the latest."""
    async with Session(store) as watcher, Session(store) as a, Session(store) as b:
        seen: list[Leader | None] = []
        done = asyncio.Event()
        started = asyncio.Event()

        async def follow() -> None:
            async for leader in Election(watcher, "o").observe():
                seen.append(leader)
                started.set()
                if leader is not None and leader.value == b"b2":
                    done.set()
                    return

        task = asyncio.ensure_future(follow())
        await started.wait()
        lead_a = await Election(a, "o").campaign(b"a")
        pending_b = asyncio.ensure_future(Election(b, "o").campaign(b"b"))
        await until_keys(store, "elections/o/", 2)
        await lead_a.resign()
        lead_b = await pending_b
        await lead_b.proclaim(b"b2")
        async with asyncio.timeout(10):
            await done.wait()
            await task
        values = [s.value if s is not None else None for s in seen]
        assert values[0] is None and values[-1] == b"b2"
        expected = iter([None, b"a", b"b", b"b2"])
        assert all(v in expected for v in values), values  # in order, none invented
        await lead_b.resign()


async def test_cancelled_campaign_removes_its_key(store: Store) -> None:
    """A campaign that is cancelled while waiting leaves no key behind."""
    async with Session(store) as a, Session(store) as b:
        lead = await Election(a, "c").campaign(b"a")
        pending = asyncio.ensure_future(Election(b, "c").campaign(b"b"))
        await until_keys(store, "elections/c/", 2)
        pending.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await pending
        kvs, _ = await store.range("elections/c/")
        assert [kv.key for kv in kvs] == [lead.key]
        await lead.resign()


async def test_lost_leader_learns_it_and_cannot_commit(store: Store) -> None:
    """A leader whose lease ends sees `lost`, and its guarded writes fail."""
    async with Session(store) as b:
        a = await Session(store, ttl_s=10).__aenter__()
        lead = await Election(a, "l").campaign(b"a")
        pending = asyncio.ensure_future(Election(b, "l").campaign(b"b"))
        await store.revoke(a.lease_id)
        async with asyncio.timeout(10):
            await lead.lost
            lead_b = await pending
        stale = await store.txn([lead.guard()], [Put("state", b"stale")])
        assert not stale.succeeded
        assert lead_b.fencing_token > lead.fencing_token
        await lead_b.resign()
        await a.__aexit__(None, None, None)
