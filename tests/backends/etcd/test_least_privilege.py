"""The etcd backend with auth on, as a user allowed only the store's root prefix."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

import keel
from keel.coord import Lock, Session
from keel.errors import AuthError
from keel.store import Put, Store
from keel.testing import EtcdCluster

pytestmark = [pytest.mark.etcd, pytest.mark.slow]


@pytest.fixture(scope="module")
def cluster() -> Iterator[EtcdCluster]:
    """One auth-enabled etcd member with least-privilege users.

    ``keel`` may read and write ``/keel/`` only, ``staging`` only ``/staging/``,
    and ``nobody`` nothing at all.
    """
    with EtcdCluster(1) as etcd:
        etcd.enable_auth("rootpw")
        etcd.add_user("keel", "pw", readwrite=("/keel/",))
        etcd.add_user("staging", "pw", readwrite=("/staging/",))
        etcd.add_user("nobody", "pw")
        yield etcd


def _url(cluster: EtcdCluster, user: str, root: str = "/keel/", timeout_s: float = 5) -> str:
    who = cluster.url.replace("etcd://", f"etcd://{user}:pw@")
    return f"{who}?root={root}&timeout_s={timeout_s:g}"


async def _kv_and_leases(store: Store) -> None:
    """put/get/range/txn/delete, lease grant/keepalive/time_to_live/revoke, status, compact."""
    rev = await store.put("cfg/a", b"1")
    kv = await store.get("cfg/a")
    assert kv is not None and kv.mod_revision == rev
    kvs, _ = await store.range("cfg/")
    assert [kv.key for kv in kvs] == ["cfg/a"]
    result = await store.txn([], [Put("cfg/b", b"2")], [])
    assert result.succeeded
    lease = await store.grant(30)
    assert await store.keepalive(lease.id) == 30
    await store.put("cfg/leased", b"x", lease=lease.id)
    info = await store.time_to_live(lease.id)
    assert info is not None and info.keys == ("cfg/leased",)
    assert lease.id in await store.leases()
    await store.revoke(lease.id)
    assert await store.get("cfg/leased") is None
    status = await store.status()
    assert status.keys == 2
    await store.compact(rev)
    assert await store.delete("cfg/", prefix=True) == 2


async def test_a_user_allowed_only_the_root_prefix_does_everything(cluster: EtcdCluster) -> None:
    """readwrite on /keel/ alone is enough: KV, txn, leases, status, compact."""
    async with asyncio.timeout(30), keel.connect(_url(cluster, "keel")) as store:
        await _kv_and_leases(store)


async def test_a_session_lock_and_watch_work_for_a_least_privilege_user(
    cluster: EtcdCluster,
) -> None:
    """A Session (lease + keepalive stream), a Lock and a watch work with readwrite on /keel/."""
    async with (
        asyncio.timeout(30),
        keel.connect(_url(cluster, "keel")) as store,
        store.watch("locks/", prefix=True) as events,
    ):
        async with Session(store, ttl_s=5) as session:
            kept = await store.keepalive(session.lease_id)
            async with Lock(session, "report") as held:
                created = await anext(events)
                assert created.kv.key == held.key
                assert created.kv.lease == session.lease_id
        deleted = await anext(events)
    assert kept == 5
    assert deleted.kv.key == held.key and deleted.revision > held.fencing_token


async def test_another_root_prefix_needs_only_its_own_grant(cluster: EtcdCluster) -> None:
    """A user with readwrite on /staging/ alone works with ?root=/staging/."""
    async with asyncio.timeout(30), keel.connect(_url(cluster, "staging", "/staging/")) as store:
        await _kv_and_leases(store)


async def test_a_user_without_permission_is_told_which_prefix_to_grant(
    cluster: EtcdCluster,
) -> None:
    """No permission at all: an AuthError at connect naming the prefix and the etcdctl grant."""
    with pytest.raises(AuthError) as info:
        async with asyncio.timeout(20):
            await keel.connect(_url(cluster, "nobody", timeout_s=2))
    message = str(info.value)
    assert "readwrite /keel/" in message and "grant-permission" in message


async def test_a_root_outside_the_granted_prefix_names_that_root(cluster: EtcdCluster) -> None:
    """A user allowed /keel/ who connects with ?root=/prod/ is told to grant /prod/."""
    with pytest.raises(AuthError, match="--prefix=true readwrite /prod/"):
        async with asyncio.timeout(20):
            await keel.connect(_url(cluster, "keel", "/prod/", timeout_s=2))
