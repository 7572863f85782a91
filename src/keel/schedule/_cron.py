"""Cron expressions: parsing and next-fire computation, pure and DST-correct.

We write this instead of using croniter because the scheduler needs a rule
croniter does not state: a fire time is a *wall-clock* time in the job's zone,
and each wall-clock time fires at most once. So a time inside a spring-forward
gap fires once, at the first valid instant after the gap (the transition), and
a time inside a fall-back repeated hour fires once, at its first occurrence.
That rule makes next-fire a monotonic function of time, which the scheduler
relies on to re-plan idempotently after a failover. Where no transition is
involved, results equal croniter's (the tests check it over random expressions).

Syntax: 5 fields ``minute hour day-of-month month day-of-week`` or 6 fields
with a leading ``second`` (Quartz / xxl-job order). Each field takes ``*``,
``?`` (same as ``*``), numbers, ranges ``a-b``, steps ``*/n`` ``a-b/n`` ``a/n``,
lists ``a,b`` and names (``JAN``-``DEC``, ``SUN``-``SAT``; 0 and 7 are Sunday).
When both day fields are restricted a day matches either (Vixie cron; a field
starting with ``*``, such as ``*/2``, counts as unrestricted there).
Macros: ``@yearly`` ``@annually`` ``@monthly`` ``@weekly`` ``@daily``
``@midnight`` ``@hourly``.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Final

from keel.errors import ValidationError

__all__ = ["CronExpression", "parse_cron"]

_MACROS: Final = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
_MONTHS: Final = {
    name: i + 1
    for i, name in enumerate(
        ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")
    )
}
_DAYS: Final = {name: i for i, name in enumerate(("SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"))}
# (name, low, high, names) per field, in 6-field order.
_FIELDS: Final[tuple[tuple[str, int, int, dict[str, int]], ...]] = (
    ("second", 0, 59, {}),
    ("minute", 0, 59, {}),
    ("hour", 0, 23, {}),
    ("day-of-month", 1, 31, {}),
    ("month", 1, 12, _MONTHS),
    ("day-of-week", 0, 7, _DAYS),
)
# How far ahead to look before concluding an expression never fires again:
# 28 years is the full cycle of weekdays over leap years.
_HORIZON_YEARS: Final = 28


def _bad(expr: str, field: str, value: str, why: str) -> ValidationError:
    return ValidationError(f"cron {expr!r}: field {field} has {value!r}: {why}")


def _number(expr: str, field: str, text: str, names: dict[str, int]) -> int:
    upper = text.upper()
    if upper in names:
        return names[upper]
    if not text.isdigit():
        hint = f"use a number or one of {', '.join(names)}" if names else "use a number"
        raise _bad(expr, field, text, f"not a number: {hint}")
    return int(text)


def _parse_field(expr: str, index: int, text: str) -> tuple[frozenset[int], bool]:
    """Return the allowed values of one field and whether it is unrestricted (``*``)."""
    field, low, high, names = _FIELDS[index]
    values: set[int] = set()
    for part in text.split(","):
        if not part:
            raise _bad(expr, field, text, "empty list item: remove the extra ','")
        body, _, step_text = part.partition("/")
        step = 1
        if step_text or part.endswith("/"):
            step = _number(expr, field, step_text, {})
            if step < 1:
                raise _bad(expr, field, part, "a step must be at least 1")
        if body in ("*", "?"):
            start, end = low, high
        elif "-" in body:
            a, _, b = body.partition("-")
            start, end = _number(expr, field, a, names), _number(expr, field, b, names)
        else:
            start = _number(expr, field, body, names)
            end = high if step_text else start
        for bound in (start, end):
            if not low <= bound <= high:
                raise _bad(expr, field, part, f"out of range {low}-{high}")
        if start > end:
            raise _bad(expr, field, part, f"range runs backwards: write {end}-{start}")
        values.update(range(start, end + 1, step))
    if index == 5 and 7 in values:  # 7 is Sunday too
        values.discard(7)
        values.add(0)
    # Vixie cron: a day field starting with '*' counts as unrestricted for the OR rule.
    return frozenset(values), text[:1] in ("*", "?")


@dataclass(frozen=True, slots=True)
class CronExpression:
    """A parsed cron expression; :meth:`next_after` gives fire times.

    Attributes:
        expression: the text it was parsed from.
        seconds, minutes, hours, days, months, weekdays: allowed values, sorted
            (weekday 0 is Sunday).
        any_day, any_weekday: whether those fields were ``*``.
    """

    expression: str
    seconds: tuple[int, ...]
    minutes: tuple[int, ...]
    hours: tuple[int, ...]
    days: tuple[int, ...]
    months: tuple[int, ...]
    weekdays: frozenset[int]
    any_day: bool
    any_weekday: bool

    def _day_ok(self, d: datetime) -> bool:
        dom = d.day in self.days
        dow = (d.weekday() + 1) % 7 in self.weekdays
        if self.any_day:
            return dow
        if self.any_weekday:
            return dom
        return dom or dow

    def next_naive(self, t: datetime) -> datetime | None:
        """The first matching wall-clock time at or after naive ``t`` (whole seconds).

        Returns:
            the match, or None if there is none within the horizon.
        """
        t = t.replace(microsecond=0)
        limit = t.year + _HORIZON_YEARS
        while t.year <= limit:
            if t.month not in self.months:
                i = bisect.bisect_right(self.months, t.month)
                year = t.year if i < len(self.months) else t.year + 1
                month = self.months[i] if i < len(self.months) else self.months[0]
                t = datetime(year, month, 1)
                continue
            if not self._day_ok(t):
                t = datetime(t.year, t.month, t.day) + timedelta(days=1)
                continue
            if t.hour not in self.hours:
                i = bisect.bisect_right(self.hours, t.hour)
                day = datetime(t.year, t.month, t.day)
                t = day.replace(hour=self.hours[i]) if i < len(self.hours) else day + timedelta(1)
                continue
            if t.minute not in self.minutes:
                i = bisect.bisect_right(self.minutes, t.minute)
                hour = t.replace(minute=0, second=0)
                t = (
                    hour.replace(minute=self.minutes[i])
                    if i < len(self.minutes)
                    else hour + timedelta(hours=1)
                )
                continue
            if t.second not in self.seconds:
                i = bisect.bisect_right(self.seconds, t.second)
                minute = t.replace(second=0)
                t = (
                    minute.replace(second=self.seconds[i])
                    if i < len(self.seconds)
                    else minute + timedelta(minutes=1)
                )
                continue
            return t
        return None

    def next_after(self, after: datetime, tz: tzinfo) -> datetime | None:
        """The first fire time strictly after ``after``, as an aware datetime in ``tz``.

        A wall-clock time in a DST gap fires at the first instant after the gap;
        one in a repeated hour fires at its first occurrence; so each matching
        wall-clock time fires once.

        Args:
            after: an aware datetime.
            tz: the zone the expression's fields are read in.

        Returns:
            the next fire time, or None if the expression never fires again.

        Raises:
            ValidationError: ``after`` is naive.
        """
        if after.tzinfo is None:
            raise ValidationError("next_after needs an aware datetime: add tzinfo")
        after_utc = after.astimezone(UTC)
        candidate = self.next_naive(after_utc.astimezone(tz).replace(tzinfo=None))
        while candidate is not None:
            instant = resolve_local(candidate, tz)
            if instant > after_utc:
                return instant.astimezone(tz)
            candidate = self.next_naive(candidate + timedelta(seconds=1))
        return None

    def __str__(self) -> str:
        return self.expression


def resolve_local(naive: datetime, tz: tzinfo) -> datetime:
    """Map a wall-clock time in ``tz`` to one UTC instant (gap → end of gap, repeat → first).

    Returns:
        an aware UTC datetime.
    """
    first = naive.replace(tzinfo=tz, fold=0)
    as_utc = first.astimezone(UTC)
    if as_utc.astimezone(tz).replace(tzinfo=None) == naive:
        return as_utc  # exists (fold=0 is the first occurrence of a repeated time)
    # In a gap: fold=0 reads the time with the offset before the transition, so
    # it lands after the gap; the transition itself is the first valid instant.
    later = naive.replace(tzinfo=tz, fold=1).astimezone(UTC)
    lo, hi = min(as_utc, later), max(as_utc, later)
    while hi - lo > timedelta(seconds=1):
        mid = lo + (hi - lo) / 2
        if mid.astimezone(tz).replace(tzinfo=None) < naive:
            lo = mid
        else:
            hi = mid
    return hi.replace(microsecond=0)


_DAYS_IN_MONTH: Final = (31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)  # February of leap years


def _check_fires(
    expr: str, days: tuple[frozenset[int], bool], months: frozenset[int], any_weekday: bool
) -> None:
    """Refuse an expression that can never fire (``0 0 30 2 *``: February has no 30th).

    Only a restricted day of month with an unrestricted day of week can miss
    every date: a restricted weekday always matches some day (Vixie cron ORs
    the two day fields when both are restricted).
    """
    allowed, any_day = days
    if any_day or not any_weekday:
        return
    if any(day <= _DAYS_IN_MONTH[month - 1] for month in months for day in allowed):
        return
    raise ValidationError(
        f"cron {expr!r} never fires: none of months {sorted(months)} has day "
        f"{'/'.join(map(str, sorted(allowed)))}: pick days that exist in those months"
    )


def parse_cron(expression: str) -> CronExpression:
    """Parse a cron expression (5 fields, or 6 with a leading seconds field, or a macro).

    Raises:
        ValidationError: naming the field and value that are wrong, and the fix;
            also for an expression that never fires (``0 0 30 2 *``).
    """
    if not isinstance(expression, str) or not expression.strip():
        raise ValidationError(
            f"cron expression {expression!r} is empty: give e.g. '0 2 * * *' (02:00 daily)"
        )
    text = _MACROS.get(expression.strip().lower(), expression.strip())
    if text.startswith("@"):
        raise ValidationError(f"cron {expression!r}: unknown macro: use one of {sorted(_MACROS)}")
    parts = text.split()
    if len(parts) == 5:
        parts = ["0", *parts]
    elif len(parts) != 6:
        raise ValidationError(
            f"cron {expression!r} has {len(parts)} fields: give 5 (minute hour day month "
            f"weekday) or 6 (second first)"
        )
    parsed = [_parse_field(expression, i, part) for i, part in enumerate(parts)]
    _check_fires(expression, parsed[3], parsed[4][0], parsed[5][1])
    return CronExpression(
        expression=expression.strip(),
        seconds=tuple(sorted(parsed[0][0])),
        minutes=tuple(sorted(parsed[1][0])),
        hours=tuple(sorted(parsed[2][0])),
        days=tuple(sorted(parsed[3][0])),
        months=tuple(sorted(parsed[4][0])),
        weekdays=parsed[5][0],
        any_day=parsed[3][1],
        any_weekday=parsed[5][1],
    )
