"""Reading sagas and the operator's two actions: retry a FAILED saga, abort a running one."""

from __future__ import annotations

from collections.abc import Callable

from keel._records import Rejected, decode, report
from keel.errors import ConflictError, NotFoundError
from keel.saga._model import (
    ACTIVE,
    RECORD_PREFIX,
    SagaRecord,
    Status,
    StepState,
    active_key,
    owner_key,
    record_decoder,
    record_key,
    split_id,
)
from keel.store import Compare, EventType, KeyValue, Put, Store

__all__ = ["abort_saga", "get_saga", "list_sagas", "retry_saga", "wait_for"]

_TRIES = 20


def _decode(kv: KeyValue) -> SagaRecord | Rejected:
    return decode("saga", kv.key, kv.value, record_decoder)


async def _read(store: Store, saga_id: str) -> tuple[SagaRecord, int]:
    split_id(saga_id)
    kv = await store.get(record_key(saga_id))
    if kv is None:
        raise NotFoundError(f"no saga {saga_id!r}: see 'keel sagas ls' for the ids")
    rec = _decode(kv)
    if isinstance(rec, Rejected):
        raise ConflictError(f"{rec}: fix or delete the record")
    return rec, kv.mod_revision


async def get_saga(store: Store, saga_id: str) -> SagaRecord:
    """The record of ``saga_id``.

    Raises:
        ValidationError: a malformed id. NotFoundError: no such saga.
        ConflictError: the stored record is malformed.
    """
    rec, _ = await _read(store, saga_id)
    return rec


async def list_sagas(
    store: Store,
    *,
    status: Status | None = None,
    name: str | None = None,
    on_reject: Callable[[Rejected], None] | None = None,
) -> list[SagaRecord]:
    """Every saga record (optionally of one status or saga name), oldest first.

    Malformed records are skipped, reported and passed to ``on_reject``.
    """
    prefix = RECORD_PREFIX + (f"{name}/" if name else "")
    kvs, _ = await store.range(prefix)
    out = []
    for kv in kvs:
        rec = _decode(kv)
        if isinstance(rec, Rejected):
            report(rec)
            if on_reject is not None:
                on_reject(rec)
            continue
        if status is None or rec.status is status:
            out.append(rec)
    out.sort(key=lambda r: r.created_at)
    return out


async def retry_saga(store: Store, saga_id: str) -> SagaRecord:
    """Send a FAILED saga back to compensating (a running coordinator takes it up).

    Raises:
        NotFoundError: no such saga. ConflictError: it is not FAILED.
    """
    for _ in range(_TRIES):
        rec, revision = await _read(store, saga_id)
        if rec.status is not Status.FAILED:
            raise ConflictError(
                f"saga {saga_id!r} is {rec.status.value}, not failed: only a failed saga is retried"
            )
        new = rec.copy()
        new.status, new.error, new.owner = Status.COMPENSATING, "", ""
        for st in new.steps.values():
            if st.state is StepState.COMPENSATING:
                st.compensations = 0
        res = await store.txn(
            [
                Compare.mod_revision(record_key(saga_id), "==", revision),
                Compare.absent(owner_key(saga_id)),
            ],
            [Put(record_key(saga_id), new.encode()), Put(active_key(saga_id), b"")],
        )
        if res.succeeded:
            return new
    raise ConflictError(f"saga {saga_id!r} kept changing: try again")


async def abort_saga(store: Store, saga_id: str) -> SagaRecord:
    """Ask a running saga to stop and compensate (done at its next transition).

    A compensating saga is left as is. Raises:
        NotFoundError: no such saga. ConflictError: it has ended already.
    """
    for _ in range(_TRIES):
        rec, revision = await _read(store, saga_id)
        if rec.status is Status.COMPENSATING or rec.abort:
            return rec
        if rec.status not in ACTIVE:
            raise ConflictError(
                f"saga {saga_id!r} has ended ({rec.status.value}): only a running saga is aborted"
            )
        new = rec.copy()
        new.abort = True
        res = await store.txn(
            [Compare.mod_revision(record_key(saga_id), "==", revision)],
            [Put(record_key(saga_id), new.encode())],
        )
        if res.succeeded:
            return new
    raise ConflictError(f"saga {saga_id!r} kept changing: try again")


async def wait_for(store: Store, saga_id: str, done: Callable[[SagaRecord], bool]) -> SagaRecord:
    """Wait until the record of ``saga_id`` satisfies ``done`` (unbounded: wrap in a timeout)."""
    key = record_key(saga_id)
    kv = await store.get(key)
    if kv is None:
        raise NotFoundError(f"no saga {saga_id!r}: check the id start() returned")
    rec = _decode(kv)
    if not isinstance(rec, Rejected) and done(rec):
        return rec
    async with store.watch(key, start_revision=kv.mod_revision + 1) as watch:
        async for event in watch:
            if event.type is EventType.DELETE:
                raise NotFoundError(f"saga {saga_id!r} was deleted while waiting")
            rec = _decode(event.kv)
            if isinstance(rec, Rejected):
                report(rec)
                continue
            if done(rec):
                return rec
    raise NotFoundError(f"saga {saga_id!r}: the watch ended")
