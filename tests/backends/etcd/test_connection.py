"""The etcd backend's connection: unreachable endpoints, shared streams, status, options."""

from __future__ import annotations

import asyncio
import time

import pytest

import keel
from keel.backends.etcd import EtcdStore
from keel.backends.etcd._convert import KeySpace, prefix_end
from keel.errors import CompactedError, StoreUnavailableError, ValidationError
from keel.testing import EtcdCluster, free_port

pytestmark = pytest.mark.etcd


def _url(cluster: EtcdCluster, root: str) -> str:
    return f"{cluster.url}?root=/{root}/"


def test_prefix_end_is_the_next_key_after_every_extension() -> None:
    """range_end is the prefix with its last byte + 1, skipping trailing 0xff bytes."""
    assert prefix_end(b"/keel/") == b"/keel0"
    assert prefix_end(b"a\xff") == b"b"
    assert prefix_end(b"\xff\xff") == b"\0"
    keys = KeySpace("/r/")
    assert keys.span("", True) == (b"/r/", b"/r0")
    assert keys.span("svc/a", False) == (b"/r/svc/a", b"")
    assert keys.strip(b"/r/svc/a") == "svc/a"


async def test_an_unreachable_endpoint_fails_quickly_naming_it() -> None:
    """Connecting to a port nobody listens on raises StoreUnavailable naming the endpoint."""
    port = free_port()
    started = time.monotonic()
    with pytest.raises(StoreUnavailableError, match=f"127.0.0.1:{port}"):
        async with asyncio.timeout(15):
            await keel.connect(f"etcd://127.0.0.1:{port}?timeout_s=2")
    assert time.monotonic() - started < 15


async def test_a_dead_endpoint_in_the_list_is_skipped(etcd_cluster: EtcdCluster) -> None:
    """With a dead endpoint first, the store connects to the live one."""
    dead = f"127.0.0.1:{free_port()}"
    url = f"etcd://{dead},{etcd_cluster.endpoints[0]}?root=/skip/&timeout_s=3"
    async with asyncio.timeout(15), keel.connect(url) as store:
        await store.put("k", b"v")
        assert isinstance(store, EtcdStore)
        assert store.endpoint == etcd_cluster.endpoints[0]


async def test_bad_options_are_refused_before_connecting() -> None:
    """A key file without a certificate, or a missing CA file, is a ValidationError."""
    with pytest.raises(ValidationError, match="cert_file and key_file"):
        await keel.connect("etcd://127.0.0.1:1?key_file=/nope.pem")
    with pytest.raises(ValidationError, match="ca_file"):
        await keel.connect("etcd://127.0.0.1:1?ca_file=/definitely/missing.pem")
    with pytest.raises(ValidationError, match="timeout_s"):
        await keel.connect("etcd://127.0.0.1:1?timeout_s=-1")


async def test_many_leases_share_one_keepalive_stream(etcd_cluster: EtcdCluster) -> None:
    """Renewing 30 leases, many times and concurrently, opens one keepalive stream."""
    async with asyncio.timeout(30), keel.connect(_url(etcd_cluster, "ka")) as store:
        assert isinstance(store, EtcdStore)
        leases = [await store.grant(10) for _ in range(30)]
        for _ in range(3):
            ttls = await asyncio.gather(*(store.keepalive(lease.id) for lease in leases))
            assert ttls == [10] * 30
        stats = store.statistics()
        for lease in leases:
            await store.revoke(lease.id)
    assert stats.keepalive_streams_opened == 1


async def test_many_watches_share_one_watch_stream(etcd_cluster: EtcdCluster) -> None:
    """Ten watches on one connection ride one Watch stream, each seeing only its key."""
    async with asyncio.timeout(30), keel.connect(_url(etcd_cluster, "ws")) as store:
        assert isinstance(store, EtcdStore)
        watches = [await store.watch(f"k{i}").start() for i in range(10)]
        revisions = [await store.put(f"k{i}", b"v") for i in range(10)]
        for watch, rev in zip(watches, revisions, strict=True):
            event = await anext(watch)
            assert event.revision == rev
            await watch.aclose()
        assert store.statistics().watch_streams_opened == 1


async def test_compacted_watch_and_read_report_the_compaction_point(
    etcd_cluster: EtcdCluster,
) -> None:
    """Reads and watches below the compaction point carry etcd's compact revision."""
    async with asyncio.timeout(30), keel.connect(_url(etcd_cluster, "cmp")) as store:
        r1 = await store.put("c", b"1")
        r2 = await store.put("c", b"2")
        await store.compact(r2)
        with pytest.raises(CompactedError) as read_info:
            await store.range("c", revision=r1)
        watch = await store.watch("c", start_revision=r1).start()
        with pytest.raises(CompactedError) as watch_info:
            await anext(watch)
        status = await store.status()
    assert read_info.value.compact_revision == r2
    assert watch_info.value.compact_revision == r2
    assert status.compact_revision >= r2


async def test_status_describes_the_cluster(etcd_cluster: EtcdCluster) -> None:
    """status() names the endpoints, the member in use, and counts keys under the root."""
    async with asyncio.timeout(30), keel.connect(_url(etcd_cluster, "st")) as store:
        await store.put("a", b"1")
        lease = await store.grant(30)
        status = await store.status()
        await store.revoke(lease.id)
    assert status.backend == "etcd" and status.keys == 1 and status.leases >= 1
    assert status.endpoint == etcd_cluster.endpoints[0]
    assert status.details["endpoint"] == etcd_cluster.endpoints[0]
    assert status.details["version"].startswith("3.")
    assert status.size_bytes is not None and status.size_bytes > 0


async def test_time_to_live_of_a_missing_lease_is_none(etcd_cluster: EtcdCluster) -> None:
    """A lease id etcd does not know reads as None, and keepalive on it raises."""
    async with asyncio.timeout(30), keel.connect(_url(etcd_cluster, "ttl")) as store:
        assert await store.time_to_live(424242) is None
        assert 424242 not in await store.leases()
