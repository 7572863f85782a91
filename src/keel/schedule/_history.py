"""Run history: reading records, per-job statistics, retention, and the view ``keel up`` shows."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from typing import TypeVar

from keel._records import Rejected, decode, report
from keel.errors import NotFoundError, ValidationError
from keel.registry import decode_instance
from keel.schedule._codec import AREA, decode_planned, job_decoder, read, run_decoder
from keel.schedule._members import handlers_of
from keel.schedule._model import (
    JOBS_PREFIX,
    Execution,
    JobDef,
    Status,
    check_job_name,
    def_key,
    parse_key,
    planned_key,
    runs_prefix,
    scheduled_fire,
)
from keel.store import Compare, Delete, KeyValue, Store

__all__ = [
    "JobStatistics",
    "JobView",
    "apply_retention",
    "get_run",
    "job_statistics",
    "list_runs",
    "read_jobs",
]

T = TypeVar("T")
_MAX_DELETES = 100  # per txn


@dataclass(frozen=True, slots=True)
class JobStatistics:
    """Outcomes of a job's recorded runs.

    Attributes:
        job: the job id.
        runs: records kept (any status).
        succeeded, failed, timed_out, cancelled, skipped, pending, running: counts by status.
        success_rate: succeeded / finished-and-not-skipped (None when none finished).
        p50_duration_s, p99_duration_s: of finished attempts (None when none).
        last_run: the most recent record, or None.
    """

    job: str
    runs: int
    succeeded: int
    failed: int
    timed_out: int
    cancelled: int
    skipped: int
    pending: int
    running: int
    success_rate: float | None
    p50_duration_s: float | None
    p99_duration_s: float | None
    last_run: Execution | None


@dataclass(frozen=True, slots=True)
class JobView:
    """One job as ``keel jobs`` and ``keel up`` show it.

    Attributes:
        definition: the stored definition.
        next_fire: the next fire time after now (None: manual only, or finished).
        last_planned: the last fire the scheduler planned.
        recent: the latest runs, newest first.
        workers: live workers that registered its handler.
        unhandled: no live worker has its handler (its runs wait as PENDING).
    """

    definition: JobDef
    next_fire: datetime | None
    last_planned: datetime | None
    recent: tuple[Execution, ...]
    workers: tuple[str, ...]

    @property
    def unhandled(self) -> bool:
        """Whether no live worker can run it."""
        return not self.workers


async def list_runs(store: Store, job: str, *, limit: int | None = None) -> list[Execution]:
    """The job's run records, newest fire first (at most ``limit``)."""
    kvs, _ = await store.range(runs_prefix(check_job_name(job)))
    runs = []
    for kv in reversed(kvs):
        rec = read(kv.key, kv.value, run_decoder(kv.key))
        if rec is None:  # rejected and reported
            continue
        runs.append(rec)
        if limit is not None and len(runs) >= limit:
            break
    return runs


async def get_run(store: Store, execution_id: str) -> Execution:
    """One run by id (``<job>/<fire-ms>-<shard>``).

    Raises:
        NotFoundError: no such run.
        ValidationError: the id is not of that form, or the record is malformed.
    """
    job, sep, name = execution_id.partition("/")
    if not sep or not name or "/" in name:
        raise ValidationError(
            f"execution id {execution_id!r}: use <job>/<fire-ms>-<shard> as 'keel jobs runs' shows"
        )
    kv = await store.get(f"{runs_prefix(check_job_name(job))}{name}")
    if kv is None:
        raise NotFoundError(f"no run {execution_id!r}: it never existed or retention removed it")
    return _read_one(kv.key, kv.value, run_decoder(kv.key))


def _read_one(key: str, value: bytes, decoder: Callable[[bytes], T]) -> T:
    """Decode one record a caller asked for by name; a rejected one is reported and raised."""
    result = decode(AREA, key, value, decoder)
    if isinstance(result, Rejected):
        report(result)
        raise ValidationError(f"{result}: fix the record, or delete it ('keel jobs rm')")
    return result


def _percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def statistics_of(job: str, runs: list[Execution]) -> JobStatistics:
    """Compute :class:`JobStatistics` from records (pure)."""
    counts = {status: 0 for status in Status}
    for run in runs:
        counts[run.status] += 1
    finished = sum(counts[s] for s in (Status.SUCCEEDED, Status.FAILED, Status.TIMED_OUT))
    durations = [d for r in runs if r.status.final and (d := r.duration_s) is not None]
    return JobStatistics(
        job=job,
        runs=len(runs),
        succeeded=counts[Status.SUCCEEDED],
        failed=counts[Status.FAILED],
        timed_out=counts[Status.TIMED_OUT],
        cancelled=counts[Status.CANCELLED],
        skipped=counts[Status.SKIPPED],
        pending=counts[Status.PENDING],
        running=counts[Status.RUNNING],
        success_rate=counts[Status.SUCCEEDED] / finished if finished else None,
        p50_duration_s=_percentile(durations, 0.50),
        p99_duration_s=_percentile(durations, 0.99),
        last_run=max(runs, key=lambda r: r.fire, default=None),
    )


async def job_statistics(store: Store, job: str) -> JobStatistics:
    """Success rate, p50/p99 duration and last run of a job's kept records."""
    return statistics_of(job, await list_runs(store, job))


