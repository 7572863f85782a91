"""Managing jobs through the store: create, update, pause, resume, delete, trigger, enqueue.

These are what the API and the CLI call; each change is one transaction, so
a concurrent edit is refused (:class:`~keel.errors.ConflictError`) rather than
lost. A worker needs no notice: definitions and runs are watched.
"""

from __future__ import annotations

import uuid
from typing import Any

from keel.clock import SYSTEM_CLOCK, Clock
from keel.errors import ConflictError
from keel.resilience import RetrySettings
from keel.schedule._checks import check_seconds, check_whole
from keel.schedule._codec import encode_planned
from keel.schedule._history import get_job
from keel.schedule._jobdef import check_args, check_backoff
from keel.schedule._model import (
    JOBS_PREFIX,
    Execution,
    JobDef,
    check_job_name,
    def_key,
    planned_key,
    run_name,
)
from keel.schedule._triggers import MAX_INTERVAL_S
from keel.store import Compare, Put, Store

__all__ = ["delete_job", "enqueue", "pause_job", "put_job", "resume_job", "trigger_job"]


async def put_job(store: Store, job: JobDef, *, expect_revision: int | None = None) -> int:
    """Create or replace a job definition; return the store revision.

    Args:
        store: the store.
        job: the definition.
        expect_revision: only if the stored definition still has this
            mod_revision (0: only if it does not exist yet).

    Raises:
        ConflictError: the definition changed since ``expect_revision``.
    """
    compares = (
        []
        if expect_revision is None
        else [Compare.mod_revision(def_key(job.name), "==", expect_revision)]
    )
    result = await store.txn(compares, [Put(def_key(job.name), job.encode())])
    if not result.succeeded:
        raise ConflictError(f"job {job.name!r} changed meanwhile: read it again and retry")
    return result.revision


async def _set_paused(store: Store, name: str, paused: bool, now: float) -> JobDef:
    defn, revision = await get_job(store, name)
    updated = defn.with_changes(paused=paused)
    ops = [Put(def_key(name), updated.encode())]
    if not paused:
        # Fires while paused are not misfires: resume from now.
        ops.append(Put(planned_key(name), encode_planned(now, "resume")))
    result = await store.txn([Compare.mod_revision(def_key(name), "==", revision)], ops)
    if not result.succeeded:
        raise ConflictError(f"job {name!r} changed meanwhile: try again")
    return updated


async def pause_job(store: Store, name: str, *, clock: Clock = SYSTEM_CLOCK) -> JobDef:
    """Stop planning new fires of ``name`` (runs already planned still run).

    Raises:
        NotFoundError: no such job.
    """
    return await _set_paused(store, name, True, clock.time())


async def resume_job(store: Store, name: str, *, clock: Clock = SYSTEM_CLOCK) -> JobDef:
    """Plan fires of ``name`` again from now on (fires during the pause are not run).

    Raises:
        NotFoundError: no such job.
    """
    return await _set_paused(store, name, False, clock.time())


async def delete_job(store: Store, name: str) -> int:
    """Delete the job with its progress and history; return how many keys went.

    A run in progress finishes, but its outcome is refused (its claim is gone).
    """
    return await store.delete(f"{JOBS_PREFIX}{check_job_name(name)}/", prefix=True)


async def trigger_job(
    store: Store, name: str, *, args: Any = None, clock: Clock = SYSTEM_CLOCK
) -> list[str]:
    """Run ``name`` now, once per shard, with ``args`` (default: the job's own); return run ids.

    Raises:
        NotFoundError: no such job.
        ValidationError: ``args`` are not JSON, or the stored definition is malformed.
    """
    if args is not None:
        check_args(args)
    defn, _ = await get_job(store, name)
    now = clock.time()
    tag = "m" + uuid.uuid4().hex[:8]
    records = [
        Execution(
            job=name,
            name=run_name(now, shard, tag),
            handler=defn.handler,
            fire=now,
            tz=defn.trigger.get("tz") or "UTC",
            shard=shard,
            shards=defn.shards,
            shard_param=defn.shard_params[shard] if defn.shard_params else None,
            args=defn.args if args is None else args,
            kind="manual",
            retries=defn.retries,
            backoff=_backoff(defn.backoff),
            timeout_s=defn.timeout_s,
            overlap=defn.overlap,
        )
        for shard in range(defn.shards)
    ]
    await store.txn(
        [Compare.absent(r.key) for r in records], [Put(r.key, r.encode()) for r in records]
    )
    return [r.id for r in records]


async def enqueue(
    store: Store,
    handler: str,
    args: Any = None,
    *,
    delay_s: float = 0.0,
    retries: int = 0,
    backoff: RetrySettings | None = None,
    timeout_s: float | None = None,
    clock: Clock = SYSTEM_CLOCK,
) -> str:
    """Queue a delayed task: ``handler(ctx)`` runs once, ``delay_s`` from now, on some worker.

    Args:
        store: the store.
        handler: the handler name workers registered.
        args: JSON value given as ``ctx.args``.
        delay_s: how long from now.
        retries: extra attempts after failure.
        backoff: delays between attempts.
        timeout_s: cancel after this long.
        clock: time source.

    Returns:
        the execution id.

    Raises:
        ValidationError: bad handler name, delay, retries, backoff or timeout, or args
            that are not JSON.
    """
    check_job_name(handler)
    check_seconds("delay_s", delay_s, high=MAX_INTERVAL_S)
    check_args(args)
    check_whole("retries", retries, 0, 100)
    check_backoff(backoff or RetrySettings())
    if timeout_s is not None:
        check_seconds("timeout_s", timeout_s, above=True)
    fire = clock.time() + delay_s
    rec = Execution(
        job=handler,
        name=run_name(fire, 0, "t" + uuid.uuid4().hex[:12]),
        handler=handler,
        fire=fire,
        args=args,
        kind="delayed",
        retries=retries,
        backoff=_backoff(backoff or RetrySettings()),
        timeout_s=timeout_s,
    )
    await store.put(rec.key, rec.encode())
    return rec.id


def _backoff(settings: RetrySettings) -> dict[str, Any]:
    return {
        "base_delay_s": settings.base_delay_s,
        "max_delay_s": settings.max_delay_s,
        "multiplier": settings.multiplier,
        "jitter": settings.jitter,
    }
