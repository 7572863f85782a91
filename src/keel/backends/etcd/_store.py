"""The etcd store: the contract's calls mapped onto etcd v3's KV, Lease and Maintenance APIs.

The contract is etcd's own model, so most calls map one to one; this module
adds the root prefix, turns responses into keel's types, says which calls are
safe to resend (reads, keepalives and read-only transactions) and fills in
what etcd does not say (the compaction point behind a "compacted" error).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

from aetcd import rpc

from keel.backends.etcd._channel import Connection, EtcdStatistics
from keel.backends.etcd._convert import KeySpace, writes
from keel.backends.etcd._keepalive import KeepAliveHub
from keel.backends.etcd._settings import EtcdSettings
from keel.backends.etcd._watch import EtcdWatch, WatchHub
from keel.errors import AuthError, CompactedError
from keel.store import (
    Compare,
    KeyValue,
    Lease,
    LeaseInfo,
    Op,
    Store,
    StoreStatus,
    StoreURL,
    TxnResult,
    Watch,
)
from keel.store._base import DEFAULT_MAX_VALUE_BYTES, DEFAULT_ROOT

__all__ = ["EtcdStore", "open_etcd"]


class EtcdStore(Store):
    """A store on a real etcd v3 cluster.

    Args:
        settings: endpoints, timeout, TLS and credentials.
        root: the root prefix every key lives under.
        max_value_bytes: the largest value accepted.
    """

    backend = "etcd"

    def __init__(
        self,
        settings: EtcdSettings,
        *,
        root: str = DEFAULT_ROOT,
        max_value_bytes: int = DEFAULT_MAX_VALUE_BYTES,
    ) -> None:
        super().__init__(root=root, max_value_bytes=max_value_bytes)
        self._keys = KeySpace(self.root)
        self._conn = Connection(settings, root=self._keys.root)
        self._watches = WatchHub(self._conn, self._keys)
        self._keepalive = KeepAliveHub(self._conn)

    async def start(self) -> EtcdStore:
        """Connect to the first endpoint that answers (done by :func:`keel.connect`)."""
        try:
            await self._conn.connect()
        except BaseException:
            await self._conn.close()
            raise
        return self

    @property
    def endpoint(self) -> str:
        """``host:port`` of the member in use."""
        return self._conn.endpoint

    def statistics(self) -> EtcdStatistics:
        """Counters of the connection: failovers, streams opened, authentications."""
        return self._conn.statistics()

    async def _call(
        self, method: Callable[[Any], Any], request: Any, what: str, *, idempotent: bool
    ) -> Any:
        return await self._conn.call(method, request, what=what, idempotent=idempotent)

    # -- KV ------------------------------------------------------------------------

    async def _do_put(self, key: str, value: bytes, lease: int) -> int:
        request = rpc.PutRequest(key=self._keys.key(key), value=value, lease=lease)
        response = await self._call(lambda m: m.kv.Put, request, f"put {key!r}", idempotent=False)
        return int(response.header.revision)

    async def _do_get(self, key: str) -> KeyValue | None:
        kvs, _ = await self._do_range(key, False, None, None)
        return kvs[0] if kvs else None

    async def _do_range(
        self, key: str, prefix: bool, limit: int | None, revision: int | None
    ) -> tuple[list[KeyValue], int]:
        request = self._keys.range_request(key, prefix, limit, revision)
        try:
            response = await self._call(
                lambda m: m.kv.Range, request, f"range {key!r}", idempotent=True
            )
        except CompactedError as exc:
            raise await self._compacted(exc, revision or 1) from exc.__cause__
        return self._keys.kvs(response.kvs), int(response.header.revision)

    async def _do_delete(self, key: str, prefix: bool) -> int:
        request = self._keys.delete_request(key, prefix)
        response = await self._call(
            lambda m: m.kv.DeleteRange, request, f"delete {key!r}", idempotent=False
        )
        return int(response.deleted)

    async def _do_txn(
        self, compare: tuple[Compare, ...], success: tuple[Op, ...], failure: tuple[Op, ...]
    ) -> TxnResult:
        request = rpc.TxnRequest(
            compare=[self._keys.compare(c) for c in compare],
            success=[self._keys.op(op) for op in success],
            failure=[self._keys.op(op) for op in failure],
        )
        read_only = not writes(success) and not writes(failure)
        response = await self._call(lambda m: m.kv.Txn, request, "txn", idempotent=read_only)
        ops: Sequence[Op] = success if response.succeeded else failure
        pairs = zip(ops, response.responses, strict=True)
        results = tuple(self._keys.result(op, pb) for op, pb in pairs)
        return TxnResult(bool(response.succeeded), int(response.header.revision), results)

    async def _do_compact(self, revision: int) -> None:
        request = rpc.CompactionRequest(revision=revision)
        try:
            await self._call(
                lambda m: m.kv.Compact, request, f"compact at {revision}", idempotent=False
            )
        except CompactedError as exc:
            raise await self._compacted(exc, revision) from exc.__cause__
        except AuthError as exc:
            if " denied " not in str(exc):
                raise
            raise AuthError(
                f"etcd at {self._conn.endpoint} denied compact at {revision}: compaction "
                f"drops history of the whole cluster, not only of {self.root}, so etcd may "
                f"allow it to the root role only: run it as a user with the root role"
            ) from exc

    async def _compacted(self, exc: CompactedError, below: int) -> CompactedError:
        """``exc`` with etcd's compaction point, found by bisecting readable revisions."""
        point = await self._compact_revision(below)
        return CompactedError(point, f"{exc}: the oldest revision still readable is {point}")

    async def _compact_revision(self, low: int = 1) -> int:
        """The oldest readable revision >= ``low`` (0 if nothing was ever compacted).

        etcd 3.4 reports the compaction point only on watches; a range at
        revision r fails exactly when r is below it, so a bisection of
        count-only reads finds it in log2(revision) calls.
        """
        probe = rpc.RangeRequest(key=self._keys.root, count_only=True)
        head = await self._call(lambda m: m.kv.Range, probe, "status", idempotent=True)
        high = int(head.header.revision)
        if low <= 1 and await self._readable(1):
            return 0
        while low < high:
            middle = (low + high) // 2
            if await self._readable(middle):
                high = middle
            else:
                low = middle + 1
        return high

    async def _readable(self, revision: int) -> bool:
        probe = rpc.RangeRequest(key=self._keys.root, count_only=True, revision=revision)
        try:
            await self._call(lambda m: m.kv.Range, probe, "status", idempotent=True)
        except CompactedError:
            return False
        return True

    # -- leases --------------------------------------------------------------------

    async def _do_grant(self, ttl: int) -> Lease:
        request = rpc.LeaseGrantRequest(TTL=ttl)
        response = await self._call(
            lambda m: m.lease.LeaseGrant, request, "lease grant", idempotent=False
        )
        return Lease(int(response.ID), int(response.TTL))

    async def _do_keepalive(self, lease_id: int) -> int:
        return await self._keepalive.renew(lease_id)

    async def _do_revoke(self, lease_id: int) -> None:
        request = rpc.LeaseRevokeRequest(ID=lease_id)
        await self._call(
            lambda m: m.lease.LeaseRevoke, request, f"revoke lease {lease_id}", idempotent=False
        )

    async def _do_time_to_live(self, lease_id: int) -> LeaseInfo | None:
        request = rpc.LeaseTimeToLiveRequest(ID=lease_id, keys=True)
        response = await self._call(
            lambda m: m.lease.LeaseTimeToLive, request, "lease time_to_live", idempotent=True
        )
        if int(response.TTL) < 0:
            return None
        root = self._keys.root
        keys = sorted(self._keys.strip(k) for k in response.keys if bytes(k).startswith(root))
        return LeaseInfo(lease_id, int(response.TTL), int(response.grantedTTL), tuple(keys))

    async def _do_leases(self) -> list[int]:
        response = await self._call(
            lambda m: m.lease.LeaseLeases, rpc.LeaseLeasesRequest(), "leases", idempotent=True
        )
        return sorted(int(lease.ID) for lease in response.leases)

    # -- watches, status, close ----------------------------------------------------------

    def _make_watch(self, key: str, prefix: bool, start_revision: int | None) -> Watch:
        return EtcdWatch(self._watches, key, prefix, start_revision)

    async def _do_status(self) -> StoreStatus:
        start, end = self._keys.span("", True)
        count = await self._call(
            lambda m: m.kv.Range,
            rpc.RangeRequest(key=start, range_end=end, count_only=True),
            "status",
            idempotent=True,
        )
        leases = await self._do_leases()
        member, details = await self._member_status()
        return StoreStatus(
            backend="etcd",
            endpoint=",".join(self._conn.settings.endpoints),
            root=self.root,
            revision=int(count.header.revision),
            compact_revision=await self._compact_revision(),
            keys=int(count.count),
            leases=len(leases),
            size_bytes=None if member is None else int(member.dbSize),
            details=details,
        )

    async def _member_status(self) -> tuple[Any, dict[str, str]]:
        """etcd's Maintenance.Status of the member in use, and the details it gives.

        Several etcd releases (3.6.0 on, 3.5.28 on) allow Maintenance.Status
        to the root role only; a least-privilege user then still gets the
        status of its prefix, without the member's size and version.
        """
        endpoint = {"endpoint": self._conn.endpoint}
        try:
            member = await self._call(
                lambda m: m.maintenance.Status, rpc.StatusRequest(), "status", idempotent=True
            )
        except AuthError:
            return None, {**endpoint, "member": "hidden: etcd shows it to the root role only"}
        return member, {
            "version": str(member.version),
            "leader": f"{int(member.leader):x}",
            "member": f"{int(member.header.member_id):x}",
            **endpoint,
            "raft_term": str(int(member.raftTerm)),
        }

    async def _do_close(self) -> None:
        await self._watches.close()
        await self._keepalive.close()
        await self._conn.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return (
            f"<EtcdStore {self._conn.endpoint} of {len(self._conn.settings.endpoints)} "
            f"root={self.root!r} {state}>"
        )


async def open_etcd(url: StoreURL, **options: Any) -> EtcdStore:
    """Open an etcd store for a parsed ``etcd://`` URL (used by :func:`keel.connect`).

    Args:
        url: the parsed URL (endpoints, credentials, root, TLS options).
        **options: override URL options: ``timeout_s``, ``ca_file``, ``cert_file``,
            ``key_file``, ``server_name``, ``tls``; and ``lazy`` (also a URL option):
            do not wait for an endpoint now, connect on the first call (a service
            that must start while etcd is down, running on snapshots).

    Raises:
        StoreUnavailableError: no endpoint answered within the timeout.
        AuthError: bad credentials or a refused/untrusted certificate.
        ValidationError: bad options (missing files, a key without a certificate).
    """
    lazy = str(options.pop("lazy", url.options.get("lazy", ""))).lower() in ("1", "true", "yes")
    url_options = {k: v for k, v in url.options.items() if k != "lazy"}
    settings = EtcdSettings.from_url(replace(url, options=url_options), **options)
    store = EtcdStore(settings, root=url.root, max_value_bytes=url.max_value_bytes)
    return store if lazy else await store.start()
