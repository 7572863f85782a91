"""Job definitions and execution records: the documented JSON under ``jobs/``.

Key layout (relative to the store root, readable with ``etcdctl get --prefix``)::

    jobs/<job>/def                      JobDef JSON
    jobs/<job>/planned                  where planning resumes after a pause (optional)
    jobs/<job>/runs/<fire-ms>-<shard>   Execution JSON (status, attempts, times, log...)
    jobs/<job>/claims/<run>             claim of a running execution, on the worker's lease
    jobs/<job>/claims/active-<shard>    the same for overlap forbid/replace: one per shard
    jobs/_dispatch/<term>-<n>           the planner's claim, on a worker's lease, of the
                                        runs it assigned that worker in one transaction

The scheduler's progress is the newest scheduled run of each job (its name
has no tag): a new leader resumes after it, so retention always keeps it.

An execution carries a snapshot of the policies it runs under (handler,
retries, backoff, timeout, overlap), so a worker needs nothing but the record
to run it, and editing a job never changes a run already planned.
"""

from __future__ import annotations

import enum
import json
import re
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, Final, Literal

import msgspec

from keel.errors import ValidationError
from keel.resilience import RetrySettings
from keel.schedule._triggers import Trigger, trigger_from_dict

__all__ = [
    "DISPATCH_PREFIX",
    "JOBS_PREFIX",
    "Execution",
    "JobDef",
    "Misfire",
    "Overlap",
    "Routing",
    "Status",
    "claim_key",
    "def_key",
    "dispatch_key",
    "planned_key",
    "run_key",
    "run_name",
    "runs_prefix",
    "scheduled_fire",
]

JOBS_PREFIX: Final = "jobs/"
DISPATCH_PREFIX: Final = "jobs/_dispatch/"  # '_' starts no job name
_NAME_RE: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,199}")
Overlap = Literal["allow", "forbid", "replace"]
Misfire = Literal["skip", "once", "all"]
Routing = Literal["round_robin", "least_busy", "consistent_hash", "first", "any"]
_OVERLAPS: Final = ("allow", "forbid", "replace")
_MISFIRES: Final = ("skip", "once", "all")
_ROUTINGS: Final = ("round_robin", "least_busy", "consistent_hash", "first", "any")


class Status(enum.StrEnum):
    """The state of one execution."""

    PENDING = "PENDING"
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    TIMED_OUT = "TIMED_OUT"
    CANCELLED = "CANCELLED"
    SKIPPED = "SKIPPED"

    @property
    def final(self) -> bool:
        """Whether the execution is over (no worker will touch it again)."""
        return self not in (Status.PENDING, Status.RUNNING)


def check_job_name(name: object) -> str:
    """Return ``name`` if it is a valid job name, else raise ValidationError."""
    if not isinstance(name, str) or not _NAME_RE.fullmatch(name):
        raise ValidationError(
            f"job name {name!r}: use letters, digits and . _ : - (no '/', at most 200), "
            f"e.g. 'reports.daily'"
        )
    return name


def def_key(job: str) -> str:
    """``jobs/<job>/def``."""
    return f"{JOBS_PREFIX}{job}/def"


def planned_key(job: str) -> str:
    """``jobs/<job>/planned``: the last fire time the scheduler planned."""
    return f"{JOBS_PREFIX}{job}/planned"


def runs_prefix(job: str) -> str:
    """``jobs/<job>/runs/``."""
    return f"{JOBS_PREFIX}{job}/runs/"


def run_name(fire: float, shard: int, tag: str = "") -> str:
    """``<fire-ms>-<shard>`` (``-<tag>`` for manual runs and delayed tasks): sorts by fire time."""
    name = f"{round(fire * 1000):013d}-{shard:03d}"
    return f"{name}-{tag}" if tag else name


def run_key(job: str, name: str) -> str:
    """``jobs/<job>/runs/<name>``."""
    return f"{runs_prefix(job)}{name}"


def dispatch_key(term: int, n: int) -> str:
    """``jobs/_dispatch/<term>-<n>``: the ``n``-th dispatch of the planner elected at ``term``."""
    return f"{DISPATCH_PREFIX}{term}-{n}"


def scheduled_fire(name: str) -> float | None:
    """The fire time of a scheduled run's name (``<fire-ms>-<shard>``); None if it has a tag."""
    head, sep, shard = name.partition("-")
    if not sep or "-" in shard or not head.isdigit():
        return None
    return int(head) / 1000


