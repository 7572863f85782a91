"""The execution records a plan turns into: one per fire and shard, with its routing hint."""

from __future__ import annotations

from datetime import datetime

from keel.schedule._model import Execution, JobDef, Status, run_name
from keel.schedule._policies import Plan, pick_worker, shard_workers

__all__ = ["plan_records"]


def plan_records(
    defn: JobDef,
    plan: Plan,
    *,
    workers: list[str],
    counter: int,
    busy: dict[str, int],
    now: float,
) -> tuple[list[tuple[datetime, list[Execution]]], int]:
    """The records to write for ``plan`` (pure).

    Args:
        defn: the job.
        plan: the fires to run and to record as skipped.
        workers: ids of the live workers having the job's handler.
        counter: fires routed so far (round robin and shard rotation go on from it).
        busy: runs in flight per worker (for ``least_busy``).
        now: the time skipped records are finished at.

    Returns:
        ``(fire, records)`` in fire order, and the counter after them.
    """
    tz = defn.trigger.get("tz") or "UTC"
    backoff = {
        "base_delay_s": defn.backoff.base_delay_s,
        "max_delay_s": defn.backoff.max_delay_s,
        "multiplier": defn.backoff.multiplier,
        "jitter": defn.backoff.jitter,
    }
    out: list[tuple[datetime, list[Execution]]] = []
    skipped, late = set(plan.skipped), set(plan.late)
    for fire in sorted([*plan.run, *plan.skipped]):
        counter += 1
        if defn.shards > 1:
            hints = shard_workers(workers, defn.shards, counter)
        else:
            hints = [pick_worker(defn.routing, workers, job=defn.name, counter=counter, busy=busy)]
        records = []
        for shard in range(defn.shards):
            rec = Execution(
                job=defn.name,
                name=run_name(fire.timestamp(), shard),
                handler=defn.handler,
                fire=fire.timestamp(),
                tz=tz,
                shard=shard,
                shards=defn.shards,
                shard_param=defn.shard_params[shard] if defn.shard_params else None,
                args=defn.args,
                kind="misfire" if fire in late else "scheduled",
                retries=defn.retries,
                backoff=backoff,
                timeout_s=defn.timeout_s,
                overlap=defn.overlap,
                hint=hints[shard],
            )
            if fire in skipped:
                rec = rec.with_changes(
                    status=Status.SKIPPED,
                    finished_at=now,
                    error="skipped: missed while no scheduler led (misfire policy)",
                )
            records.append(rec)
        out.append((fire, records))
    return out, counter
