"""Zone preference with fallback."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from keel.balance import LeastOutstanding, RoundRobin, ZonePreference, ZoneSettings
from keel.errors import NoInstanceError, ValidationError
from tests.balance._helpers import nodes


def test_prefers_local_zone() -> None:
    """With enough local instances, every pick stays in the local zone."""
    local, remote = nodes(3, zone="eu-1", prefix="l"), nodes(3, zone="eu-2", prefix="r")
    zp = ZonePreference(RoundRobin(rng=random.Random(0)), "eu-1")
    counts = Counter(zp.pick(local + remote).id for _ in range(300))
    assert counts == {"l0": 100, "l1": 100, "l2": 100}
    assert zp.statistics().local_picks == 300


def test_falls_back_when_local_zone_empty() -> None:
    """Without a local instance, picks spread over every zone."""
    remote = nodes(2, zone="eu-2", prefix="r") + nodes(2, zone="eu-3", prefix="s")
    zp = ZonePreference(RoundRobin(), "eu-1")
    assert len({zp.pick(remote).id for _ in range(8)}) == 4
    assert zp.statistics().fallback_picks == 8


def test_falls_back_when_local_zone_too_small() -> None:
    """A zone holding 1 of 10 instances is not given all local traffic (min_share 0.2)."""
    instances = nodes(1, zone="eu-1", prefix="l") + nodes(9, zone="eu-2", prefix="r")
    zp = ZonePreference(RoundRobin(), "eu-1", ZoneSettings(min_share=0.2))
    assert len({zp.pick(instances).id for _ in range(10)}) == 10
    zp2 = ZonePreference(RoundRobin(), "eu-1", ZoneSettings(min_instances=2))
    assert zp2.candidates(instances) is instances


def test_follows_the_list_as_it_changes() -> None:
    """When the local instances go away and come back, picks follow."""
    local, remote = nodes(2, zone="a", prefix="l"), nodes(2, zone="b", prefix="r")
    zp = ZonePreference(LeastOutstanding(rng=random.Random(1)), "a")
    assert zp.pick(local + remote).zone == "a"
    assert zp.pick(remote).zone == "b"
    assert zp.pick(local + remote).zone == "a"


def test_no_zone_means_no_preference_and_empty_raises() -> None:
    """An empty local zone name disables the preference; an empty list raises."""
    zp = ZonePreference(RoundRobin(), "")
    instances = nodes(2, zone="a")
    assert zp.candidates(instances) is instances
    with pytest.raises(NoInstanceError):
        zp.pick([])


def test_feedback_reaches_inner_balancer() -> None:
    """track() and observe() on the wrapper reach the inner balancer."""
    inner = LeastOutstanding()
    zp = ZonePreference(inner, "a")
    node = nodes(1, zone="a")[0]
    with zp.track(node):
        assert inner.outstanding(node) == 1
    zp.observe(node, 0.01, ok=False)
    assert inner.statistics().failures == 1
    assert "ZonePreference(zone='a'" in repr(zp) and "LeastOutstanding" in repr(zp)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [({"min_instances": 0}, "min_instances"), ({"min_share": 1.5}, "min_share")],
)
def test_zone_settings_validate(kwargs: dict[str, float], field: str) -> None:
    """Bad settings raise ValidationError naming the field."""
    with pytest.raises(ValidationError, match=field):
        ZoneSettings(**kwargs)  # type: ignore[arg-type]
