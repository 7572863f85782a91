"""Cron math: parsing errors, agreement with croniter, and DST in two zones."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from croniter import croniter
from hypothesis import given, settings
from hypothesis import strategies as st

from keel.errors import ValidationError
from keel.schedule import parse_cron

NEW_YORK = ZoneInfo("America/New_York")
BERLIN = ZoneInfo("Europe/Berlin")


def _field(low: int, high: int, *, star_step: bool = True) -> st.SearchStrategy[str]:
    number = st.integers(low, high).map(str)
    # croniter 7 misreads one-value ranges such as "1-1" in day-of-week, so spans are proper.
    span = (
        st.tuples(st.integers(low, high), st.integers(low, high))
        .filter(lambda ab: ab[0] != ab[1])
        .map(lambda ab: f"{min(ab)}-{max(ab)}")
    )
    # Day fields: croniter reads '*/n' as restricted or not depending on n; Vixie
    # cron (and keel) read any field starting with '*' as unrestricted.
    starts = ["*", f"{low}-{high}"] if star_step else [f"{low}-{high}"]
    step = st.tuples(st.sampled_from(starts), st.integers(1, high - low + 1))
    return st.one_of(
        st.just("*"),
        number,
        span,
        step.map(lambda s: f"{s[0]}/{s[1]}"),
        st.lists(number, min_size=1, max_size=4).map(",".join),
    )


EXPRESSIONS = st.tuples(
    _field(0, 59),
    _field(0, 59),
    _field(0, 23),
    _field(1, 28, star_step=False),
    _field(1, 12),
    _field(0, 6, star_step=False),
)


@settings(max_examples=150, deadline=None)
@given(fields=EXPRESSIONS, year=st.integers(1990, 2090), day=st.integers(0, 364))
def test_next_fire_agrees_with_croniter(fields: tuple[str, ...], year: int, day: int) -> None:
    """On UTC (no transitions) the next five fire times equal croniter's, 5- and 6-field."""
    start = datetime(year, 1, 1, tzinfo=UTC) + timedelta(days=day, seconds=day * 97)
    for expr, theirs in (
        (" ".join(fields), croniter(" ".join(fields), start, second_at_beginning=True)),
        (" ".join(fields[1:]), croniter(" ".join(fields[1:]), start)),
    ):
        ours = parse_cron(expr)
        t = start
        for _ in range(5):
            nxt = ours.next_after(t, UTC)
            assert nxt == theirs.get_next(datetime), expr
            assert nxt is not None
            t = nxt


@pytest.mark.parametrize(
    ("expr", "field", "value"),
    [
        ("61 * * * *", "minute", "61"),
        ("* 24 * * *", "hour", "24"),
        ("* * 0 * *", "day-of-month", "0"),
        ("* * * FOO *", "month", "FOO"),
        ("* * * * 8", "day-of-week", "8"),
        ("*/0 * * * *", "minute", "*/0"),
        ("5-1 * * * *", "minute", "5-1"),
        ("70 * * * * *", "second", "70"),
    ],
)
def test_invalid_field_is_named(expr: str, field: str, value: str) -> None:
    """An invalid expression names the wrong field and its value."""
    with pytest.raises(ValidationError) as info:
        parse_cron(expr)
    assert f"field {field} has {value!r}" in str(info.value)


def test_wrong_field_count_and_macros() -> None:
    """Field counts other than 5/6 are refused; macros expand."""
    with pytest.raises(ValidationError, match="has 4 fields"):
        parse_cron("* * * *")
    with pytest.raises(ValidationError, match="unknown macro"):
        parse_cron("@sometimes")
    daily = parse_cron("@daily")
    assert daily.next_after(datetime(2024, 1, 1, 5, tzinfo=UTC), UTC) == datetime(
        2024, 1, 2, tzinfo=UTC
    )


def _fires(expr: str, tz: ZoneInfo, start: datetime, count: int) -> list[datetime]:
    parsed, out, t = parse_cron(expr), [], start
    for _ in range(count):
        t = parsed.next_after(t, tz)
        out.append(t)
    return out


@pytest.mark.parametrize(
    ("tz", "spring"),
    [(NEW_YORK, datetime(2024, 3, 10)), (BERLIN, datetime(2024, 3, 31))],
)
def test_skipped_hour_fires_once_at_the_next_valid_time(tz: ZoneInfo, spring: datetime) -> None:
    """A time inside the spring-forward gap fires once, at the end of the gap."""
    start = spring.replace(tzinfo=tz) - timedelta(hours=12)
    fires = _fires("30 2 * * *", tz, start, 2)
    assert fires[0].replace(tzinfo=None) == spring.replace(hour=3)
    assert fires[1].replace(tzinfo=None) == spring + timedelta(days=1, hours=2, minutes=30)
    every_10 = _fires("*/10 2 * * *", tz, start, 7)
    assert [f.replace(tzinfo=None) for f in every_10[:2]] == [
        spring.replace(hour=3),
        spring + timedelta(days=1, hours=2),
    ]


@pytest.mark.parametrize(
    ("tz", "autumn"),
    [(NEW_YORK, datetime(2024, 11, 3)), (BERLIN, datetime(2024, 10, 27))],
)
def test_repeated_hour_fires_once(tz: ZoneInfo, autumn: datetime) -> None:
    """A time inside the fall-back repeated hour fires once, at its first occurrence."""
    hour = 1 if tz is NEW_YORK else 2
    start = autumn.replace(tzinfo=tz) - timedelta(hours=12)
    fires = _fires(f"30 {hour} * * *", tz, start, 2)
    assert fires[0].replace(tzinfo=None) == autumn.replace(hour=hour, minute=30)
    assert fires[0].fold == 0
    assert fires[1].date() == (autumn + timedelta(days=1)).date()
    quarter = _fires("*/15 * * * *", tz, autumn.replace(hour=hour - 1, tzinfo=tz), 10)
    walls = [f.replace(tzinfo=None) for f in quarter]
    assert len(set(walls)) == len(walls), "no wall-clock time twice"
    gaps = [(b.astimezone(UTC) - a).total_seconds() for a, b in itertools.pairwise(quarter)]
    assert 3600 + 900 in gaps  # the repeated hour's second pass is skipped


def test_fire_times_are_strictly_increasing_across_transitions() -> None:
    """Every fire is after the previous, across a whole year of transitions, in both zones."""
    for tz in (NEW_YORK, BERLIN):
        fires = _fires("0 */20 * * * *", tz, datetime(2024, 1, 1, tzinfo=tz), 30000)
        assert all(a < b for a, b in itertools.pairwise(fires))
