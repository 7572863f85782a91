"""Lease keepalives: one LeaseKeepAlive stream per connection, for every lease.

aetcd's ``refresh()`` opens a new stream for each renewal (measured 2.2x
slower than reusing one). Here one stream carries every lease: a renewal
writes a request with the lease id and waits for the next response with that
id (responses for one id come back in request order, so waiters of one id are
served first in, first out). Renewing is idempotent, so when the stream breaks
the requests still waiting are simply sent again on the new stream.

A caller that gives up (its timeout, a cancelled task) leaves its request on
the stream; the answer to it still comes, first. It is counted as *orphaned*
and its answer dropped, so every caller gets the answer to a request written
after it called. That is what lets a session count its lease's expiry from
the moment it asked: an older request, renewed by etcd before the caller
asked, never passes for the caller's own renewal.
"""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from aetcd import rpc

from keel.backends.etcd._channel import Member
from keel.backends.etcd._stream import SharedStream
from keel.errors import KeelError, LeaseNotFoundError, StoreUnavailableError

__all__ = ["KeepAliveHub"]

# A renewal is answered in milliseconds; one second of total silence on the
# stream means the member stopped answering (frozen, or cut off by a partition
# that drops packets without closing the connection).
_SILENCE_S = 1.0


@dataclass(slots=True, eq=False)
class _Waiter:
    future: asyncio.Future[int] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )
    sent_on: int = -1  # the stream generation that carries this request
    received_before: int = 0  # messages the hub had read when this request was written


class KeepAliveHub(SharedStream):
    """The connection's one LeaseKeepAlive stream and the renewals waiting on it."""

    name = "keepalive"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._waiters: dict[int, deque[_Waiter]] = {}
        self._orphans: dict[int, int] = {}  # answers still due on this stream to no one

    async def renew(self, lease_id: int) -> int:
        """Renew ``lease_id``; return its TTL.

        A renewal that goes unanswered for a second while nothing at all
        comes on the stream makes the connection move to the next member,
        where the renewal is sent again: a member cut off by a partition may
        keep the connection open and answer nothing.

        Raises:
            LeaseNotFoundError: the lease expired or was revoked (etcd answers TTL 0).
            StoreUnavailableError: no answer within the connection's timeout.
        """
        waiter = _Waiter()
        self._waiters.setdefault(lease_id, deque()).append(waiter)
        self.ensure_running()
        try:
            ttl = await self._wait(lease_id, waiter)
        except BaseException:  # timed out, or the caller gave up at its own deadline
            await self._leave_if_silent(waiter)
            raise
        finally:
            self._forget(lease_id, waiter)
        if ttl <= 0:
            raise LeaseNotFoundError(f"lease {lease_id} not found (expired or revoked)")
        return ttl

    async def _wait(self, lease_id: int, waiter: _Waiter) -> int:
        timeout_s = self._conn.settings.timeout_s
        silence_s = min(_SILENCE_S, timeout_s / 3)
        try:
            async with asyncio.timeout(timeout_s):
                async with self._lock:
                    if waiter.sent_on != self.generation:
                        await self._send_one(lease_id, waiter)
                while True:
                    done, _ = await asyncio.wait({waiter.future}, timeout=silence_s)
                    if done:
                        return waiter.future.result()
                    await self._leave_if_silent(waiter)  # the new stream resends it
        except TimeoutError:
            raise StoreUnavailableError(
                f"etcd did not renew lease {lease_id} within {timeout_s:g}s "
                f"(endpoints {', '.join(self._conn.settings.endpoints)})"
            ) from None

    async def _leave_if_silent(self, waiter: _Waiter) -> None:
        """Move off the member if nothing at all came on the stream since ``waiter`` was sent."""
        if waiter.sent_on == self.generation and self.received == waiter.received_before:
            await self.suspect(waiter.sent_on, "a lease renewal went unanswered")

    @staticmethod
    def _request(lease_id: int) -> Any:
        return rpc.LeaseKeepAliveRequest(ID=lease_id)

    def _forget(self, lease_id: int, waiter: _Waiter) -> None:
        if waiter.sent_on == self.generation and not waiter.future.done():
            self._orphans[lease_id] = self._orphans.get(lease_id, 0) + 1
        queue = self._waiters.get(lease_id)
        if queue is not None and waiter in queue:
            queue.remove(waiter)
        if not queue:
            self._waiters.pop(lease_id, None)

    def _open(self, member: Member) -> Any:
        self._conn.keepalive_streams_opened += 1
        return member.lease.LeaseKeepAlive(metadata=self._conn.metadata())

    async def _send_one(self, lease_id: int, waiter: _Waiter) -> None:
        # Marked before the write: the answer may be read before the write returns.
        waiter.sent_on = self.generation
        waiter.received_before = self.received
        if not await self._write(self._request(lease_id)):
            waiter.sent_on = -1

    async def _resend(self) -> None:
        self._orphans.clear()  # a new stream: the old one's answers never come
        for lease_id, queue in list(self._waiters.items()):
            for waiter in list(queue):
                if waiter.sent_on != self.generation:
                    await self._send_one(lease_id, waiter)

    def _on_message(self, message: Any) -> None:
        lease_id = int(message.ID)
        if (orphans := self._orphans.get(lease_id, 0)) > 0:
            # Answers come in request order: this one is for a request nobody awaits.
            if orphans == 1:
                del self._orphans[lease_id]
            else:
                self._orphans[lease_id] = orphans - 1
            return
        for waiter in self._waiters.get(lease_id, ()):
            if waiter.sent_on == self.generation and not waiter.future.done():
                waiter.future.set_result(int(message.TTL))
                return

    def _on_refused(self, exc: KeelError) -> None:
        for queue in self._waiters.values():
            for waiter in queue:
                if not waiter.future.done():
                    waiter.future.set_exception(exc)

    def __repr__(self) -> str:
        pending = sum(len(q) for q in self._waiters.values())
        return f"<KeepAliveHub pending={pending} generation={self.generation}>"
