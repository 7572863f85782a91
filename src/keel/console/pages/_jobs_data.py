"""What the jobs pages show, as plain data: definitions with next fires, runs, one run's log.

Built on :mod:`keel.schedule`'s read side (``read_jobs``, ``list_runs``,
``get_run``): the same records ``keel jobs`` prints. The run chart is
geometry computed here (:func:`run_chart`) and drawn by the template as
inline SVG, so the page needs no chart library and no script.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from typing import Any

from keel._records import Rejected, decode, report
from keel.console.pages._configs_data import when
from keel.registry import decode_instance
from keel.schedule import (
    Execution,
    JobDef,
    JobView,
    Status,
    get_job,
    get_run,
    list_runs,
    read_jobs,
    worker_service,
)
from keel.store import Store

__all__ = [
    "Bar",
    "Chart",
    "job_detail",
    "job_list",
    "run_chart",
    "run_detail",
    "run_stats",
    "trigger_text",
]

CHART_RUNS = 60
"""Runs drawn in a job's chart (the newest)."""
_MIN_SLOTS = 30  # a few runs get slim bars on the left, not the whole width
_WIDTH, _HEIGHT, _GAP = 600, 120, 2
FILLS = {
    "succeeded": "#2e8540",
    "failed": "#c62828",
    "timed_out": "#d84315",
    "cancelled": "#6d6d6d",
    "skipped": "#9e9e9e",
    "running": "#1565c0",
    "pending": "#90a4ae",
}
"""Bar colour per run status (SVG fill attributes: the CSP allows them, unlike styles)."""


def trigger_text(trigger: dict[str, Any]) -> str:
    """A job trigger in words: ``cron */5 * * * * UTC``, ``every 30s``, ``at ...``, ``manual``."""
    if "cron" in trigger:
        return f"cron {trigger['cron']} {trigger.get('tz') or 'UTC'}"
    if "interval_s" in trigger:
        return f"every {trigger['interval_s']}s"
    if "at" in trigger:
        return f"at {trigger['at']}"
    return "manual"


def _seconds(value: float | None) -> str:
    if value is None:
        return ""
    return f"{value * 1000:.0f} ms" if value < 1 else f"{value:.2f} s"


def _run_row(r: Execution) -> dict[str, Any]:
    return {
        "id": r.id,
        "name": r.name,
        "fire": when(r.fire),
        "kind": r.kind,
        "shard": r.shard,
        "status": r.status.value,
        "attempt": r.attempt,
        "worker": r.worker,
        "token": r.token,
        "started": when(r.started_at),
        "finished": when(r.finished_at),
        "duration": _seconds(r.duration_s),
        "late": _seconds(r.lateness_s),
        "error": r.error,
    }


def _job_row(v: JobView) -> dict[str, Any]:
    d = v.definition
    last = v.recent[0] if v.recent else None
    return {
        "name": d.name,
        "handler": d.handler,
        "group": d.group,
        "trigger": trigger_text(d.trigger),
        "paused": d.paused,
        "next_fire": when(v.next_fire.timestamp()) if v.next_fire else "",
        "last_status": last.status.value if last else "",
        "last_fire": when(last.fire) if last else "",
        "workers": len(v.workers),
        "unhandled": v.unhandled,
    }


async def job_list(store: Store) -> dict[str, Any]:
    """Context of the jobs list: each job's trigger, state, next fire, last run, workers."""
    views = await read_jobs(store, recent=1)
    rows = [_job_row(v) for v in views]
    return {"jobs": rows, "paused_count": sum(1 for r in rows if r["paused"])}


@dataclass(frozen=True, slots=True)
class Bar:
    """One run in the chart: a rectangle (SVG user units) and what it stands for."""

    x: float
    y: float
    width: float
    height: float
    status: str
    title: str
    fill: str


@dataclass(frozen=True, slots=True)
class Chart:
    """Bars of run durations, oldest left, coloured by outcome.

    ``top`` labels the y scale (the longest run); ``start`` and ``end`` are
    the fire times of the first and last bar.
    """

    width: int
    height: int
    bars: tuple[Bar, ...]
    top: str
    start: str = ""
    end: str = ""
    legend: tuple[tuple[str, str], ...] = tuple(FILLS.items())


