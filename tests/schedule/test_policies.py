"""Pure decisions: planning with misfires, retries, routing, retention, statistics, records."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest

from keel.errors import ValidationError
from keel.resilience import RetrySettings
from keel.schedule import Execution, IntervalTrigger, JobDef, Status, pick_worker, plan_fires
from keel.schedule._history import expired, statistics_of
from keel.schedule._policies import retry_at

T0 = datetime(2024, 1, 1, tzinfo=UTC)
EVERY_S = IntervalTrigger(1.0)


def _plan(misfire: str, *, limit: int = 100, last_s: float = 0.0, now_s: float = 10.2):
    return plan_fires(
        EVERY_S,
        last=T0 + timedelta(seconds=last_s),
        now=T0 + timedelta(seconds=now_s),
        lookahead_s=1.0,
        grace_s=1.0,
        misfire=misfire,  # type: ignore[arg-type]
        misfire_limit=limit,
    )


def _secs(times: tuple[datetime, ...]) -> list[int]:
    return [round((t - T0).total_seconds()) for t in times]


def test_misfire_skip_once_all() -> None:
    """Fires 1..9 are missed (older than now - grace); 10 and 11 are on time either way."""
    skip, once, every = _plan("skip"), _plan("once"), _plan("all")
    assert _secs(skip.skipped) == list(range(1, 10)) and _secs(skip.run) == [10, 11]
    assert _secs(once.skipped) == list(range(1, 9)) and _secs(once.run) == [9, 10, 11]
    assert _secs(once.late) == [9] and _secs(every.late) == list(range(1, 10)) and not skip.late
    assert _secs(every.skipped) == [] and _secs(every.run) == list(range(1, 12))
    for plan in (skip, once, every):
        assert _secs((plan.last,)) == [11] and _secs((plan.next_fire,)) == [12]  # type: ignore[arg-type]


def test_misfire_limit_bounds_and_new_jobs_backfill_nothing() -> None:
    """At most misfire_limit missed fires are run or recorded; a new job starts from now."""
    bounded = _plan("all", limit=3)
    assert _secs(bounded.run) == [7, 8, 9, 10, 11] and bounded.dropped == 6
    fresh = plan_fires(
        EVERY_S,
        last=None,
        now=T0 + timedelta(seconds=100.5),
        lookahead_s=1.0,
        grace_s=1.0,
        misfire="all",
        misfire_limit=100,
    )
    assert _secs(fresh.run) == [100, 101] and not fresh.skipped


def test_retry_at_uses_backoff_and_stops() -> None:
    """A failure is retried within the backoff cap until failures exceed retries."""
    settings = {"base_delay_s": 1.0, "max_delay_s": 4.0, "multiplier": 2.0, "jitter": "none"}
    rec = Execution(job="j", name="n", handler="j", fire=0.0, retries=2, backoff=settings)
    rng = random.Random(1)
    assert retry_at(rec.with_changes(failures=1), 100.0, rng) == 101.0
    assert retry_at(rec.with_changes(failures=2), 100.0, rng) == 102.0
    assert retry_at(rec.with_changes(failures=3), 100.0, rng) is None


def test_pick_worker_strategies() -> None:
    """Round robin cycles, consistent hash is stable, least busy picks the idlest."""
    workers = ["a", "b", "c"]
    assert [pick_worker("round_robin", workers, job="j", counter=i) for i in range(4)] == [
        "a",
        "b",
        "c",
        "a",
    ]
    sticky = {pick_worker("consistent_hash", workers, job="j", counter=i) for i in range(10)}
    assert len(sticky) == 1
    assert (
        pick_worker("least_busy", workers, job="j", counter=0, busy={"a": 2, "b": 0, "c": 1}) == "b"
    )
    assert pick_worker("first", workers, job="j", counter=5) == "a"
    assert pick_worker("any", workers, job="j", counter=5) == ""
    assert pick_worker("round_robin", [], job="j", counter=5) == ""


def test_retention_and_statistics() -> None:
    """Finished runs beyond keep_last or max_age go; stats count statuses and durations."""
    runs = [
        Execution(
            job="j",
            name=str(i),
            handler="j",
            fire=float(i),
            status=Status.SUCCEEDED if i % 4 else Status.FAILED,
            started_at=float(i),
            finished_at=i + 0.1 * (i % 3 + 1),
        )
        for i in range(10)
    ]
    runs.append(Execution(job="j", name="p", handler="j", fire=20.0))
    gone = expired(runs, keep_last=4, max_age_s=None, now=100.0)
    assert sorted(r.fire for r in gone) == [0, 1, 2, 3, 4, 5]
    aged = expired(runs, keep_last=4, max_age_s=92.5, now=100.0)
    assert sorted(r.fire for r in aged) == list(range(8))
    stats = statistics_of("j", runs)
    assert (stats.succeeded, stats.failed, stats.pending) == (7, 3, 1)
    assert stats.success_rate == pytest.approx(0.7)
    assert stats.p50_duration_s == pytest.approx(0.2)
    assert stats.last_run is not None and stats.last_run.name == "p"


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"name": "a/b"}, "job name"),
        ({"shards": 0}, "shards"),
        ({"shards": 2, "shard_params": ("x",)}, "shard_params"),
        ({"overlap": "never"}, "overlap"),
        ({"misfire": "maybe"}, "misfire"),
        ({"routing": "smart"}, "routing"),
        ({"retries": -1}, "retries"),
        ({"timeout_s": 0}, "timeout_s"),
        ({"trigger": {"cron": "0 25 * * *"}}, "field hour"),
        ({"group": "Bad Group"}, "group"),
    ],
)
def test_bad_job_definitions_name_the_field(changes: dict[str, object], field: str) -> None:
    """A bad definition is refused with the field named."""
    with pytest.raises(ValidationError, match=field):
        JobDef(**{"name": "ok", **changes})  # type: ignore[arg-type]


def test_records_round_trip() -> None:
    """Definitions and executions survive their JSON form."""
    defn = JobDef(
        name="reports.daily",
        trigger={"cron": "0 2 * * *", "tz": "Asia/Shanghai"},
        shards=2,
        shard_params=("a", "b"),
        retries=3,
        backoff=RetrySettings(base_delay_s=0.5),
        overlap="forbid",
    )
    assert JobDef.decode(defn.encode()) == defn
    rec = Execution(
        job="j",
        name="0000000001500-000",
        handler="h",
        fire=1.5,
        args={"x": [1]},
        status=Status.FAILED,
    )
    assert Execution.decode(rec.encode()) == rec
    assert "FAILED" in repr(rec)
