"""The scheduler's decisions as pure functions: planning with misfires, retries, routing.

Nothing here does I/O or reads a clock: the scheduler and workers pass
``now`` in, so every rule can be tested directly and both loops stay thin.
Backoff delays are ``keel.resilience``'s (:func:`keel.resilience.backoff_delay`,
the AWS "Exponential Backoff And Jitter" formulas).
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from keel.resilience import RetrySettings, backoff_delay
from keel.schedule._model import Execution, Misfire, Routing
from keel.schedule._triggers import Trigger

__all__ = ["Plan", "pick_worker", "plan_fires", "retry_at"]

# Planning stops counting missed fires after this many; beyond it the gap is
# jumped (a 1 s job down for a week would otherwise mean 600k iterations).
MAX_MISSED_SCAN = 20_000


@dataclass(frozen=True, slots=True)
class Plan:
    """What to write for one job now.

    Attributes:
        run: fire times to create executions for, oldest first.
        late: those of ``run`` that were missed (run by the misfire policy).
        skipped: missed fire times to record as SKIPPED.
        dropped: missed fire times neither run nor recorded (beyond the limit).
        last: the last fire time covered (persist it as progress), or None if
            nothing new was covered.
        next_fire: the first fire time after ``last`` (None: no more fires).
    """

    run: tuple[datetime, ...]
    late: tuple[datetime, ...]
    skipped: tuple[datetime, ...]
    dropped: int
    last: datetime | None
    next_fire: datetime | None


def plan_fires(
    trigger: Trigger,
    *,
    last: datetime | None,
    now: datetime,
    lookahead_s: float,
    grace_s: float,
    misfire: Misfire,
    misfire_limit: int,
) -> Plan:
    """Decide which fire times to create executions for.

    Fires after ``last`` up to ``now + lookahead_s`` are covered. Those older
    than ``now - grace_s`` were missed (no scheduler led when they were due)
    and follow ``misfire``: ``skip`` records them SKIPPED, ``once`` runs only
    the latest, ``all`` runs them all; at most ``misfire_limit`` missed fires
    are recorded or run (the latest ones), the rest are dropped.

    Args:
        trigger: the job's trigger.
        last: the last fire already planned (None: a new job, nothing is missed).
        now: the current time (aware).
        lookahead_s: plan fires this far ahead so workers can start them on time.
        grace_s: a fire this late is still on time.
        misfire: the misfire policy.
        misfire_limit: bound on missed fires recorded or run.

    Returns:
        the plan.
    """
    horizon = now + timedelta(seconds=lookahead_s)
    cutoff = now - timedelta(seconds=grace_s)
    after = last if last is not None else cutoff
    missed: list[datetime] = []
    dropped = 0
    jumped = False
    fire = trigger.next_after(after)
    while fire is not None and fire <= cutoff:
        missed.append(fire)
        if len(missed) > misfire_limit:
            missed.pop(0)
            dropped += 1
            if dropped >= MAX_MISSED_SCAN and not jumped:
                jumped = True  # the count of dropped fires is a lower bound from here
                fire = trigger.next_after(max(fire, cutoff - timedelta(seconds=grace_s)))
                continue
        fire = trigger.next_after(fire)
    on_time: list[datetime] = []
    while fire is not None and fire <= horizon:
        on_time.append(fire)
        fire = trigger.next_after(fire)
    if misfire == "all":
        late, skipped = missed, []
    elif misfire == "once":
        late, skipped = missed[-1:], missed[:-1]
    else:
        late, skipped = [], missed
    covered = missed + on_time
    last = covered[-1] if covered else None
    return Plan(tuple(late + on_time), tuple(late), tuple(skipped), dropped, last, fire)


def retry_at(execution: Execution, now: float, rng: random.Random) -> float | None:
    """When to try a failed execution again, or None when its retries are spent.

    ``execution.failures`` already counts the failure just seen.
    """
    if execution.failures > execution.retries:
        return None
    settings = RetrySettings(**execution.backoff) if execution.backoff else RetrySettings()
    return now + backoff_delay(settings, execution.failures - 1, settings.base_delay_s, rng)


def _hash(text: str) -> int:
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big")


def pick_worker(
    routing: Routing,
    workers: Sequence[str],
    *,
    job: str,
    counter: int,
    busy: dict[str, int] | None = None,
) -> str:
    """Choose the worker a run is offered to first ("" when there are none).

    Args:
        routing: ``round_robin`` (``counter`` picks), ``least_busy`` (fewest
            runs offered and not yet finished, per ``busy``), ``consistent_hash``
            (rendezvous hashing on the job id: stable while membership is),
            ``first`` (the first live worker in id order), ``any`` (no
            preference: every worker races to claim).
        workers: live worker ids that have the handler, sorted.
        job: the job id.
        counter: a number that grows per fire (round robin).
        busy: outstanding runs per worker (least busy).
    """
    if not workers or routing == "any":
        return ""
    if routing == "first":
        return workers[0]
    if routing == "consistent_hash":
        return max(workers, key=lambda w: _hash(f"{job}|{w}"))
    if routing == "least_busy":
        load = busy or {}
        return min(workers, key=lambda w: (load.get(w, 0), _hash(f"{job}|{counter}|{w}")))
    return workers[counter % len(workers)]


def shard_workers(workers: Sequence[str], shards: int, offset: int) -> list[str]:
    """Spread ``shards`` over ``workers`` (index i → worker (i + offset) mod n)."""
    if not workers:
        return [""] * shards
    return [workers[(i + offset) % len(workers)] for i in range(shards)]


def epoch(dt: datetime) -> float:
    """Aware datetime → Unix seconds."""
    return dt.timestamp()


def from_epoch(ts: float) -> datetime:
    """Unix seconds → aware UTC datetime."""
    return datetime.fromtimestamp(ts, UTC)