def claim_key(job: str, name: str, shard: int, overlap: Overlap) -> str:
    """The claim key: one per run, or one per shard when runs must not overlap."""
    suffix = name if overlap == "allow" else f"active-{shard:03d}"
    return f"{JOBS_PREFIX}{job}/claims/{suffix}"


def parse_key(key: str) -> tuple[str, str, str] | None:
    """Split ``jobs/<job>/<kind>[/<rest>]`` into (job, kind, rest), or None."""
    if not key.startswith(JOBS_PREFIX):
        return None
    parts = key[len(JOBS_PREFIX) :].split("/", 2)
    if len(parts) < 2:
        return None
    return parts[0], parts[1], parts[2] if len(parts) == 3 else ""


def _iso(ts: float | None) -> str | None:
    return None if ts is None else datetime.fromtimestamp(ts, UTC).isoformat()


@dataclass(frozen=True, slots=True, kw_only=True)
class JobDef:
    """A job: what to run, when, and under which policies.

    Attributes:
        name: job id (letters, digits, ``._:-``).
        handler: the registered function to call (default: the job name).
        group: the scheduler group that plans it.
        trigger: cron / interval / date form (see ``trigger_from_dict``); empty:
            only manual triggers and ``enqueue``.
        shards: executions per fire (each gets index and total).
        shard_params: optional parameter per shard index.
        args: JSON value passed to the handler as ``ctx.args``.
        retries: extra attempts after a failure or timeout.
        backoff: delays between attempts (``max_attempts`` is ignored: ``retries`` rules).
        timeout_s: cancel the handler after this long (None: no limit).
        overlap: ``allow``, ``forbid`` (skip a fire while the last run is
            active) or ``replace`` (cancel the active run, run the new one).
        misfire: what to do with fires missed while no scheduler led:
            ``skip``, ``once`` (run the latest) or ``all``.
        misfire_limit: at most this many missed fires are recorded or run.
        routing: which live worker gets a non-sharded run first.
        paused: planned fires are not created while paused.
        keep_last, max_age_s: retention of finished runs.
    """

    name: str
    handler: str = ""
    group: str = "default"
    trigger: dict[str, Any] = field(default_factory=dict)
    shards: int = 1
    shard_params: tuple[str, ...] = ()
    args: Any = None
    retries: int = 0
    backoff: RetrySettings = field(default_factory=RetrySettings)
    timeout_s: float | None = None
    overlap: Overlap = "allow"
    misfire: Misfire = "once"
    misfire_limit: int = 100
    routing: Routing = "round_robin"
    paused: bool = False
    keep_last: int = 100
    max_age_s: float | None = None

    def __post_init__(self) -> None:
        check_job_name(self.name)
        if not self.handler:
            object.__setattr__(self, "handler", self.name)
        check_job_name(self.handler)
        if not re.fullmatch(r"[a-z0-9][a-z0-9.-]{0,62}", self.group):
            raise ValidationError(f"group {self.group!r}: use lowercase letters, digits, . and -")
        self.make_trigger()  # validates
        if not (isinstance(self.shards, int) and 1 <= self.shards <= 100):
            raise ValidationError(f"shards {self.shards!r}: use a whole number from 1 to 100")
        object.__setattr__(self, "shard_params", tuple(self.shard_params))
        if self.shard_params and len(self.shard_params) != self.shards:
            raise ValidationError(
                f"shard_params has {len(self.shard_params)} items for {self.shards} shards: "
                f"give one per shard"
            )
        if not (isinstance(self.retries, int) and 0 <= self.retries <= 100):
            raise ValidationError(f"retries {self.retries!r}: use a whole number from 0 to 100")
        if self.timeout_s is not None and not self.timeout_s > 0:
            raise ValidationError(f"timeout_s {self.timeout_s!r}: use seconds > 0, or None")
        _one_of("overlap", self.overlap, _OVERLAPS)
        _one_of("misfire", self.misfire, _MISFIRES)
        _one_of("routing", self.routing, _ROUTINGS)
        if not 1 <= self.misfire_limit <= 10_000:
            raise ValidationError(f"misfire_limit {self.misfire_limit!r}: use 1 to 10000")
        if self.keep_last < 1:
            raise ValidationError(f"keep_last {self.keep_last!r}: keep at least 1 run")
        if self.max_age_s is not None and self.max_age_s <= 0:
            raise ValidationError(f"max_age_s {self.max_age_s!r}: use seconds > 0, or None")

    def make_trigger(self) -> Trigger | None:
        """The trigger object (None: fired only by hand)."""
        return trigger_from_dict(self.trigger, seed=self.name)

    def with_changes(self, **changes: Any) -> JobDef:
        """A copy with some fields changed (validated again)."""
        return replace(self, **changes)

    def encode(self) -> bytes:
        """The definition as the documented JSON record."""
        data = asdict(self)
        data["backoff"] = asdict(self.backoff)
        data["shard_params"] = list(self.shard_params)
        return json.dumps(data, sort_keys=True).encode()

    @classmethod
    def decode(cls, value: bytes) -> JobDef:
        """Parse a stored definition.

        Raises:
            ValidationError: the record is not a valid definition.
        """
        try:
            data = json.loads(value)
            data["backoff"] = RetrySettings(**data.get("backoff") or {})
            data["shard_params"] = tuple(data.get("shard_params") or ())
            return cls(**data)
        except (ValueError, TypeError, KeyError) as exc:
            raise ValidationError(f"job definition is not valid JSON of a JobDef: {exc}") from exc


