"""The job definition (``jobs/<job>/def``): checked when made in code and when read from the store.

A definition read from the store passes the same checks as one made in
code: :meth:`JobDef.decode` is strict about every field's type (msgspec), and
:class:`JobDef`'s own checks refuse what the planner cannot honour (an
interval under :data:`~keel.schedule._triggers.MIN_INTERVAL_S`, a cron that
never fires, a date trigger before 1970, more shards than a fire can hold).
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime
from typing import Any, Final, Literal

import msgspec

from keel._records import check_depth
from keel.errors import ValidationError
from keel.resilience import RetrySettings
from keel.schedule._checks import check_bool, check_job_name, check_seconds, check_whole
from keel.schedule._triggers import Trigger, trigger_from_dict

__all__ = [
    "ARGS_DEPTH",
    "MAX_RETRY_DELAY_S",
    "JobDef",
    "Misfire",
    "Overlap",
    "Routing",
    "check_args",
    "check_backoff",
]

Overlap = Literal["allow", "forbid", "replace"]
Misfire = Literal["skip", "once", "all"]
Routing = Literal["round_robin", "least_busy", "consistent_hash", "first", "any"]
_OVERLAPS: Final = ("allow", "forbid", "replace")
_MISFIRES: Final = ("skip", "once", "all")
_ROUTINGS: Final = ("round_robin", "least_busy", "consistent_hash", "first", "any")
_GROUP_RE: Final = re.compile(r"[a-z0-9][a-z0-9.-]{0,62}")
ARGS_DEPTH: Final = 16
"""How deep a job's ``args`` may nest."""
MAX_RETRY_DELAY_S: Final = 7 * 86_400.0
"""The longest delay between two attempts of a run."""


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

    Raises:
        ValidationError: a field of the wrong type or out of range, naming it and the fix.
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
        if self.handler == "":
            object.__setattr__(self, "handler", self.name)
        check_job_name(self.handler)
        if not isinstance(self.group, str) or not _GROUP_RE.fullmatch(self.group):
            raise ValidationError(f"group {self.group!r}: use lowercase letters, digits, . and -")
        self.make_trigger()  # validates
        # the stored form: JSON values (a datetime given in code becomes ISO 8601)
        object.__setattr__(self, "trigger", {k: _json_time(v) for k, v in self.trigger.items()})
        check_whole("shards", self.shards, 1, 100)
        self._check_shard_params()
        check_args(self.args)
        check_whole("retries", self.retries, 0, 100)
        check_backoff(self.backoff)
        if self.timeout_s is not None:
            check_seconds("timeout_s", self.timeout_s, above=True)
        _one_of("overlap", self.overlap, _OVERLAPS)
        _one_of("misfire", self.misfire, _MISFIRES)
        _one_of("routing", self.routing, _ROUTINGS)
        check_whole("misfire_limit", self.misfire_limit, 1, 10_000)
        check_whole("keep_last", self.keep_last, 1, 1_000_000)
        if self.max_age_s is not None:
            check_seconds("max_age_s", self.max_age_s, above=True)
        check_bool("paused", self.paused)

    def _check_shard_params(self) -> None:
        params = self.shard_params
        if not isinstance(params, tuple | list) or not all(isinstance(p, str) for p in params):
            raise ValidationError(f"shard_params {params!r:.60}: give a list of strings")
        object.__setattr__(self, "shard_params", tuple(params))
        if params and len(params) != self.shards:
            raise ValidationError(
                f"shard_params has {len(params)} items for {self.shards} shards: give one per shard"
            )

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
        """Parse a stored definition, strict about every field's type.

        Raises:
            ValidationError: the record is not a valid definition (never another error).
        """
        try:
            record = _DECODER.decode(value)
            fields = msgspec.structs.asdict(record)
            backoff = record.backoff
            fields["backoff"] = (
                RetrySettings()
                if backoff is None
                else RetrySettings(**msgspec.structs.asdict(backoff))
            )
            fields["shard_params"] = tuple(record.shard_params or ())
            return cls(**fields)
        except ValidationError as exc:
            raise ValidationError(f"job definition is not valid: {exc}") from exc
        except (msgspec.ValidationError, msgspec.DecodeError) as exc:
            raise ValidationError(f"job definition is not valid JSON of a JobDef: {exc}") from exc
        except RecursionError as exc:
            raise ValidationError("job definition is nested too deep") from exc


def check_backoff(backoff: object) -> None:
    """Refuse a backoff that is not a :class:`RetrySettings` with delays of at most a week."""
    if not isinstance(backoff, RetrySettings):
        raise ValidationError(f"backoff {backoff!r:.60}: give a RetrySettings")
    for name in ("base_delay_s", "max_delay_s"):
        check_seconds(f"backoff.{name}", getattr(backoff, name), high=MAX_RETRY_DELAY_S)
    check_seconds("backoff.multiplier", backoff.multiplier, low=1.0, high=1000.0)


def check_args(args: object) -> None:
    """Refuse ``args`` that are not JSON or nest deeper than a record may."""
    try:
        check_depth(args, ARGS_DEPTH)
        msgspec.json.encode(args)
    except (TypeError, ValueError, OverflowError, RecursionError) as exc:
        raise ValidationError(
            f"args must be JSON (at most {ARGS_DEPTH} levels deep): {exc}"
        ) from exc


def _json_time(value: object) -> object:
    return value.isoformat() if isinstance(value, datetime) else value


def _one_of(name: str, value: object, allowed: tuple[str, ...]) -> None:
    if not isinstance(value, str) or value not in allowed:
        raise ValidationError(f"{name} {value!r:.60}: use one of {', '.join(allowed)}")


class _Backoff(msgspec.Struct, forbid_unknown_fields=True):
    """The stored form of :class:`RetrySettings` (its own checks run after)."""

    max_attempts: int = 3
    base_delay_s: float = 0.05
    max_delay_s: float = 2.0
    multiplier: float = 2.0
    jitter: str = "full"
    max_elapsed_s: float | None = None


class _Record(msgspec.Struct, forbid_unknown_fields=True):
    """The stored form of :class:`JobDef`: every field's JSON type."""

    name: str
    handler: str = ""
    group: str = "default"
    trigger: dict[str, Any] = {}
    shards: int = 1
    shard_params: list[str] | None = None
    args: Any = None
    retries: int = 0
    backoff: _Backoff | None = None
    timeout_s: float | None = None
    overlap: str = "allow"
    misfire: str = "once"
    misfire_limit: int = 100
    routing: str = "round_robin"
    paused: bool = False
    keep_last: int = 100
    max_age_s: float | None = None


_DECODER: Final = msgspec.json.Decoder(_Record)
