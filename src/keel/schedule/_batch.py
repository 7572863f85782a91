"""Group commit: concurrent transactions of one worker sent as one store transaction.

A SQLite store commits (and fsyncs) each transaction on its own, so a worker
claiming and finishing hundreds of runs a second is bound by commits, not by
work. Claims and finishes of different runs touch different keys, so the
worker submits them here; whatever is queued while the previous commit is in
flight goes out as one transaction whose compares are all of theirs. If that
combined transaction fails (one compare did not hold), its failure branch has
read every compared key, so each submitter whose compare failed is answered
from that read, and the others are sent again together: every submitter gets
exactly the outcome it would have had by itself, and a conflict costs one
more transaction, not one per submitter.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field

from keel.errors import KeelError
from keel.store import Compare, Delete, Get, KeyValue, Op, Put, Store, TxnResult

__all__ = ["Batcher"]

_WRITES = (Put, Delete)
MAX_OPS = 120  # per branch and for the compares: under etcd's --max-txn-ops of 128


@dataclass
class _Request:
    compare: Sequence[Compare]
    success: Sequence[Op]
    failure: Sequence[Op]
    done: asyncio.Future[TxnResult] = field(default_factory=asyncio.Future)
    writes: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        self.writes = frozenset([op.key for op in self.success if isinstance(op, _WRITES)])


class Batcher:
    """Sends queued transactions together; ``await submit(...)`` gives each its own result.

    Run :meth:`run` as a task for as long as submissions may come.

    Args:
        store: the store.
    """

    def __init__(self, store: Store, *, in_flight: int = 4) -> None:
        self.store = store
        self._queue: list[_Request] = []
        self._wake = asyncio.Event()
        self._slots = asyncio.Semaphore(in_flight)
        self._sending: dict[asyncio.Task[None], list[_Request]] = {}
        self._stopped = False
        self.batches = 0
        self.combined = 0
        self.fallbacks = 0

    async def submit(
        self, compare: Sequence[Compare], success: Sequence[Op], failure: Sequence[Op] = ()
    ) -> TxnResult:
        """Queue one transaction; return its result (as if sent alone).

        A combined success reports the combined revision and no op results
        (submit only writes, or read the results yourself from ``failure``).
        """
        if self._stopped:
            raise KeelError("the group committer has stopped (its worker or planner is stopping)")
        request = _Request(compare, success, failure)
        self._queue.append(request)
        self._wake.set()
        return await request.done

    async def run(self) -> None:
        """Send queued transactions until cancelled, up to ``in_flight`` at once.

        Several batches in flight keep a remote store (etcd) busy while the
        previous answer travels back; on SQLite they queue for its one writer.
        Batches in flight together are independent transactions: each
        request's own compares still decide its outcome. When it is cancelled,
        every submission not yet answered is cancelled too (none waits forever).
        """
        try:
            while True:
                await self._wake.wait()
                self._wake.clear()
                while self._queue:
                    await self._slots.acquire()
                    batch = self._take()
                    task = asyncio.ensure_future(self._send(batch))
                    self._sending[task] = batch
                    task.add_done_callback(self._sent)
        finally:
            self._stopped = True
            for task, batch in list(self._sending.items()):
                task.cancel()
                for request in batch:
                    request.done.cancel()  # (a no-op once answered)
            for request in self._queue:
                request.done.cancel()
            self._queue = []

    def _sent(self, task: asyncio.Task[None]) -> None:
        self._sending.pop(task, None)
        self._slots.release()

    def _take(self) -> list[_Request]:
        """The queued requests that fit one transaction; compares shared by several count once."""
        batch: list[_Request] = []
        keys: set[str] = set()
        compares: set[Compare] = set()
        ops = 0
        rest: list[_Request] = []
        for i, request in enumerate(self._queue):
            if ops >= MAX_OPS or len(compares) >= MAX_OPS:  # full: leave the rest queued
                rest.extend(self._queue[i:])
                break
            writes = request.writes
            new = [c for c in request.compare if c not in compares]
            if batch and (
                ops + len(request.success) > MAX_OPS
                or len(compares) + len(new) > MAX_OPS
                or not writes.isdisjoint(keys)
            ):
                rest.append(request)
                continue
            batch.append(request)
            keys |= writes
            compares.update(new)
            ops += len(request.success)
        self._queue = rest
        return batch

    async def _send(self, batch: list[_Request]) -> None:
        self.batches += 1
        if len(batch) == 1:
            await self._alone(batch[0])
            return
        compares = list(dict.fromkeys(c for r in batch for c in r.compare))
        keys = list(dict.fromkeys(c.key for c in compares))
        try:
            result = await self.store.txn(
                compares,
                [op for r in batch for op in r.success],
                [Get(k) for k in keys],  # on failure: what each compare saw
            )
        except Exception as exc:  # each submitter sees the store's error
            for r in batch:
                if not r.done.done():
                    r.done.set_exception(exc)
            return
        if result.succeeded:
            self.combined += len(batch)
            for r in batch:
                if not r.done.done():
                    r.done.set_result(TxnResult(True, result.revision, ()))
            return
        self.fallbacks += 1
        seen = {
            k: kv if isinstance(kv, KeyValue) else None
            for k, kv in zip(keys, result.results, strict=True)
        }
        self._settle(batch, result.revision, seen)

    def _settle(
        self, batch: list[_Request], revision: int, seen: dict[str, KeyValue | None]
    ) -> None:
        """After a combined failure: answer each request from what its compares saw.

        A request whose compares failed gets its failure result from the same
        read (when its failure ops are Gets of compared keys; otherwise it is
        sent alone); the others, whose compares held, are queued again. Each
        round settles at least one request, so this ends.
        """
        again: list[_Request] = []
        for r in batch:
            if r.done.done():
                continue
            if all(c.holds(seen[c.key]) for c in r.compare):
                again.append(r)
            elif all(isinstance(op, Get) and op.key in seen for op in r.failure):
                got = tuple(seen[op.key] for op in r.failure if isinstance(op, Get))
                r.done.set_result(TxnResult(False, revision, got))
            else:
                task = asyncio.ensure_future(self._alone(r))
                self._sending[task] = [r]
                task.add_done_callback(lambda t: self._sending.pop(t, None))
        if again:
            self._queue[:0] = again
            self._wake.set()

    async def _alone(self, request: _Request) -> None:
        try:
            result = await self.store.txn(request.compare, request.success, request.failure)
        except Exception as exc:
            if not request.done.done():
                request.done.set_exception(exc)
        else:
            if not request.done.done():
                request.done.set_result(result)

    def __repr__(self) -> str:
        return (
            f"<Batcher queued={len(self._queue)} batches={self.batches} "
            f"combined={self.combined} fallbacks={self.fallbacks}>"
        )