def _one_of(name: str, value: object, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ValidationError(f"{name} {value!r}: use one of {', '.join(allowed)}")


class Execution(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """One run of a job for one fire time and shard (or one delayed task).

    Times are Unix epoch seconds. ``attempt`` counts claims (a run cut off by
    its worker's death is claimed again); ``failures`` counts attempts that
    failed or timed out, which is what ``retries`` limits. ``dispatch`` names
    the planner's claim when the planner assigned the run to ``worker`` as it
    wrote it (that worker runs it without claiming; see the worker module).

    A msgspec struct: every worker decodes each record several times per run
    (planned, claimed, finished), so encoding and decoding are on the hot path
    (about 5 µs each, against 35-100 µs with dataclasses and the json module).
    Records hold no reference cycles, so they stay out of the garbage
    collector's tracking (``gc=False``): a worker keeps thousands of them.
    """

    job: str
    name: str
    handler: str
    fire: float
    tz: str = "UTC"
    shard: int = 0
    shards: int = 1
    shard_param: str | None = None
    args: Any = None
    kind: str = "scheduled"
    status: Status = Status.PENDING
    attempt: int = 0
    failures: int = 0
    retries: int = 0
    backoff: dict[str, Any] = msgspec.field(default_factory=dict)
    timeout_s: float | None = None
    overlap: Overlap = "allow"
    hint: str = ""
    not_before: float = 0.0
    worker: str = ""
    token: int = 0
    dispatch: str = ""
    started_at: float | None = None
    finished_at: float | None = None
    error: str = ""
    traceback: str = ""
    log: str = ""
    cancel: bool = False

    @property
    def id(self) -> str:
        """``<job>/<name>``: what ``keel jobs logs`` takes."""
        return f"{self.job}/{self.name}"

    @property
    def key(self) -> str:
        """The record's key."""
        return run_key(self.job, self.name)

    @property
    def claim(self) -> str:
        """The key whose presence holds the run: its dispatch, or the claim a worker creates."""
        return self.dispatch or claim_key(self.job, self.name, self.shard, self.overlap)

    @property
    def due(self) -> float:
        """When it may start: its fire time, or later while waiting to retry."""
        return max(self.fire, self.not_before)

    @property
    def lateness_s(self) -> float | None:
        """Start minus fire time of the latest attempt."""
        return None if self.started_at is None else self.started_at - self.fire

    @property
    def duration_s(self) -> float | None:
        """Finish minus start of the latest attempt."""
        if self.started_at is None or self.finished_at is None:
            return None
        return self.finished_at - self.started_at

    def with_changes(self, **changes: Any) -> Execution:
        """A copy with some fields changed."""
        return msgspec.structs.replace(self, **changes)

    def encode(self) -> bytes:
        """The record as JSON, keys sorted, with the fire time in ISO form too for readers."""
        data = msgspec.to_builtins(self)
        data["fire_iso"] = _iso(self.fire)
        return _ENCODER.encode(data)

    @classmethod
    def decode(cls, value: bytes) -> Execution:
        """Parse a stored record (unknown fields, such as ``fire_iso``, are ignored).

        Raises:
            ValidationError: it is not an execution record.
        """
        try:
            return _EXECUTION_DECODER.decode(value)
        except msgspec.ValidationError as exc:
            raise ValidationError(f"execution record is not valid: {exc}") from exc
        except msgspec.DecodeError as exc:
            raise ValidationError(f"execution record is not valid JSON: {exc}") from exc

    def __repr__(self) -> str:
        return (
            f"<Execution {self.id} {self.status.value} attempt={self.attempt} "
            f"worker={self.worker or '-'}>"
        )


_ENCODER: Final = msgspec.json.Encoder(order="sorted")
_EXECUTION_DECODER: Final = msgspec.json.Decoder(Execution)
