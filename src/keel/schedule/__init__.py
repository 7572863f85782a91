"""Distributed scheduling: cron, interval, date and delayed jobs that run once across a cluster.

Jobs are stored as JSON under ``jobs/<job>/def``; one elected :class:`Planner`
per group writes execution records ``jobs/<job>/runs/<fire>-<shard>``;
:class:`Worker` processes claim them under their session lease and run them
with a :class:`JobContext` carrying a fencing token. :class:`Scheduler` puts
both in one process. See ``docs/scheduler.md`` for the model and guarantees.
"""

from keel.schedule._admin import (
    delete_job,
    enqueue,
    pause_job,
    put_job,
    resume_job,
    trigger_job,
)
from keel.schedule._context import Handler, JobContext, RunLogger
from keel.schedule._cron import CronExpression, parse_cron
from keel.schedule._demo import DEMO_JOB, register_demo
from keel.schedule._history import (
    JobStatistics,
    JobView,
    apply_retention,
    get_job,
    get_run,
    job_statistics,
    list_runs,
    read_jobs,
)
from keel.schedule._members import worker_service
from keel.schedule._model import Execution, JobDef, Misfire, Overlap, Routing, Status
from keel.schedule._outcome import WorkerStatistics
from keel.schedule._planner import Planner, PlannerStatistics
from keel.schedule._policies import Plan, pick_worker, plan_fires, retry_at
from keel.schedule._scheduler import Scheduler
from keel.schedule._triggers import (
    MIN_INTERVAL_S,
    CronTrigger,
    DateTrigger,
    IntervalTrigger,
    Trigger,
    trigger_from_dict,
)
from keel.schedule._worker import Worker
from keel.schedule.wheel import Timer, TimingWheel, WheelStatistics

__all__ = [
    "DEMO_JOB",
    "MIN_INTERVAL_S",
    "CronExpression",
    "CronTrigger",
    "DateTrigger",
    "Execution",
    "Handler",
    "IntervalTrigger",
    "JobContext",
    "JobDef",
    "JobStatistics",
    "JobView",
    "Misfire",
    "Overlap",
    "Plan",
    "Planner",
    "PlannerStatistics",
    "Routing",
    "RunLogger",
    "Scheduler",
    "Status",
    "Timer",
    "TimingWheel",
    "Trigger",
    "WheelStatistics",
    "Worker",
    "WorkerStatistics",
    "apply_retention",
    "delete_job",
    "enqueue",
    "get_job",
    "get_run",
    "job_statistics",
    "list_runs",
    "parse_cron",
    "pause_job",
    "pick_worker",
    "plan_fires",
    "put_job",
    "read_jobs",
    "register_demo",
    "resume_job",
    "retry_at",
    "trigger_from_dict",
    "trigger_job",
    "worker_service",
]
