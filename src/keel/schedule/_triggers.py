"""Triggers: when a job fires. Pure functions of the previous fire time.

A trigger's fire times must be the same on every process that computes them:
a new scheduler leader re-plans from the persisted last fire time, and the
fire time is part of the execution's key, so two leaders computing different
times would run a job twice. Hence interval jitter is not random but derived
from a hash of the job name and the fire's index (spread like random,
reproducible everywhere).
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Final, Protocol
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from keel.errors import ValidationError
from keel.schedule._checks import MAX_EPOCH_S, check_seconds, check_str
from keel.schedule._cron import CronExpression, parse_cron

__all__ = [
    "MAX_INTERVAL_S",
    "MIN_INTERVAL_S",
    "CronTrigger",
    "DateTrigger",
    "IntervalTrigger",
    "Trigger",
    "date_trigger",
    "trigger_from_dict",
]


class Trigger(Protocol):
    """When a job fires: ``next_after(t)`` is the first fire time strictly after ``t``."""

    def next_after(self, after: datetime) -> datetime | None:
        """The next fire time after ``after`` (aware), or None when there are no more."""
        ...

    def to_dict(self) -> dict[str, Any]:
        """The JSON form stored in the job definition."""
        ...


MIN_INTERVAL_S: Final = 0.1
"""The shortest interval a job may have.

Every fire is one execution record written by the planner and claimed by a
worker; below a tenth of a second the planner would spend its time writing
records (a 1 µs interval asks for 1.5 million per planning pass), and run
names, which carry the fire time in milliseconds, would collide. A handler
that must run more often should loop inside one run.
"""
MAX_INTERVAL_S: Final = 10 * 366 * 86_400.0
"""The longest interval a job may have (ten years; use ``at`` for a single far fire)."""
_KINDS: Final = ("cron", "interval_s", "at")
_KEYS: Final = {
    "cron": frozenset({"cron", "tz"}),
    "interval_s": frozenset({"interval_s", "start", "end", "jitter_s", "tz"}),
    "at": frozenset({"at", "tz"}),
}


def _zone(tz: object) -> ZoneInfo:
    if not isinstance(tz, str) or not 0 < len(tz) <= 64:
        raise ValidationError(f"tz {tz!r}: use an IANA zone name such as 'Europe/Berlin'")
    try:
        return ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError, OSError) as exc:
        raise ValidationError(
            f"tz {tz!r} is not a known time zone: use an IANA name such as 'Europe/Berlin'"
        ) from exc


def _interval(value: object) -> float:
    interval = check_seconds("interval_s", value, high=MAX_INTERVAL_S)
    if interval < MIN_INTERVAL_S:
        raise ValidationError(
            f"interval_s {value!r} is below the minimum of {MIN_INTERVAL_S} s: use "
            f"interval_s >= {MIN_INTERVAL_S} (or loop inside one run); no trigger at all "
            f"makes a job run only by hand"
        )
    return interval


def _aware(value: object, field: str) -> datetime | None:
    """An aware datetime from a datetime, an ISO 8601 string or Unix epoch seconds."""
    if value is None or isinstance(value, datetime):
        moment = value
    elif isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value)
        except ValueError as exc:
            raise ValidationError(
                f"{field} {value[:40]!r} is not an ISO 8601 datetime: "
                f"give e.g. '2030-01-01T02:00:00+00:00'"
            ) from exc
    elif isinstance(value, int | float) and not isinstance(value, bool):
        try:
            seconds = check_seconds(field, value)
        except ValidationError:
            raise ValidationError(
                f"{field} {value!r}: Unix epoch seconds must be from 0 (1970) to "
                f"{MAX_EPOCH_S:.0f} (year 9999); or give an aware datetime"
            ) from None
        moment = datetime.fromtimestamp(seconds, UTC)
    else:
        raise ValidationError(
            f"{field} {type(value).__name__} {value!r:.40}: give an aware datetime, "
            f"an ISO 8601 string with a zone or Unix epoch seconds >= 0"
        )
    if moment is not None and moment.utcoffset() is None:
        raise ValidationError(f"{field} {moment!r} is naive: give a time zone (e.g. +00:00)")
    return moment


@dataclass(frozen=True, slots=True)
class CronTrigger:
    """Fires on a cron expression read in zone ``tz`` (DST-correct, see ``_cron``).

    Attributes:
        cron: the expression (5 fields, or 6 with seconds first).
        tz: IANA zone name.
    """

    cron: str
    tz: str = "UTC"
    _expr: CronExpression = field(init=False, repr=False, compare=False)
    _zone: ZoneInfo = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        check_str("cron", self.cron)
        object.__setattr__(self, "_expr", parse_cron(self.cron))
        object.__setattr__(self, "_zone", _zone(self.tz))

    def next_after(self, after: datetime) -> datetime | None:
        """The next fire time after ``after``, in the trigger's zone."""
        return self._expr.next_after(after, self._zone)

    def to_dict(self) -> dict[str, Any]:
        """``{"cron": ..., "tz": ...}``."""
        return {"cron": self.cron, "tz": self.tz}


