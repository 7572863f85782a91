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
from datetime import UTC, datetime
from typing import Annotated, Any, Final, Literal
from zoneinfo import ZoneInfo

import msgspec

from keel._records import check_depth
from keel.errors import ValidationError
from keel.schedule._checks import MAX_EPOCH_S, check_job_name, check_seconds
from keel.schedule._jobdef import (
    ARGS_DEPTH,
    MAX_RETRY_DELAY_S,
    JobDef,
    Misfire,
    Overlap,
    Routing,
)

__all__ = [
    "DISPATCH_PREFIX",
    "JOBS_PREFIX",
    "Execution",
    "JobDef",
    "Kind",
    "Misfire",
    "Overlap",
    "Routing",
    "Status",
    "check_job_name",
    "claim_key",
    "def_key",
    "dispatch_key",
    "parse_key",
    "planned_key",
    "run_key",
    "run_name",
    "runs_prefix",
    "scheduled_fire",
]

JOBS_PREFIX: Final = "jobs/"
DISPATCH_PREFIX: Final = "jobs/_dispatch/"  # '_' starts no job name
Kind = Literal["scheduled", "misfire", "manual", "delayed"]
# The JSON types of an execution record's fields, with their ranges (checked
# by msgspec as it decodes, in C: a worker decodes several records per run).
_Name = Annotated[str, msgspec.Meta(min_length=1, max_length=200)]  # readers match it to the key
_RunName = Annotated[str, msgspec.Meta(pattern=r"^[0-9]{13,15}-[0-9]{3}(-[A-Za-z0-9]{1,40})?$")]
_Time = Annotated[float, msgspec.Meta(ge=0, le=MAX_EPOCH_S)]
_Timeout = Annotated[float, msgspec.Meta(gt=0, le=MAX_EPOCH_S)]
_Zone = Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
_Shard = Annotated[int, msgspec.Meta(ge=0, le=99)]
_Shards = Annotated[int, msgspec.Meta(ge=1, le=100)]
_Retries = Annotated[int, msgspec.Meta(ge=0, le=100)]
_Count = Annotated[int, msgspec.Meta(ge=0, le=1_000_000)]
_Token = Annotated[int, msgspec.Meta(ge=0, le=2**63 - 1)]
_backoff_seen: dict[str, Any] = {}
_Dispatch = Annotated[str, msgspec.Meta(pattern=r"^(jobs/_dispatch/[0-9]+-[0-9]+)?$")]
_BACKOFF_KEYS: Final = frozenset({"base_delay_s", "max_delay_s", "multiplier", "jitter"})
_JITTERS: Final = frozenset({"none", "full", "equal", "decorrelated"})


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

    job: _Name
    name: _RunName
    handler: _Name
    fire: _Time
    tz: _Zone = "UTC"
    shard: _Shard = 0
    shards: _Shards = 1
    shard_param: str | None = None
    args: Any = None
    kind: Kind = "scheduled"
    status: Status = Status.PENDING
    attempt: _Count = 0
    failures: _Count = 0
    retries: _Retries = 0
    backoff: dict[str, Any] = msgspec.field(default_factory=dict)
    timeout_s: _Timeout | None = None
    overlap: Overlap = "allow"
    hint: str = ""
    not_before: _Time = 0.0
    worker: str = ""
    token: _Token = 0
    dispatch: _Dispatch = ""
    started_at: _Time | None = None
    finished_at: _Time | None = None
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

        Every field's type and range is checked (see ``_check_execution``).

        Raises:
            ValidationError: it is not an execution record (never another error).
        """
        try:
            return _check_execution(_EXECUTION_DECODER.decode(value))
        except msgspec.ValidationError as exc:
            raise ValidationError(f"execution record is not valid: {exc}") from exc
        except msgspec.DecodeError as exc:
            raise ValidationError(f"execution record is not valid JSON: {exc}") from exc
        except RecursionError as exc:
            raise ValidationError("execution record is nested too deep") from exc

    def __repr__(self) -> str:
        return (
            f"<Execution {self.id} {self.status.value} attempt={self.attempt} "
            f"worker={self.worker or '-'}>"
        )


_ENCODER: Final = msgspec.json.Encoder(order="sorted")
_EXECUTION_DECODER: Final = msgspec.json.Decoder(Execution)


def _check_execution(rec: Execution) -> Execution:
    """What msgspec's field types do not say: shard in range, backoff, depth, zone.

    Records made in code come from checked definitions; this runs on the
    ones read from the store (a worker decodes several per run, so it stays cheap).
    """
    if rec.shard >= rec.shards:
        raise ValidationError(f"shard {rec.shard} of {rec.shards} shards: expected shard < shards")
    if rec.backoff:
        _check_backoff(rec.backoff)
    if isinstance(rec.args, dict | list):
        try:
            check_depth(rec.args, ARGS_DEPTH)
        except ValueError as exc:
            raise ValidationError(f"args: {exc}") from exc
    _check_tz(rec.tz)
    return rec


def _check_backoff(backoff: dict[str, Any]) -> None:
    global _backoff_seen  # every run of a job has the same backoff: check it once
    if backoff == _backoff_seen:
        return
    if not backoff.keys() <= _BACKOFF_KEYS:
        raise ValidationError(f"backoff keys {sorted(backoff)!r:.80}: use {sorted(_BACKOFF_KEYS)}")
    base = check_seconds(
        "backoff.base_delay_s", backoff.get("base_delay_s", 0.0), high=MAX_RETRY_DELAY_S
    )
    top = check_seconds(
        "backoff.max_delay_s", backoff.get("max_delay_s", base), high=MAX_RETRY_DELAY_S
    )
    check_seconds("backoff.multiplier", backoff.get("multiplier", 1.0), low=1.0, high=1000.0)
    if base > top or backoff.get("jitter", "full") not in _JITTERS:
        raise ValidationError(f"backoff {backoff!r:.80}: need base <= max delay and a known jitter")
    _backoff_seen = dict(backoff)


def _check_tz(tz: str) -> None:
    if tz == "UTC":
        return
    try:
        ZoneInfo(tz)  # cached by the class after the first lookup
    except (ValueError, OSError, KeyError) as exc:  # ZoneInfoNotFoundError is a KeyError
        raise ValidationError(f"tz {tz[:64]!r} is not a known time zone") from exc
