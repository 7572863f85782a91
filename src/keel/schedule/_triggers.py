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
from typing import Any, Protocol
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from keel.errors import ValidationError
from keel.schedule._cron import CronExpression, parse_cron

__all__ = [
    "CronTrigger",
    "DateTrigger",
    "IntervalTrigger",
    "Trigger",
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


def _zone(tz: str) -> ZoneInfo:
    try:
        return ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValidationError(
            f"tz {tz!r} is not a known time zone: use an IANA name such as 'Europe/Berlin'"
        ) from exc


def _aware(value: datetime | str | None, field: str) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError as exc:
            raise ValidationError(f"{field} {value!r} is not an ISO 8601 datetime") from exc
    if value.tzinfo is None:
        raise ValidationError(f"{field} {value!r} is naive: give a time zone (e.g. +00:00)")
    return value


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
        if not (isinstance(self.interval_s, int | float) and self.interval_s > 0):
            raise ValidationError(f"interval_s must be > 0 seconds, got {self.interval_s!r}")
        if not 0 <= self.jitter_s < self.interval_s:
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
    """Fires once, at ``at``."""

    at: datetime

    def __post_init__(self) -> None:
        object.__setattr__(self, "at", _aware(self.at, "at"))

    def next_after(self, after: datetime) -> datetime | None:
        """``at`` if it is after ``after``, else None."""
        return self.at if self.at > after else None

    def to_dict(self) -> dict[str, Any]:
        """The JSON form."""
        return {"at": self.at.isoformat()}


def trigger_from_dict(data: dict[str, Any], *, seed: str = "") -> Trigger | None:
    """Rebuild a trigger from its JSON form (None: a job fired only by hand).

    Raises:
        ValidationError: the form is not a known trigger.
    """
    if not data:
        return None
    if "cron" in data:
        return CronTrigger(data["cron"], data.get("tz") or "UTC")
    if "interval_s" in data:
        return IntervalTrigger(
            float(data["interval_s"]),
            start=data.get("start"),
            end=data.get("end"),
            jitter_s=float(data.get("jitter_s") or 0.0),
            seed=seed,
        )
    if "at" in data:
        return DateTrigger(data["at"])
    raise ValidationError(f"trigger {data!r} is not cron, interval_s or at: give one of them")
