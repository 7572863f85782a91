"""What the sagas pages show: sagas in progress, outcomes, and one saga's steps.

Built on :mod:`keel.saga`'s admin API (``list_sagas``, ``get_saga``), the
same records ``keel sagas`` prints. Which operator action a saga offers is
decided here (:func:`actions_for`): retry for a FAILED saga, abort for a
running one that has not been asked to abort yet.
"""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

from keel._records import Rejected
from keel.console.pages._configs_data import when
from keel.saga import SagaRecord, Status, get_saga, list_sagas
from keel.store import Store

__all__ = ["actions_for", "saga_detail", "saga_list"]

MAX_LISTED = 500
"""Ended sagas listed at most (newest first); sagas in progress are always all listed."""
_ACTIVE = (Status.RUNNING, Status.COMPENSATING)


def actions_for(rec: SagaRecord) -> tuple[str, ...]:
    """The operator actions that apply to ``rec``: ``retry``, ``abort`` or none (pure)."""
    if rec.status is Status.FAILED:
        return ("retry",)
    if rec.status is Status.RUNNING and not rec.abort:
        return ("abort",)
    return ()


def _row(rec: SagaRecord) -> dict[str, Any]:
    done = sum(1 for s in rec.steps.values() if s.state.value == "done")
    return {
        "id": f"{rec.saga}/{rec.id}",
        "saga": rec.saga,
        "status": rec.status.value,
        "abort": rec.abort,
        "steps": f"{done}/{len(rec.steps)}",
        "created": when(rec.created_at),
        "updated": when(rec.updated_at),
        "error": rec.error,
        "owner": rec.owner,
        "actions": actions_for(rec),
    }


async def saga_list(store: Store, *, status: str | None = None) -> dict[str, Any]:
    """Context of the sagas page: in progress, ended (newest first), counts by status.

    Args:
        status: only this status (one of :class:`keel.saga.Status`'s values);
            an unknown one shows everything.
    """
    rejected: list[Rejected] = []
    recs = await list_sagas(store, on_reject=rejected.append)
    counts = Counter(r.status.value for r in recs)
    chosen = status if status in {s.value for s in Status} else None
    shown = [r for r in recs if chosen is None or r.status.value == chosen]
    active = [_row(r) for r in shown if r.status in _ACTIVE]
    ended = [_row(r) for r in reversed(shown) if r.status not in _ACTIVE]
    return {
        "active": active,
        "ended": ended[:MAX_LISTED],
        "ended_cut": len(ended) > MAX_LISTED,
        "counts": {s.value: counts.get(s.value, 0) for s in Status},
        "status": chosen or "",
        "rejected": [str(r) for r in rejected],
    }


async def saga_detail(store: Store, saga_id: str) -> dict[str, Any]:
    """Context of one saga: its record and each step's state, attempts and error.

    Raises:
        ValidationError: a malformed id. NotFoundError: no such saga.
        ConflictError: the stored record is malformed.
    """
    rec = await get_saga(store, saga_id)
    steps = [
        {
            "name": name,
            "state": s.state.value,
            "attempts": s.attempts,
            "compensations": s.compensations,
            "error": s.error,
            "started": when(s.started_at),
            "finished": when(s.finished_at),
            "result": "" if s.result is None else json.dumps(s.result, sort_keys=True)[:500],
        }
        for name, s in rec.steps.items()
    ]
    return {
        "saga": _row(rec),
        "token": rec.token,
        "input": json.dumps(rec.input, indent=2, sort_keys=True)[:20_000],
        "steps": steps,
    }
