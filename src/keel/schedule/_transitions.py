"""The transactions a worker writes to move a run along, built without I/O.

Each function returns the compares and operations of one transaction (and
the record it writes where the caller tracks it); the worker submits them.
Keeping them pure keeps the fencing rules in one place and testable alone:

- claim: the record is unchanged since it was read and no claim is held
  (nor the dispatch key of an owner whose lease ended);
- finish: the claim (or dispatch key) still has the run's token;
- skip and replace: the record (or the other run's record) is unchanged;
- release and end of a dispatch: the dispatch key still has our token.
"""

from __future__ import annotations

from typing import NamedTuple

from keel.schedule._codec import encode_claim
from keel.schedule._model import Execution, Status
from keel.store import Compare, Delete, Get, Put

__all__ = [
    "Claim",
    "Txn",
    "claim_txn",
    "dispatch_end_txn",
    "finish_txn",
    "release_txn",
    "replace_target",
    "replace_txn",
    "skip_txn",
]


class Txn(NamedTuple):
    """One transaction: all ``compares`` hold → ``ops``."""

    compares: list[Compare]
    ops: list[Put | Delete]


class Claim(NamedTuple):
    """A claim transaction, the RUNNING record it writes, and the read on failure."""

    txn: Txn
    running: Execution
    reads: list[Get]


def claim_txn(
    key: str, mod_revision: int, rec: Execution, *, worker: str, lease: int, now: float
) -> Claim:
    """Claim ``rec`` (read at ``mod_revision``) for ``worker`` under ``lease``.

    The claim key's create_revision becomes the run's fencing token. A run
    claimed ahead of its due time gets its ``started_at`` when it ends.
    """
    running = rec.with_changes(
        status=Status.RUNNING,
        attempt=rec.attempt + 1,
        worker=worker,
        dispatch="",
        started_at=now if now >= rec.due else None,
        finished_at=None,
        cancel=False,
    )
    claim = running.claim
    compares = [Compare.mod_revision(key, "==", mod_revision), Compare.absent(claim)]
    if rec.dispatch:  # dispatched to a worker whose lease has ended since
        compares.append(Compare.absent(rec.dispatch))
    value = encode_claim(rec.name, worker)
    ops: list[Put | Delete] = [Put(claim, value, lease=lease), Put(key, running.encode())]
    return Claim(Txn(compares, ops), running, [Get(claim)])


def skip_txn(key: str, mod_revision: int, rec: Execution, holder: str, now: float) -> Txn:
    """Mark a PENDING run SKIPPED because run ``holder`` holds the shard's claim."""
    skipped = rec.with_changes(
        status=Status.SKIPPED,
        finished_at=now,
        error=f"skipped: {holder} was still running (overlap=forbid)",
    )
    return Txn([Compare.mod_revision(key, "==", mod_revision)], [Put(key, skipped.encode())])


def replace_target(key: str, holder: str) -> str:
    """The record key of run ``holder`` (which holds the shard's claim), beside run ``key``."""
    return key.rsplit("/", 1)[0] + "/" + holder


def replace_txn(other_key: str, other_revision: int, other: Execution) -> Txn:
    """Ask the run holding the shard to cancel (its worker sees ``cancel`` and stops it)."""
    return Txn(
        [Compare.mod_revision(other_key, "==", other_revision)],
        [Put(other_key, other.with_changes(cancel=True).encode())],
    )


def finish_txn(key: str, rec: Execution, final: Execution, token: int) -> tuple[Txn, Execution]:
    """Write the outcome ``final`` of run ``rec`` if its claim still has ``token``.

    A claimed run also deletes its claim key. A dispatched run leaves its
    dispatch key (which holds other runs too) and, if it is to be retried,
    drops the dispatch so the retry is claimed as usual.
    """
    if rec.dispatch and final.status is Status.PENDING:
        final = final.with_changes(dispatch="", worker="")
    ops: list[Put | Delete] = [Put(key, final.encode())]
    if not rec.dispatch:
        ops.append(Delete(rec.claim))
    return Txn([Compare.create_revision(rec.claim, "==", token)], ops), final


def release_txn(key: str, mod_revision: int, rec: Execution, token: int) -> Txn:
    """Hand back a run dispatched to us under ``token`` that we cannot run."""
    free = rec.with_changes(dispatch="", worker="", hint="", attempt=max(0, rec.attempt - 1))
    return Txn(
        [
            Compare.create_revision(rec.dispatch, "==", token),
            Compare.mod_revision(key, "==", mod_revision),
        ],
        [Put(key, free.encode())],
    )


def dispatch_end_txn(dispatch: str, token: int) -> Txn:
    """Delete our dispatch key once its last run is over (if it is still ours)."""
    return Txn([Compare.create_revision(dispatch, "==", token)], [Delete(dispatch)])
