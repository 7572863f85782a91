"""Outlier ejection: detection, back-off, return, and the ejection cap."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from keel.balance import LeastOutstanding, OutlierEjection, OutlierSettings, RoundRobin
from keel.errors import ValidationError
from keel.testing import FakeClock
from tests.balance._helpers import Node, nodes


def _ejector(clock: FakeClock, **kwargs: float) -> OutlierEjection:
    settings = OutlierSettings(**{"max_ejection_percent": 50.0, **kwargs})  # type: ignore[arg-type]
    return OutlierEjection(RoundRobin(rng=random.Random(0), clock=clock), settings, clock=clock)


def test_consecutive_failures_eject_then_return() -> None:
    """Five failures in a row eject an instance for base_ejection_s, then it returns."""
    clock = FakeClock()
    oe = _ejector(clock, base_ejection_s=30.0)
    instances = nodes(4)
    bad = instances[0]
    for _ in range(4):
        oe.observe(bad, 0.01, ok=False)
    assert not oe.is_ejected(bad)
    oe.observe(bad, 0.01, ok=False)
    assert oe.is_ejected(bad)
    assert oe.ejected_until(bad) == pytest.approx(30.0)
    assert "n0" not in {oe.pick(instances).id for _ in range(40)}
    clock.advance(29.9)
    assert oe.is_ejected(bad)
    clock.advance(0.1)
    assert not oe.is_ejected(bad)
    assert Counter(oe.pick(instances).id for _ in range(40))["n0"] == 10
    assert oe.statistics().ejections == 1


def test_success_resets_the_failure_run() -> None:
    """A success between failures restarts the count of consecutive failures."""
    clock = FakeClock()
    oe = _ejector(clock)
    node = Node("a")
    for _ in range(10):
        for _ in range(4):
            oe.observe(node, 0.01, ok=False)
        oe.observe(node, 0.01, ok=True)
    assert not oe.is_ejected(node)


def test_backoff_grows_with_each_ejection_and_is_capped() -> None:
    """The n-th ejection lasts n x base, at most max_ejection_s."""
    clock = FakeClock()
    oe = _ejector(clock, consecutive_failures=1, base_ejection_s=10.0, max_ejection_s=25.0)
    node = Node("a")
    durations = []
    for _ in range(4):
        oe.observe(node, 0.01, ok=False)
        until = oe.ejected_until(node)
        assert until is not None
        durations.append(until - clock.monotonic())
        clock.advance(until - clock.monotonic())
    assert durations == [10.0, 20.0, 25.0, 25.0]


def test_backoff_multiplier_decays_while_healthy() -> None:
    """Each healthy window after returning takes one step off the back-off multiplier."""
    clock = FakeClock()
    oe = _ejector(clock, consecutive_failures=1, base_ejection_s=10.0, window_s=10.0)
    node = Node("a")
    oe.observe(node, 0.01, ok=False)
    clock.advance(10.0)
    oe.observe(node, 0.01, ok=False)  # second ejection: 20 s
    clock.advance(20.0)
    clock.advance(100.0)  # ten healthy windows
    oe.observe(node, 0.01, ok=False)
    assert oe.ejected_until(node) == pytest.approx(clock.monotonic() + 10.0)


def test_failure_rate_over_window_ejects() -> None:
    """A 50 % failure rate over >= 20 calls in the window ejects, below it does not."""
    clock = FakeClock()
    oe = _ejector(clock, consecutive_failures=0, failure_rate=0.5, minimum_requests=20)
    flaky, fine = Node("flaky"), Node("fine")
    for i in range(40):
        oe.observe(flaky, 0.01, ok=i % 2 == 0)
        oe.observe(fine, 0.01, ok=i % 4 != 0)
        clock.advance(0.1)
    assert oe.is_ejected(flaky)
    assert not oe.is_ejected(fine)


def test_failure_rate_forgets_old_windows() -> None:
    """Failures from two windows ago do not count towards the rate."""
    clock = FakeClock()
    oe = _ejector(clock, consecutive_failures=0, failure_rate=0.5, minimum_requests=20)
    node = Node("a")
    for _ in range(19):
        oe.observe(node, 0.01, ok=False)
    clock.advance(25.0)
    for _ in range(19):
        oe.observe(node, 0.01, ok=True)
    oe.observe(node, 0.01, ok=False)
    assert not oe.is_ejected(node)


def test_never_ejects_more_than_max_share() -> None:
    """With max_ejection_percent=20 and 10 instances, at most 2 are out at once."""
    clock = FakeClock()
    oe = OutlierEjection(
        LeastOutstanding(rng=random.Random(2), clock=clock),
        OutlierSettings(consecutive_failures=1, max_ejection_percent=20.0),
        clock=clock,
    )
    instances = nodes(10)
    oe.pick(instances)
    for node in instances:
        oe.observe(node, 0.01, ok=False)
    stats = oe.statistics()
    assert stats.ejected == ("n0", "n1")
    assert stats.refused == 8
    assert {oe.pick(instances).id for _ in range(200)} == {f"n{i}" for i in range(2, 10)}


def test_at_least_one_can_be_ejected_and_all_ejected_falls_back() -> None:
    """A small share still ejects one; if every candidate is ejected the pick uses them all."""
    clock = FakeClock()
    oe = _ejector(clock, consecutive_failures=1, max_ejection_percent=1.0)
    instances = nodes(3)
    oe.pick(instances)
    oe.observe(instances[0], 0.01, ok=False)
    assert oe.is_ejected(instances[0])
    assert oe.pick(instances[:1]) is instances[0]


def test_track_feeds_both_ejector_and_inner() -> None:
    """A tracked call counts as outstanding in the inner balancer and as an outcome here."""
    clock = FakeClock()
    inner = LeastOutstanding(clock=clock)
    oe = OutlierEjection(inner, OutlierSettings(consecutive_failures=1), clock=clock)
    node = Node("a")
    with pytest.raises(OSError), oe.track(node):
        assert inner.outstanding(node) == 1
        raise OSError("connection refused")
    assert inner.outstanding(node) == 0
    assert oe.is_ejected(node)
    assert oe.statistics().failures == inner.statistics().failures == 1


def test_filter_without_picking() -> None:
    """filter() returns the instances not ejected, for callers that pick themselves."""
    clock = FakeClock()
    oe = OutlierEjection(settings=OutlierSettings(consecutive_failures=1), clock=clock)
    instances = nodes(3)
    assert oe.filter(instances) is instances
    oe.observe(instances[1], 0.01, ok=False)
    assert [n.id for n in oe.filter(instances)] == ["n0", "n2"]
    assert "OutlierEjection(ejected=1" in repr(oe) and "RoundRobin" in repr(oe)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"consecutive_failures": 0}, "consecutive_failures and failure_rate"),
        ({"failure_rate": 1.5}, "failure_rate"),
        ({"window_s": 0.0}, "window_s"),
        ({"base_ejection_s": 60.0, "max_ejection_s": 30.0}, "max_ejection_s"),
        ({"max_ejection_percent": 0.0}, "max_ejection_percent"),
        ({"minimum_requests": 0}, "minimum_requests"),
    ],
)
def test_outlier_settings_validate(kwargs: dict[str, float], field: str) -> None:
    """Bad settings raise ValidationError naming the field and the fix."""
    with pytest.raises(ValidationError, match=field):
        OutlierSettings(**kwargs)  # type: ignore[arg-type]
