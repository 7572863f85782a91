"""Session: a lease kept alive, loss surfaced, revoke on exit."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from keel.backends.memory import MemoryStore
from keel.coord import Session, next_step
from keel.coord._session import attempt_budget, loss_deadline
from keel.errors import SessionLostError, ValidationError
from keel.store import Store
from keel.testing import FakeClock


def test_next_step_renews_every_third_of_the_ttl() -> None:
    """While renewals succeed the next one is ttl/3 away."""
    assert next_step(now=10.0, last_sent=10.0, ttl_s=9, failed=False) == pytest.approx(3.0)


def test_next_step_retries_faster_after_a_failure() -> None:
    """After a failure the retry comes at ttl/10, never past the loss deadline."""
    assert next_step(now=10.0, last_sent=7.0, ttl_s=9, failed=True) == pytest.approx(0.9)
    # deadline = 7 + 9 - 0.9 = 15.1
    assert next_step(now=14.6, last_sent=7.0, ttl_s=9, failed=True) == pytest.approx(0.5)
    assert next_step(now=15.08, last_sent=7.0, ttl_s=9, failed=True) == pytest.approx(0.02)


def test_next_step_declares_loss_at_the_deadline() -> None:
    """Loss comes at sent + ttl - margin, before the store can expire the lease."""
    assert next_step(now=15.1, last_sent=7.0, ttl_s=9, failed=True) is None
    assert next_step(now=16.0, last_sent=7.0, ttl_s=9, failed=True) is None


def test_loss_deadline_keeps_a_margin_of_a_tenth_and_at_least_100_ms() -> None:
    """The margin is max(0.1 s, ttl/10), counted back from sent + ttl."""
    assert loss_deadline(last_sent=100.0, ttl_s=3) == pytest.approx(102.7)
    assert loss_deadline(last_sent=100.0, ttl_s=30) == pytest.approx(127.0)
    assert loss_deadline(last_sent=100.0, ttl_s=1) == pytest.approx(100.9)


def test_attempt_budget_ends_at_the_deadline() -> None:
    """A renewal may run until the deadline, and nothing after it."""
    assert attempt_budget(now=101.0, last_sent=100.0, ttl_s=3) == pytest.approx(1.7)
    assert attempt_budget(now=102.2, last_sent=100.0, ttl_s=3) == pytest.approx(0.5)
    assert attempt_budget(now=103.0, last_sent=100.0, ttl_s=3) == 0.0


class _StalledStore(MemoryStore):
    """A memory store whose renewals stop being answered once ``stall`` is set."""

    def __init__(self, clock: FakeClock) -> None:
        super().__init__(clock=clock)
        self.stall = asyncio.Event()
        self.renewals: list[float] = []
        self._fake = clock

    async def _do_keepalive(self, lease_id: int) -> int:
        if self.stall.is_set():
            await asyncio.Event().wait()  # a partitioned member: no answer, ever
        self.renewals.append(self._fake.monotonic())
        return await super()._do_keepalive(lease_id)


async def test_unanswered_renewals_are_cut_off_and_loss_precedes_expiry() -> None:
    """With renewals hanging, loss fires at last renewal + ttl - margin, lease still alive."""
    clock = FakeClock(autojump=True)
    store = await _StalledStore(clock).start()
    try:
        async with Session(store, ttl_s=3, clock=clock) as session:
            while len(store.renewals) < 2:
                await clock.sleep(0.5)
            store.stall.set()
            async with asyncio.timeout(2):
                await session.lost
            lost_at = clock.monotonic()
            last = store.renewals[-1]
            assert lost_at == pytest.approx(loss_deadline(last_sent=last, ttl_s=3))
            info = await store.time_to_live(session._lease_id)
            assert info is not None and info.ttl > 0  # the store has not expired it yet
            assert session.statistics().failures >= 1
    finally:
        await store.close()


async def test_session_holds_its_lease_for_five_ttls(store: Store) -> None:
    """Keepalive holds the lease and its keys for 5 x TTL."""
    async with Session(store, ttl_s=1) as session:
        await store.put("owned", b"x", lease=session.lease_id)
        await asyncio.sleep(5.0)
        assert not session.lost.is_set()
        assert await store.get("owned") is not None
        assert session.statistics().keepalives >= 10


async def test_closing_revokes_at_once(store: Store) -> None:
    """Leaving the session deletes its keys without waiting for the TTL."""
    async with Session(store, ttl_s=30) as session:
        await store.put("owned", b"x", lease=session.lease_id)
        lease_id = session.lease_id
    assert await store.get("owned") is None
    assert await store.time_to_live(lease_id) is None
    assert session.lost.is_set()
    with pytest.raises(SessionLostError):
        _ = session.lease_id


async def test_revoked_lease_is_lost_at_the_next_renewal(store: Store) -> None:
    """If the lease disappears under the session, `lost` fires with a reason."""
    async with Session(store, ttl_s=1) as session:
        await store.revoke(session.lease_id)
        async with asyncio.timeout(3):
            reason = await session.lost
    assert "expired or was revoked" in reason


async def test_unrenewable_session_is_lost_after_its_ttl() -> None:
    """With keepalives failing, `lost` fires once the TTL has passed (fake time)."""
    clock = FakeClock(autojump=True)
    store = await MemoryStore(clock=clock).start()
    try:
        async with Session(store, ttl_s=3, clock=clock) as session:
            await store.close()  # every keepalive now fails
            async with asyncio.timeout(2):
                reason = await session.lost
            assert "not renewed within" in reason
            assert session.statistics().failures >= 2
    finally:
        await store.close()


def test_bad_ttl_is_refused() -> None:
    """A TTL that is not whole seconds >= 1 is bad input."""
    with pytest.raises(ValidationError, match="whole seconds"):
        Session(MemoryStore(), ttl_s=0)


async def test_a_session_cancelled_while_granting_leaves_no_lease(store: Store) -> None:
    """Cancelled during its grant (a thread on sqlite), a session revokes the lease it got."""
    before = set(await store.leases())  # etcd's leases are the cluster's, other tests' too
    for i in range(42):  # cancelled at different points of the grant's way
        session = Session(store, ttl_s=30)
        opening = asyncio.create_task(session.__aenter__())
        for _ in range(i % 6):
            await asyncio.sleep(0)
        if i % 7 == 0:
            await asyncio.sleep(0.0005)
        opening.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await opening
        if not opening.cancelled():  # it finished first: close it as a caller would
            await session.__aexit__(None, None, None)
    assert set(await store.leases()) - before == set()
