"""What a worker knows of the executions it may run: records, claims, its dispatches.

Pure bookkeeping, kept in step with the watch of ``jobs/``; the worker
decides what to do with it (when to claim, start, finish).
"""

from __future__ import annotations

from keel.schedule._codec import decode_claim, decode_dispatch, read
from keel.schedule._model import Execution, Status
from keel.store import KeyValue

__all__ = ["RunTable", "claim_run"]


class RunTable:
    """The tracked runs of one worker, the claim and dispatch keys it has seen, and its own.

    Args:
        worker_id: the worker's id (dispatch keys naming it are its own).
    """

    def __init__(self, worker_id: str) -> None:
        self.worker_id = worker_id
        self.runs: dict[str, tuple[int, Execution]] = {}  # run key -> (mod_revision, record)
        self._claims: dict[str, KeyValue] = {}  # claim or dispatch key -> its record
        self._holders: dict[str, str | None] = {}  # claim key -> its run (None: unreadable)
        self._mine: dict[str, int] = {}  # our dispatch keys -> runs not over yet
        self._by_claim: dict[str, set[str]] = {}  # claim key -> tracked runs it holds

    def __len__(self) -> int:
        return len(self.runs)

    # -- runs ------------------------------------------------------------------

    def track(self, key: str, mod_revision: int, rec: Execution) -> None:
        """Remember the newest record of a run this worker may run."""
        old = self.runs.get(key)
        if old is not None and old[1].claim != rec.claim:
            self._unlink(key, old[1].claim)
        self.runs[key] = (mod_revision, rec)
        self._by_claim.setdefault(rec.claim, set()).add(key)

    def forget(self, key: str) -> Execution | None:
        """Stop tracking a run; return its last record."""
        entry = self.runs.pop(key, None)
        if entry is None:
            return None
        self._unlink(key, entry[1].claim)
        return entry[1]

    def _unlink(self, key: str, claim: str) -> None:
        waiting = self._by_claim.get(claim)
        if waiting is not None:
            waiting.discard(key)
            if not waiting:
                del self._by_claim[claim]

    def claimable(self, rec: Execution) -> bool:
        """Whether a worker may claim the run now (nobody holds it)."""
        if rec.dispatch:  # assigned: claimable once its dispatch key is gone
            return rec.dispatch not in self._claims and not rec.status.final
        # "": no claim key; None: a claim key we cannot read (held by some run: wait for
        # it, unless the policy is to skip a run whose shard is held)
        holder = self._holders.get(rec.claim, "")
        if rec.status is Status.PENDING:
            return holder is not None or rec.overlap == "forbid"
        return rec.status is Status.RUNNING and holder is not None and holder != rec.name

    def held(self, rec: Execution) -> bool:
        """Whether the run is dispatched to this worker (it runs it without claiming)."""
        return rec.status is Status.PENDING and rec.dispatch in self._mine

    def token(self, rec: Execution) -> int:
        """The fencing token of a run dispatched to this worker."""
        return self._claims[rec.dispatch].create_revision

    # -- claim and dispatch keys -------------------------------------------------

    def put_claim(self, kv: KeyValue, *, dispatch: bool) -> list[str]:
        """A claim or dispatch key was written; return the runs to look at again."""
        self._claims[kv.key] = kv
        if not dispatch:
            self._holders[kv.key] = claim_run(kv)
            return []
        owner = read(kv.key, kv.value, decode_dispatch)
        if owner is None or owner.worker != self.worker_id or kv.create_revision != kv.mod_revision:
            return []
        self._mine[kv.key] = owner.runs
        return list(self._by_claim.get(kv.key, ()))  # listed before their dispatch

    def drop_claim(self, key: str) -> list[str]:
        """A claim or dispatch key is gone; return the runs it held (orphaned, or waiting)."""
        self._claims.pop(key, None)
        self._holders.pop(key, None)
        self._mine.pop(key, None)
        return list(self._by_claim.get(key, ()))

    def done_with(self, dispatch: str) -> int | None:
        """One run of our dispatch is over; after the last, the key's token (to delete it)."""
        left = self._mine.get(dispatch)
        if left is None:
            return None
        if left > 1:
            self._mine[dispatch] = left - 1
            return None
        del self._mine[dispatch]
        held = self._claims.get(dispatch)
        return None if held is None else held.create_revision

    def mine(self, dispatch: str) -> bool:
        """Whether ``dispatch`` is one of this worker's live dispatch keys."""
        return dispatch in self._mine


def claim_run(kv: KeyValue) -> str | None:
    """The run a claim key names (None, reported, if its value is unreadable)."""
    claim = read(kv.key, kv.value, decode_claim)
    return None if claim is None else claim.run
