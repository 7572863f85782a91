"""Interval, date and cron triggers: alignment, jitter bounds, reproducibility."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from keel.errors import ValidationError
from keel.schedule import CronTrigger, DateTrigger, IntervalTrigger, trigger_from_dict

T0 = datetime(2024, 5, 1, tzinfo=UTC)


def test_interval_aligned_to_start_with_end() -> None:
    """Fires are start + k*interval, strictly after the given time, and stop after end."""
    trig = IntervalTrigger(10, start=T0, end=T0 + timedelta(seconds=30))
    assert trig.next_after(T0 - timedelta(days=1)) == T0
    assert trig.next_after(T0) == T0 + timedelta(seconds=10)
    assert trig.next_after(T0 + timedelta(seconds=25)) == T0 + timedelta(seconds=30)
    assert trig.next_after(T0 + timedelta(seconds=30)) is None


@settings(max_examples=200, deadline=None)
@given(
    interval=st.floats(0.5, 3600),
    frac=st.floats(0, 0.99),
    offset=st.floats(0, 1e6),
    seed=st.text(max_size=8),
)
def test_interval_jitter_stays_in_bounds(
    interval: float, frac: float, offset: float, seed: str
) -> None:
    """Each jittered fire lies in [slot, slot + jitter) and fires never reorder."""
    jitter = interval * frac
    trig = IntervalTrigger(interval, start=T0, jitter_s=jitter, seed=seed)
    after = T0 + timedelta(seconds=offset)
    first = trig.next_after(after)
    assert first is not None and first > after
    second = trig.next_after(first)
    assert second is not None and second > first
    for fire in (first, second):
        into = (fire - T0).total_seconds() % interval
        assert into < jitter + 1e-6 or into > interval - 1e-6
    again = IntervalTrigger(interval, start=T0, jitter_s=jitter, seed=seed)
    assert again.next_after(after) == first, "the same on every process"


def test_bad_triggers_are_refused() -> None:
    """Bad interval, jitter, zone and naive datetimes name the field."""
    with pytest.raises(ValidationError, match="interval_s"):
        IntervalTrigger(0)
    with pytest.raises(ValidationError, match="jitter_s"):
        IntervalTrigger(1, jitter_s=2)
    with pytest.raises(ValidationError, match="tz 'Mars/Base'"):
        CronTrigger("* * * * *", "Mars/Base")
    with pytest.raises(ValidationError, match="naive"):
        DateTrigger(datetime(2024, 1, 1))  # the point of the test


def test_round_trip_through_json_form() -> None:
    """Each trigger rebuilds from its stored form with the same fire times."""
    for trig in (
        CronTrigger("0 2 * * *", "Asia/Shanghai"),
        IntervalTrigger(5, start=T0, jitter_s=1, seed="job"),
        DateTrigger(T0 + timedelta(hours=1)),
    ):
        again = trigger_from_dict(trig.to_dict(), seed="job")
        assert again is not None
        assert again.next_after(T0) == trig.next_after(T0)
    assert trigger_from_dict({}) is None