def expired(
    runs: list[Execution], *, keep_last: int, max_age_s: float | None, now: float
) -> list[Execution]:
    """Finished runs beyond the newest ``keep_last`` or older than ``max_age_s`` (pure).

    The newest scheduled run is always kept: a newly elected planner resumes
    after it (it is the scheduler's progress).
    """
    newest = max(
        (r for r in runs if scheduled_fire(r.name) is not None), key=_by_fire, default=None
    )
    done = sorted(
        (r for r in runs if r.status.final and r is not newest), key=_by_fire, reverse=True
    )
    out = done[keep_last:]
    if max_age_s is not None:
        out += [r for r in done[:keep_last] if (r.finished_at or r.fire) < now - max_age_s]
    return out


async def apply_retention(store: Store, job: JobDef, *, now: float) -> int:
    """Delete the job's finished runs that its retention no longer keeps; return how many."""
    kvs, _ = await store.range(runs_prefix(job.name))
    mods = {}
    runs = []
    for kv in kvs:
        rec = read(kv.key, kv.value, run_decoder(kv.key))
        if rec is None:
            continue
        mods[rec.key] = kv.mod_revision
        runs.append(rec)
    gone = expired(runs, keep_last=job.keep_last, max_age_s=job.max_age_s, now=now)
    deleted = 0
    for i in range(0, len(gone), _MAX_DELETES):
        batch = gone[i : i + _MAX_DELETES]
        result = await store.txn(
            [Compare.mod_revision(r.key, "==", mods[r.key]) for r in batch],
            [Delete(r.key) for r in batch],
        )
        deleted += len(batch) if result.succeeded else 0
    return deleted


async def read_jobs(
    store: Store,
    *,
    recent: int = 5,
    now: datetime | None = None,
    on_reject: Callable[[Rejected], None] | None = None,
) -> list[JobView]:
    """Every job with its next fire, latest runs and the live workers that can run it.

    A read-only snapshot for dashboards and ``keel up``. A malformed record is
    left out (and counted); ``on_reject`` is told about each, to show them.
    """
    kvs, _ = await store.range(JOBS_PREFIX)
    services, _ = await store.range("services/keel-workers.")
    handlers_by_group: dict[str, dict[str, list[str]]] = {}
    for kv in services:
        worker = decode("registry", kv.key, kv.value, partial(decode_instance, kv.key))
        if isinstance(worker, Rejected):
            report(worker)
            continue
        group = worker.service.removeprefix("keel-workers.")
        for handler in handlers_of(worker):
            handlers_by_group.setdefault(group, {}).setdefault(handler, []).append(worker.id)
    defs, planned, runs = _collect(kvs, on_reject)
    moment = now or datetime.now(UTC)
    views = []
    for name, defn in sorted(defs.items()):
        trigger = defn.make_trigger()
        views.append(
            JobView(
                definition=defn,
                next_fire=None if trigger is None or defn.paused else trigger.next_after(moment),
                last_planned=planned.get(name),
                recent=tuple(
                    sorted(runs.get(name, []), key=lambda r: r.fire, reverse=True)[:recent]
                ),
                workers=tuple(sorted(handlers_by_group.get(defn.group, {}).get(defn.handler, []))),
            )
        )
    return views


def _collect(
    kvs: list[KeyValue], on_reject: Callable[[Rejected], None] | None
) -> tuple[dict[str, JobDef], dict[str, datetime], dict[str, list[Execution]]]:
    """Definitions, last planned fires and runs of a listing of ``jobs/`` (rejects skipped)."""
    defs: dict[str, JobDef] = {}
    planned: dict[str, datetime] = {}
    runs: dict[str, list[Execution]] = {}
    for kv in kvs:
        parsed = parse_key(kv.key)
        if parsed is None:
            continue
        name, kind, rest = parsed
        if kind == "def":
            defn = read(kv.key, kv.value, job_decoder(name), on_reject)
            if defn is not None:
                defs[name] = defn
        elif kind == "planned":
            mark = read(kv.key, kv.value, decode_planned, on_reject)
            if mark is not None:
                _later(planned, name, mark.fire)
        elif kind == "runs":
            rec = read(kv.key, kv.value, run_decoder(kv.key), on_reject)
            fire = scheduled_fire(rest)
            if rec is not None:
                runs.setdefault(name, []).append(rec)
                if fire is not None:
                    _later(planned, name, fire)
    return defs, planned, runs


def _by_fire(run: Execution) -> float:
    return run.fire


def _later(latest: dict[str, datetime], name: str, fire: float) -> None:
    moment = datetime.fromtimestamp(fire, UTC)
    if name not in latest or moment > latest[name]:
        latest[name] = moment


async def get_job(store: Store, job: str) -> tuple[JobDef, int]:
    """The job's definition and its mod_revision.

    Raises:
        NotFoundError: no such job.
        ValidationError: its stored definition is malformed (reported, and named).
    """
    kv = await store.get(def_key(check_job_name(job)))
    if kv is None:
        raise NotFoundError(f"no job {job!r}: list jobs with 'keel jobs'")
    return _read_one(kv.key, kv.value, job_decoder(job)), kv.mod_revision


async def last_planned(store: Store, job: str) -> datetime | None:
    """The last fire time the scheduler planned for ``job`` (where planning resumes).

    The newest scheduled run's fire time, or a resume mark written later.
    """
    name = check_job_name(job)
    latest: dict[str, datetime] = {}
    kv = await store.get(planned_key(name))
    mark = None if kv is None else read(kv.key, kv.value, decode_planned)
    if mark is not None:
        _later(latest, name, mark.fire)
    kvs, _ = await store.range(runs_prefix(name))
    for run in kvs:
        fire = scheduled_fire(run.key.rsplit("/", 1)[1])
        if fire is not None and read(run.key, run.value, run_decoder(run.key)) is not None:
            _later(latest, name, fire)
    return latest.get(name)
