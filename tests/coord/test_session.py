"""Session: a lease kept alive, loss surfaced, revoke on exit."""

from __future__ import annotations

import asyncio

import pytest

from keel.backends.memory import MemoryStore
from keel.coord import Session, next_step
from keel.errors import SessionLostError, ValidationError
from keel.store import Store
from keel.testing import FakeClock


def test_next_step_renews_every_third_of_the_ttl() -> None:
    """While renewals succeed the next one is ttl/3 away."""
    assert next_step(now=10.0, last_ok=10.0, ttl_s=9, failed=False) == pytest.approx(3.0)


def test_next_step_retries_faster_after_a_failure() -> None:
    """After a failure the retry comes at ttl/10, never past the expiry."""
    assert next_step(now=10.0, last_ok=7.0, ttl_s=9, failed=True) == pytest.approx(0.9)
    assert next_step(now=15.5, last_ok=7.0, ttl_s=9, failed=True) == pytest.approx(0.5)


def test_next_step_declares_loss_once_the_ttl_has_passed() -> None:
    """With no success for a whole TTL the session is lost."""
    assert next_step(now=16.0, last_ok=7.0, ttl_s=9, failed=True) is None


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
