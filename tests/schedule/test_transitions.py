"""The worker's run transactions applied to every backend: who may claim, finish, release."""

from __future__ import annotations

import json

from keel.schedule import Execution, Status
from keel.schedule._model import run_name
from keel.schedule._table import claim_run
from keel.schedule._transitions import (
    claim_txn,
    dispatch_end_txn,
    finish_txn,
    release_txn,
    replace_target,
    replace_txn,
    skip_txn,
)
from keel.store import Put, Store


def _run(fire: float = 1_000.0, **fields: object) -> Execution:
    return Execution(job="tx.job", name=run_name(fire, 0), handler="h", fire=fire, **fields)  # type: ignore[arg-type]


async def _planned(store: Store, rec: Execution) -> int:
    return await store.put(rec.key, rec.encode())


async def test_one_claim_wins_and_its_token_fences_the_outcome(store: Store) -> None:
    rec = _run()
    revision = await _planned(store, rec)
    lease = await store.grant(10)
    first = claim_txn(rec.key, revision, rec, worker="w1", lease=lease.id, now=2_000.0)
    won = await store.txn(*first.txn, first.reads)
    assert won.succeeded
    token = won.revision
    assert first.running.status is Status.RUNNING and first.running.attempt == 1
    assert first.running.started_at == 2_000.0  # claimed when due: started now
    claim = await store.get(rec.claim)
    assert claim is not None and claim.lease == lease.id and claim.create_revision == token
    assert json.loads(claim.value) == {"run": rec.name, "worker": "w1"}

    # a second claim of the same read loses and sees who holds it
    second = claim_txn(rec.key, revision, rec, worker="w2", lease=lease.id, now=2_000.0)
    lost = await store.txn(*second.txn, second.reads)
    assert not lost.succeeded
    assert lost.results[0].create_revision == token  # type: ignore[union-attr]

    done = first.running.with_changes(status=Status.SUCCEEDED, finished_at=2_001.0)
    stale, _ = finish_txn(rec.key, first.running, done, token - 1)
    assert not (await store.txn(*stale)).succeeded
    ok, written = finish_txn(rec.key, first.running, done, token)
    assert (await store.txn(*ok)).succeeded
    assert written.status is Status.SUCCEEDED
    assert await store.get(rec.claim) is None, "the finish deletes the claim"
    stored = await store.get(rec.key)
    assert stored is not None and Execution.decode(stored.value).status is Status.SUCCEEDED


async def test_a_claim_ahead_of_time_has_no_start_yet(store: Store) -> None:
    rec = _run(fire=5_000.0)
    revision = await _planned(store, rec)
    claim = claim_txn(rec.key, revision, rec, worker="w1", lease=0, now=4_999.5)
    assert claim.running.started_at is None
    assert (await store.txn(*claim.txn)).succeeded


async def test_a_run_dispatched_to_a_live_worker_cannot_be_claimed(store: Store) -> None:
    lease = await store.grant(10)
    dispatch = await store.put("jobs/_dispatch/1-1", b"{}", lease=lease.id)
    rec = _run(dispatch="jobs/_dispatch/1-1", worker="w1")
    revision = await _planned(store, rec)
    other = claim_txn(rec.key, revision, rec, worker="w2", lease=0, now=2_000.0)
    assert not (await store.txn(*other.txn)).succeeded
    # its owner hands it back: the record is free again, and the key stays for other runs
    back = release_txn(rec.key, revision, rec, dispatch)
    assert (await store.txn(*back)).succeeded
    freed = await store.get(rec.key)
    assert freed is not None
    free = Execution.decode(freed.value)
    assert (free.dispatch, free.worker) == ("", "")
    assert await store.get("jobs/_dispatch/1-1") is not None
    claim = claim_txn(rec.key, freed.mod_revision, free, worker="w2", lease=0, now=2_000.0)
    assert (await store.txn(*claim.txn)).succeeded


async def test_a_dispatched_retry_drops_its_dispatch_and_keeps_the_key(store: Store) -> None:
    dispatch = await store.put("jobs/_dispatch/2-1", b"{}")
    rec = _run(dispatch="jobs/_dispatch/2-1", worker="w1", status=Status.RUNNING, attempt=1)
    await _planned(store, rec)
    retry = rec.with_changes(status=Status.PENDING, failures=1, not_before=1_010.0)
    txn, written = finish_txn(rec.key, rec, retry, dispatch)
    assert (await store.txn(*txn)).succeeded
    assert (written.dispatch, written.worker) == ("", "")
    assert await store.get("jobs/_dispatch/2-1") is not None
    # the key goes only with its last run, and only while it is still ours
    assert not (await store.txn(*dispatch_end_txn("jobs/_dispatch/2-1", dispatch + 1))).succeeded
    assert (await store.txn(*dispatch_end_txn("jobs/_dispatch/2-1", dispatch))).succeeded
    assert await store.get("jobs/_dispatch/2-1") is None


async def test_skip_and_replace_act_only_on_the_record_they_read(store: Store) -> None:
    holder = _run(fire=1_000.0, status=Status.RUNNING, overlap="forbid")
    holder_rev = await _planned(store, holder)
    await store.put(holder.claim, json.dumps({"run": holder.name, "worker": "w1"}).encode())
    claim_kv = await store.get(holder.claim)
    assert claim_kv is not None
    held = claim_run(claim_kv)
    assert held == holder.name

    late = _run(fire=1_001.0, overlap="forbid")
    late_rev = await _planned(store, late)
    skip = skip_txn(late.key, late_rev, late, held, now=1_001.5)
    assert (await store.txn(*skip)).succeeded
    skipped = await store.get(late.key)
    assert skipped is not None
    record = Execution.decode(skipped.value)
    assert record.status is Status.SKIPPED and holder.name in record.error
    assert not (await store.txn(*skip)).succeeded, "a second skip of the same read is refused"

    assert replace_target(late.key, held) == holder.key
    replace = replace_txn(holder.key, holder_rev, holder)
    assert (await store.txn(*replace)).succeeded
    cancelled = await store.get(holder.key)
    assert cancelled is not None and Execution.decode(cancelled.value).cancel
    await store.txn([], [Put(holder.key, holder.encode())])
    assert not (await store.txn(*replace)).succeeded, "a changed record is not cancelled"
