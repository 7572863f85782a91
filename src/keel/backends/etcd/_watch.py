"""Watches: one etcd Watch stream per connection, multiplexing every watch.

Each :class:`EtcdWatch` gets a client-chosen watch id on the shared stream
(etcd >= 3.4 honours ``WatchCreateRequest.watch_id``), so responses are routed
without relying on the order of "created" replies. Every watch remembers the
next revision it needs (last delivered + 1, or the progress-notified
revision + 1); when the stream is reopened - after the member died, the
connection moved, or the token expired - each watch is created again from
that revision, and anything older is dropped, so there is neither gap nor
duplicate. A start below the compaction point ends the watch with
:class:`CompactedError` carrying etcd's compact revision; a permission
refused ends it with :class:`AuthError`. Any other cancellation by etcd (a
member that lost its leader, for one) is an outage: the stream is reopened
on the next member and the watch created again from its next revision.

A member that stops answering without closing the connection (frozen, or
cut off by a partition that drops packets) would leave the watches silent
until gRPC's keepalive noticed. So when the stream carrying watches has been
quiet for ``timeout_s``, the hub asks etcd for a progress report
(``WatchProgressRequest``, answered at once by a live member); no answer
within another ``timeout_s`` moves the connection to the next member. The
report itself is not used to advance any watch (etcd 3.4 may send it ahead
of watches that are still catching up).
"""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

from aetcd import rpc

from keel.backends.etcd._channel import Connection, Member
from keel.backends.etcd._convert import KeySpace
from keel.backends.etcd._stream import SharedStream, StreamReset
from keel.errors import AuthError, CompactedError, KeelError, StoreUnavailableError
from keel.store import Watch

__all__ = ["EtcdWatch", "WatchHub"]

_PROGRESS = rpc.WatchRequest(progress_request=rpc.WatchProgressRequest())


class EtcdWatch(Watch):
    """A watch carried by the connection's shared Watch stream."""

    def __init__(self, hub: WatchHub, key: str, prefix: bool, start: int | None) -> None:
        super().__init__(key, prefix=prefix, start_revision=start)
        self._hub = hub
        self.watch_id = 0
        self.next_revision: int | None = start
        self.sent_on = -1  # the stream generation that carries this watch

    async def _open(self) -> None:
        await self._hub.add(self)

    async def _close(self) -> None:
        await self._hub.remove(self)