def interval_jitter(seed: str, index: int, jitter_s: float) -> float:
    """A reproducible offset in ``[0, jitter_s)`` for fire ``index`` of ``seed`` (the job)."""
    if jitter_s <= 0:
        return 0.0
    digest = hashlib.blake2b(f"{seed}:{index}".encode(), digest_size=8).digest()
    return jitter_s * (int.from_bytes(digest, "big") / 2**64)


@dataclass(frozen=True, slots=True)
class IntervalTrigger:
    """Fires every ``interval_s`` from ``start`` (default the Unix epoch) until ``end``.

    Fire ``k`` is at ``start + k * interval_s + jitter`` with a reproducible
    jitter in ``[0, jitter_s)``. Aligning to ``start`` (not to when the job was
    created) means every process computes the same times.

    Attributes:
        interval_s: seconds between fires (> 0).
        start, end: aware datetimes bounding the fires (end inclusive).
        jitter_s: spread each fire by up to this much (< interval_s).
        seed: salt of the jitter (the scheduler uses the job name).
    """

    interval_s: float
    start: datetime | None = None
    end: datetime | None = None
    jitter_s: float = 0.0
    seed: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "interval_s", _interval(self.interval_s))
        object.__setattr__(self, "jitter_s", check_seconds("jitter_s", self.jitter_s))
        check_str("seed", self.seed)
        if not self.jitter_s < self.interval_s:
            raise ValidationError(
                f"jitter_s must be in [0, interval_s), got {self.jitter_s!r}: "
                f"jitter larger than the interval would reorder fires"
            )
        object.__setattr__(self, "start", _aware(self.start, "start"))
        object.__setattr__(self, "end", _aware(self.end, "end"))
        if self.start and self.end and self.end < self.start:
            raise ValidationError("end is before start: swap them")

    def next_after(self, after: datetime) -> datetime | None:
        """The first fire strictly after ``after``."""
        origin = self.start or datetime(1970, 1, 1, tzinfo=UTC)
        elapsed = (after - origin).total_seconds()
        # Fire k is at origin + k*interval + j(k) with j < interval, so the first
        # fire after `after` has index floor(elapsed/interval) or the next one.
        k = max(0, math.floor(elapsed / self.interval_s))
        while True:
            when = origin + timedelta(
                seconds=k * self.interval_s + interval_jitter(self.seed, k, self.jitter_s)
            )
            if when > after:
                break
            k += 1
        if self.end is not None and when > self.end:
            return None
        return when.astimezone(UTC)

    def to_dict(self) -> dict[str, Any]:
        """The JSON form."""
        return {
            "interval_s": self.interval_s,
            "start": self.start.isoformat() if self.start else None,
            "end": self.end.isoformat() if self.end else None,
            "jitter_s": self.jitter_s,
        }


@dataclass(frozen=True, slots=True)
class DateTrigger:
    """Fires once, at ``at``.

    Attributes:
        at: an aware datetime, an ISO 8601 string with a zone, or Unix epoch
            seconds (>= 0); a naive datetime is refused (which zone would it be?).
    """

    at: datetime

    def __post_init__(self) -> None:
        object.__setattr__(self, "at", _moment(self.at))

    def next_after(self, after: datetime) -> datetime | None:
        """``at`` if it is after ``after``, else None."""
        return self.at if self.at > after else None

    def to_dict(self) -> dict[str, Any]:
        """The JSON form."""
        return {"at": self.at.isoformat()}


def date_trigger(at: datetime | str | float) -> DateTrigger:
    """A :class:`DateTrigger` from an aware datetime, an ISO 8601 string or epoch seconds.

    Raises:
        ValidationError: a naive datetime, a time before 1970, or another type.
    """
    return DateTrigger(_moment(at))


def _moment(at: object) -> datetime:
    moment = _aware(at, "at")
    if moment is None:
        raise ValidationError("at is None: give the time the job fires once")
    return moment


def trigger_from_dict(data: object, *, seed: str = "") -> Trigger | None:
    """Rebuild a trigger from its JSON form (an empty dict: a job fired only by hand).

    Raises:
        ValidationError: the form is not exactly one known trigger with valid fields.
    """
    if not isinstance(data, dict):
        raise ValidationError(
            f"trigger {data!r:.60}: give an object such as {{'cron': '0 2 * * *'}}"
        )
    if not data:
        return None
    kinds = [k for k in _KINDS if k in data]
    if len(kinds) != 1:
        raise ValidationError(
            f"trigger with keys {sorted(map(str, data))!r:.80}: give exactly one of cron, "
            f"interval_s, at (none at all for a job run only by hand)"
        )
    kind = kinds[0]
    unknown = set(data) - _KEYS[kind]
    if unknown:
        raise ValidationError(
            f"trigger {kind} has unknown keys {sorted(map(str, unknown))!r:.80}: "
            f"use only {', '.join(sorted(_KEYS[kind]))}"
        )
    tz = data.get("tz")
    if tz is not None:
        _zone(tz)
    if kind == "cron":
        return CronTrigger(data["cron"], tz or "UTC")
    if kind == "interval_s":
        jitter = data.get("jitter_s")
        return IntervalTrigger(
            data["interval_s"],
            start=data.get("start"),
            end=data.get("end"),
            jitter_s=0.0 if jitter is None else jitter,
            seed=seed,
        )
    return date_trigger(data["at"])
