"""The crash test's saga and its participants: effects in SQLite behind a minimal barrier.

Each action or compensation writes its effect in one SQLite transaction with
a unique ``(saga_id, step, op)`` barrier row, so a retried call does nothing,
a compensation before its action records the action as blocked (null
compensation), and that action then does nothing (hanging). The effects log
has no unique key: a double application would show as two rows.

Failures are injected at random: before the effect (the try failed), after it
(the effect is in, the reply is lost), and for good in the compensation of
step ``b`` of sagas whose input says ``doom`` (they end FAILED).
"""

from __future__ import annotations

import asyncio
import random
import sqlite3
from pathlib import Path

from keel.resilience import RetrySettings
from keel.saga import Abort, Saga, SagaContext, Step

STEPS = ("a", "b", "c")
ACTION_RETRY = RetrySettings(max_attempts=3, base_delay_s=0.005, max_delay_s=0.05)
COMPENSATE_RETRY = RetrySettings(max_attempts=8, base_delay_s=0.005, max_delay_s=0.05)


def init_db(path: Path) -> None:
    """Create the participants' tables."""
    with sqlite3.connect(path) as db:
        db.execute(
            "CREATE TABLE IF NOT EXISTS barrier (saga_id TEXT, step TEXT, op TEXT, "
            "PRIMARY KEY (saga_id, step, op))"
        )
        db.execute("CREATE TABLE IF NOT EXISTS effects (saga_id TEXT, step TEXT, op TEXT)")
        db.execute("PRAGMA journal_mode=WAL")


def _apply(path: Path, ctx: SagaContext) -> None:
    db = sqlite3.connect(path, timeout=30, isolation_level=None)
    try:
        db.execute("BEGIN IMMEDIATE")
        key = (ctx.saga_id, ctx.step)
        fresh = db.execute("INSERT OR IGNORE INTO barrier VALUES (?, ?, ?)", (*key, ctx.op))
        apply = fresh.rowcount == 1
        if apply and ctx.op == "compensate":
            # the action's row, inserted now, means the action never ran: null compensation
            blocked = db.execute("INSERT OR IGNORE INTO barrier VALUES (?, ?, 'action')", key)
            apply = blocked.rowcount == 0
        if apply:
            db.execute("INSERT INTO effects VALUES (?, ?, ?)", (*key, ctx.op))
        db.execute("COMMIT")
    finally:
        db.close()


def make_saga(path: Path, *, failure_rate: float = 0.15) -> Saga:
    """The 3-step saga whose steps write to the participants' database at ``path``."""

    async def op(ctx: SagaContext) -> str:
        await asyncio.sleep(random.uniform(0, 0.05))
        doomed = ctx.op == "compensate" and ctx.step == "b" and bool(ctx.input.get("doom"))
        if doomed:
            raise RuntimeError("compensation of b fails for good")
        roll = random.random()
        if roll < failure_rate / 3 and ctx.op == "action":
            raise Abort("injected: refused for good")
        if roll < failure_rate:
            raise RuntimeError("injected: failed before the effect")
        await asyncio.to_thread(_apply, path, ctx)
        if random.random() < failure_rate / 2:
            raise RuntimeError("injected: the reply was lost after the effect")
        return f"{ctx.step}-done"

    return Saga(
        "crash",
        [
            Step(s, action=op, compensate=op, retry=ACTION_RETRY, compensate_retry=COMPENSATE_RETRY)
            for s in STEPS
        ],
    )