class WatchHub(SharedStream):
    """The connection's one Watch stream and the watches it carries."""

    name = "watch"

    def __init__(self, conn: Connection, keys: KeySpace) -> None:
        super().__init__(conn)
        self._keys = keys
        self._ids = itertools.count(1)
        self._watches: dict[int, EtcdWatch] = {}
        self._created: dict[int, asyncio.Future[None]] = {}

    def _create_request(self, watch: EtcdWatch) -> Any:
        start, end = self._keys.span(watch.key, watch.prefix)
        create = rpc.WatchCreateRequest(
            key=start,
            range_end=end,
            start_revision=watch.next_revision or 0,
            prev_kv=True,
            progress_notify=True,
            watch_id=watch.watch_id,
        )
        return rpc.WatchRequest(create_request=create)

    async def add(self, watch: EtcdWatch) -> None:
        """Register ``watch`` and wait until etcd confirms it (sets its start revision)."""
        watch.watch_id = next(self._ids)
        self._watches[watch.watch_id] = watch
        created = asyncio.get_running_loop().create_future()
        self._created[watch.watch_id] = created
        self.ensure_running()
        async with self._lock:  # else the stream's (re)open sends it
            if watch.sent_on != self.generation:
                await self._send_create(watch)
        timeout_s = self._conn.settings.timeout_s
        try:
            async with asyncio.timeout(timeout_s):
                await created
        except TimeoutError:
            self._watches.pop(watch.watch_id, None)
            raise StoreUnavailableError(
                f"etcd did not confirm a watch on {watch.key!r} within {timeout_s:g}s "
                f"(endpoints {', '.join(self._conn.settings.endpoints)})"
            ) from None
        finally:
            self._created.pop(watch.watch_id, None)

    async def remove(self, watch: EtcdWatch) -> None:
        """Unregister ``watch`` and tell etcd to cancel it."""
        if self._watches.pop(watch.watch_id, None) is not None:
            cancel = rpc.WatchCancelRequest(watch_id=watch.watch_id)
            await self.send(rpc.WatchRequest(cancel_request=cancel))

    def _open(self, member: Member) -> Any:
        self._conn.watch_streams_opened += 1
        return member.watch.Watch(metadata=self._conn.metadata())

    async def _send_create(self, watch: EtcdWatch) -> None:
        # One create per watch per stream: a second would be refused as a duplicate id.
        watch.sent_on = self.generation
        if not await self._write(self._create_request(watch)):
            watch.sent_on = -1

    async def _resend(self) -> None:
        for watch in list(self._watches.values()):
            await self._send_create(watch)

    async def _watchdog(self) -> None:
        loop = asyncio.get_running_loop()
        quiet_s = self._conn.settings.timeout_s
        while True:
            await asyncio.sleep(max(0.1, self.last_message + quiet_s - loop.time()))
            if not self._watches or loop.time() - self.last_message < quiet_s:
                continue
            asked = loop.time()
            await self.send(_PROGRESS)
            await asyncio.sleep(quiet_s)
            if self.last_message < asked:
                raise StreamReset(f"the watch stream was silent for {2 * quiet_s:g}s")

    def _on_message(self, message: Any) -> None:
        watch = self._watches.get(message.watch_id)
        if watch is None:
            return
        if message.created and watch.next_revision is None:
            # start_revision 0 means "after now": now is the reply's header revision.
            watch.next_revision = watch.start_revision = int(message.header.revision) + 1
        if message.compact_revision:
            self._end(watch, CompactedError(int(message.compact_revision)))
        elif message.canceled:
            self._cancelled(watch, str(message.cancel_reason or "no reason given"))
        elif message.events:
            self._deliver(watch, message.events, int(message.header.revision))
        elif not message.created and watch.next_revision is not None:
            # A progress notification: everything up to this revision was sent.
            watch.next_revision = max(watch.next_revision, int(message.header.revision) + 1)
        created = self._created.get(message.watch_id) if message.created else None
        if created is not None and not created.done():
            created.set_result(None)

    def _cancelled(self, watch: EtcdWatch, reason: str) -> None:
        if "permission denied" in reason:
            self._end(
                watch,
                AuthError(
                    f"etcd denied the watch on {watch.key!r} ({reason}): grant the user "
                    f"a role with read permission on the store's root prefix"
                ),
            )
            return
        # etcd gave the watch up (e.g. its member lost the leader): not the caller's
        # problem; move to another member, where the watch is created again.
        raise StreamReset(f"etcd cancelled the watch on {watch.key!r}: {reason}")

    def _deliver(self, watch: EtcdWatch, events: Any, head: int) -> None:
        floor = watch.next_revision or 0
        last = floor - 1
        for pb in events:
            revision = int(pb.kv.mod_revision)
            if revision >= floor:
                watch._deliver(self._keys.event(pb))
                last = max(last, revision)
        if last >= floor:  # the reply's header: the member's newest revision when it sent this
            watch._behind(max(0, head - last))
        watch.next_revision = last + 1

    def _end(self, watch: EtcdWatch, exc: BaseException) -> None:
        self._watches.pop(watch.watch_id, None)
        watch._fail(exc)

    def _on_refused(self, exc: KeelError) -> None:
        for watch in list(self._watches.values()):
            self._end(watch, exc)
        for created in self._created.values():
            if not created.done():
                created.set_result(None)

    async def close(self) -> None:
        """End the stream and every open watch."""
        await super().close()
        for watch in list(self._watches.values()):
            self._end(watch, StopAsyncIteration())

    def __repr__(self) -> str:
        state = "streaming" if self._call is not None else "idle"
        return f"<WatchHub watches={len(self._watches)} generation={self.generation} {state}>"