def run_chart(runs: list[Execution]) -> Chart:
    """Geometry of the durations-and-outcomes chart of ``runs`` (any order; pure).

    A run without a duration (pending, running, skipped) gets a short stub so
    its outcome still shows.
    """
    chosen = sorted(runs, key=lambda r: r.fire)[-CHART_RUNS:]
    longest = max((r.duration_s or 0.0 for r in chosen), default=0.0) or 1.0
    slot = _WIDTH / max(len(chosen), _MIN_SLOTS)
    bars = []
    for n, r in enumerate(chosen):
        share = (r.duration_s or 0.0) / longest
        height = max(share * (_HEIGHT - 16), 3.0)  # room for the scale label above
        took = _seconds(r.duration_s) or "no duration"
        bars.append(
            Bar(
                x=round(n * slot + _GAP / 2, 2),
                y=round(_HEIGHT - height, 2),
                width=round(max(slot - _GAP, 1.0), 2),
                height=round(height, 2),
                status=r.status.value.lower(),
                title=f"{when(r.fire)} {r.status.value} {took}",
                fill=FILLS.get(r.status.value.lower(), "#777777"),
            )
        )
    if not chosen:
        return Chart(_WIDTH, _HEIGHT, (), "")
    return Chart(
        _WIDTH, _HEIGHT, tuple(bars), _seconds(longest), when(chosen[0].fire), when(chosen[-1].fire)
    )


async def job_detail(store: Store, name: str, *, limit: int = 50) -> dict[str, Any]:
    """Context of one job: definition, statistics, chart and latest runs.

    Raises:
        NotFoundError: no such job. ValidationError: its definition is malformed.
    """
    definition, _ = await get_job(store, name)
    runs = await list_runs(store, name, limit=max(limit, CHART_RUNS))
    trigger = definition.make_trigger()
    view = JobView(
        definition=definition,
        next_fire=None
        if trigger is None or definition.paused
        else trigger.next_after(datetime.now(UTC)),
        last_planned=None,
        recent=tuple(runs[:1]),
        workers=await _workers_with(store, definition.group, definition.handler),
    )
    return {
        "job": _job_row(view),
        "definition": json.dumps(_definition(definition), indent=2, sort_keys=True),
        "stats": run_stats(runs),
        "chart": run_chart(runs),
        "runs": [_run_row(r) for r in runs[:limit]],
    }


def run_stats(runs: list[Execution]) -> dict[str, Any]:
    """Counts by outcome, success rate and median/p99 duration of ``runs`` (pure)."""
    counts = Counter(r.status for r in runs)
    failed = counts[Status.FAILED] + counts[Status.TIMED_OUT]
    ended = counts[Status.SUCCEEDED] + failed
    durations = sorted(d for r in runs if r.status.final and (d := r.duration_s) is not None)

    def at(q: float) -> str:
        return (
            _seconds(durations[min(len(durations) - 1, int(q * len(durations)))])
            if durations
            else ""
        )

    return {
        "runs": len(runs),
        "succeeded": counts[Status.SUCCEEDED],
        "failed": failed,
        "active": counts[Status.RUNNING] + counts[Status.PENDING],
        "rate": f"{counts[Status.SUCCEEDED] / ended:.0%}" if ended else "",
        "p50": at(0.5),
        "p99": at(0.99),
    }


async def _workers_with(store: Store, group: str, handler: str) -> tuple[str, ...]:
    """Live workers of ``group`` that registered ``handler`` (malformed instances skipped)."""
    kvs, _ = await store.range(f"services/{worker_service(group)}/")
    out = []
    for kv in kvs:
        worker = decode("registry", kv.key, kv.value, partial(decode_instance, kv.key))
        if isinstance(worker, Rejected):
            report(worker)
        elif handler in worker.metadata.get("handlers", "").split(","):
            out.append(worker.id)
    return tuple(sorted(out))


def _definition(d: JobDef) -> dict[str, Any]:
    return {
        "handler": d.handler,
        "group": d.group,
        "trigger": d.trigger,
        "shards": d.shards,
        "args": d.args,
        "retries": d.retries,
        "timeout_s": d.timeout_s,
        "overlap": d.overlap,
        "misfire": d.misfire,
        "routing": d.routing,
        "keep_last": d.keep_last,
    }


async def run_detail(store: Store, run_id: str) -> dict[str, Any]:
    """Context of one run: its record, captured log and traceback.

    Raises:
        NotFoundError: no such run. ValidationError: a malformed id or record.
    """
    record = await get_run(store, run_id)
    args = json.dumps(record.args, indent=2, sort_keys=True) if record.args is not None else ""
    return {
        "run": _run_row(record),
        "job": record.job,
        "args": args,
        "log": record.log,
        "traceback": record.traceback,
        "final": record.status.final,
    }
